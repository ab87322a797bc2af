// CUPTI activity tracing of every kernel a rank runs (name, stream, start, end, grid, block), the
// PASTA-style per-kernel invocation counts, with CONCURRENT_KERNEL so kernels are not serialised.
#pragma once

#include "cpsim/model/json_reader.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace cpsim::backend {

struct KernelRecord {
  std::string name;
  uint32_t stream = 0;
  uint64_t start_ns = 0;
  uint64_t end_ns = 0;
  int grid[3] = {0, 0, 0};
  int block[3] = {0, 0, 0};
};

class KernelProfiler {
public:
  void start();
  /** Flushes CUPTI and returns the kernels recorded since start(). */
  std::vector<KernelRecord> stop();
  /** CUPTI's clock (the kernel records' timebase), to cut one repetition out of a longer recording. */
  static uint64_t now_ns();
};

/** Kernel rows for the trace (times relative to the earliest kernel, shifted by offset_s) and per-name counts. */
Json kernel_records_json(const std::vector<KernelRecord>& k, double offset_s);
Json kernel_summary_json(const std::vector<KernelRecord>& k, int reps);

} // namespace cpsim::backend
