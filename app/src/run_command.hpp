// `cpsim run`: execute a scenario's or plan's schedule on real GPUs (hardware/ backend). Kept apart
// from the other subcommands so builds without CUDA compile it too and refuse clearly (exit 2).
#pragma once

#include "cpsim/hardware/backend/run_options.hpp"

#include <CLI/CLI.hpp>

namespace cpsim {

CLI::App* add_run_command(CLI::App& app, backend::RunOptions& o);
int cmd_run(const backend::RunOptions& o);

} // namespace cpsim
