// What an execution of a schedule produced, whoever executed it (analytic engine, discrete-event
// engine, real GPUs): one record per op with start and end, and the per-rank figures derived from
// them. Keeping this in one place makes predicted and measured results comparable field by field.
#pragma once

#include "cpsim/model/json_reader.hpp"
#include "cpsim/model/schedule.hpp"
#include "cpsim/model/workload.hpp"

#include <string>
#include <vector>

namespace cpsim {

struct OpRecord {
  int rank = 0;
  int op = 0;
  double start_s = 0;
  double end_s = 0;
};

struct RankStats {
  int rank = 0;
  double compute_s = 0;      // time some compute stream is busy (union)
  double comm_s = 0;         // time some communication is in flight (union)
  double exposed_comm_s = 0; // communication with no compute running beside it
  double idle_s = 0;         // neither compute nor communication, until the step ends
  double finish_s = 0;
  int64_t peak_memory_bytes = 0;
  double flops = 0;
  int64_t bytes_sent = 0;
};

struct SimResult {
  std::string engine;
  double step_time_s = 0;
  double flops = 0;
  int64_t bytes_sent = 0;
  std::vector<RankStats> ranks;
  std::vector<OpRecord> records;
};

/** Fills ranks, totals and step time from `records` (one per op of the schedule). */
SimResult summarize(const Schedule& s, const Workload& w, std::vector<OpRecord> records, std::string engine);

/** The documented result JSON (step_time_s, ranks[...], flops, bytes_sent, ...). */
Json result_to_json(const SimResult& r, const Schedule& s);
/** Chrome trace (Perfetto): one process per rank, one thread per stream. */
Json chrome_trace(const SimResult& r, const Schedule& s);
/** Human-readable table of the step and every rank. */
std::string result_table(const SimResult& r);

/** Bytes a rank sends for one op (0 for compute ops and receives). */
int64_t op_bytes_sent(const Op& op);

} // namespace cpsim
