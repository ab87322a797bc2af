// Sequence-length generators shaped like the datasets DCP evaluates on (schedules.md 5.7), so that a
// scenario can ask for "a LongAlign-like batch of N tokens" instead of listing lengths:
//   "seq_lens": {"distribution": "longalign", "total_tokens": 131072, "seed": 1}
// The shapes and their sources are documented in docs/scenario.md.
#pragma once

#include "cpsim/model/json_reader.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace cpsim {

struct SeqLenDistribution {
  std::string name;
  double median_tokens = 0; // of the log-normal body
  double sigma = 0;         // log-space standard deviation
  int64_t min_tokens = 0;   // lengths are clamped to [min, max] before scaling
  int64_t max_tokens = 0;
};

/** The built-in shapes: longalign, longdatacollections. */
const std::vector<SeqLenDistribution>& seq_len_distributions();

/**
 * Lengths drawn (deterministically from `seed`) until they sum to exactly `total_tokens`, the last
 * one cut to the remainder; each draw is scaled by `scale` (DCP's mean factors 0.5..4) and capped at
 * `max_len` (DCP drops sequences above 131072). UserError names the key on a bad value.
 */
std::vector<int64_t> generate_seq_lens(const Json& spec, const std::string& path);

} // namespace cpsim
