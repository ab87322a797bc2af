// `cpsim emulate`: run a scenario's or plan's exec plan on the CPU in fp64 (hardware/src/backend/plan_emulator.hpp)
// and compare every rank's results with attention: the data movement and arithmetic of a plan checked without GPUs.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

namespace cpsim {

struct EmulateOptions {
  std::string input;
  std::string json_out;
  int value_dims = 8;
  int64_t shrink = 1;     // sequence lengths (and token spans) divided by this (a scenario, not a plan)
  double max_cells = 2e9; // visible (query, key, head) cells the fp64 reference may take
  bool quiet = false;
};

CLI::App* add_emulate_command(CLI::App& app, EmulateOptions& o);
/** 0: every result matches; 1: some result differs (the table says where); 2: a user error. */
int cmd_emulate(const EmulateOptions& o);

} // namespace cpsim
