// A scenario with its token counts divided by a factor: the same schedule structure (ranks, heads, masks, options)
// over shorter sequences, for what needs every cell of the workload (the CPU emulator's fp64 reference) on a
// workload planned at full length. Works on the scenario's JSON, so every key keeps its meaning and checks.
#pragma once

#include "cpsim/model/json_reader.hpp"

#include <cstdint>

namespace cpsim {

/**
 * Divides by `factor`: every sequence length (each must divide; a length distribution's total_tokens, scale and
 * max_len instead), the mask's token spans (window, sink, causal_blockwise block; rounded down, at least 1) and DCP's
 * block (`parallel.block`). Layout blocks and PIT/DSV granularities stay. UserError for a factor below 1, a length it
 * does not divide, or a layout file (which fixes the sequence lengths).
 */
Json shrink_scenario_json(const Json& scenario, int64_t factor);

} // namespace cpsim
