// Predicted against measured, for `cpsim validate`: per scenario the step time, per op kind the sum
// of op durations, per op the duration; relative errors and their median and p95 by level and kind.
// Measured results are `cpsim run --json` files (ops[] with per-op medians of the same plan).
#pragma once

#include "cpsim/model/json_reader.hpp"
#include "cpsim/model/schedule.hpp"
#include "cpsim/model/timeline.hpp"

#include <string>
#include <vector>

namespace cpsim::calib {

struct ValidationRow {
  std::string scenario;
  std::string level; // step, kind, op
  std::string item;  // "step", an op kind ("attention fwd", "p2p", "all_to_all", ...), or the op label
  int rank = -1;     // op level only
  int op = -1;
  double predicted_s = 0;
  double measured_s = 0;
  double rel_err = 0; // (predicted - measured) / measured
};

struct ErrorSummary {
  std::string level;
  std::string item; // "step", or an op kind
  int n = 0;
  double median_abs = 0;
  double p95_abs = 0;
  double max_abs = 0;
};

struct ValidationReport {
  std::vector<ValidationRow> rows;
  std::vector<std::string> notes; // out-of-range notes of the predictions, prefixed with the scenario
};

/** The kind an op is reported under: "attention fwd|bwd", "merge fwd|bwd", "p2p", or the collective's name. */
std::string op_kind_name(const Op& op);

/**
 * Adds one scenario: its step, one row per op kind (sums over all ranks' ops) and one per op.
 * UserError when the measured file does not belong to this plan (op count or labels differ) or
 * holds a non-positive time.
 */
void add_scenario(ValidationReport& rep, const std::string& scenario, const Schedule& s, const SimResult& predicted,
                  const Json& measured, const std::string& measured_path);

/** Step errors over all scenarios, then per op kind (op level), sorted by kind. */
std::vector<ErrorSummary> summarize(const ValidationReport& rep);

std::string validation_table(const ValidationReport& rep);
std::string validation_csv(const ValidationReport& rep);
Json validation_json(const ValidationReport& rep);

} // namespace cpsim::calib
