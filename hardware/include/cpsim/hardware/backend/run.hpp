// Entry point of `cpsim run` into the GPU backend (only in builds with CUDA).
#pragma once

#include "cpsim/hardware/backend/run_options.hpp"
#include "cpsim/model/scenario.hpp"

#include <string>
#include <vector>

namespace cpsim::backend {

/**
 * Without --rank (and outside mpirun): starts one process per rank with `self_argv` plus the rank
 * arguments, watches them, aggregates their reports and writes the outputs. With --rank or under
 * mpirun: runs that one rank (rank 0 of an mpirun run also aggregates). Returns the exit code.
 */
int run_backend(const Schedule& s, const Scenario& sc, const RunOptions& o, const std::vector<std::string>& self_argv);

} // namespace cpsim::backend
