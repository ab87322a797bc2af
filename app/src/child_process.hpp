// Running another program (this cpsim's `run`, the plotting script) with its output in a log file:
// calibrate and validate drive the GPU backend through the same command users run, so calibration
// adds no GPU code and every measurement is reproducible by hand from the files left behind.
#pragma once

#include <string>
#include <vector>

namespace cpsim {

/** Runs argv (argv[0] a path) with stdout and stderr appended to log_path; returns its exit code, or 128 + signal. */
int run_child(const std::vector<std::string>& argv, const std::string& log_path);

/** This executable's path (to start `cpsim run` children). */
std::string self_exe();

/** "2026-11-24T101500Z": a UTC stamp for result folder names; "2026-11-24 10:15:00 UTC" for records. */
std::string utc_stamp();
std::string utc_date_time();

} // namespace cpsim
