// Turns the reports of the rank processes into one measured result in the `simulate` format
// (summarize + result_to_json, field for field) plus what only a real run has: every repetition's
// step time, per-op medians, achieved NCCL bandwidth, kernel records, memory and check outcomes.
#pragma once

#include "cpsim/model/json_reader.hpp"
#include "cpsim/model/timeline.hpp"

#include <string>
#include <vector>

namespace cpsim::backend {

struct Measured {
  SimResult median;                 // the repetition with the median step time
  std::vector<double> step_times_s; // every timed repetition
  std::vector<double> profiled_step_times_s;
  Json json;  // the full result document
  Json trace; // Chrome trace of the median repetition, with CUPTI kernel rows
  bool check_ok = true;
};

/** `reports[r]` is rank r's report (see docs/backend.md for its keys). */
Measured aggregate(const Schedule& s, const Workload& w, const std::vector<Json>& reports);

/** The --check outcomes (the result's "check" array) as a table: a line per rank and tensor. */
std::string check_table(const Json& checks);

/** Median of a non-empty list (lower median for even sizes, so it is one measured value). */
double median_of(std::vector<double> v);

} // namespace cpsim::backend
