// CUPTI activity buffers: CUPTI asks for buffers and hands them back full; records are parsed there.
#include "kernel_profiler.hpp"

#include "gpu_check.hpp"

#include <cupti.h>

#include <algorithm>
#include <cstdlib>
#include <cxxabi.h>
#include <map>
#include <mutex>

namespace cpsim::backend {

namespace {
std::mutex g_mu;
std::vector<KernelRecord> g_records;
constexpr size_t kBufferBytes = 8 << 20;

#define BK_CUPTI_CHECK(call)                                                                                 \
  do {                                                                                                       \
    CUptiResult r_ = (call);                                                                                 \
    if (r_ != CUPTI_SUCCESS) {                                                                               \
      const char* m_ = nullptr;                                                                              \
      cuptiGetResultString(r_, &m_);                                                                         \
      ::cpsim::backend::gpu_fail("CUPTI", #call, m_ ? m_ : "?", __FILE__, __LINE__);                         \
    }                                                                                                        \
  } while (0)

void CUPTIAPI buffer_requested(uint8_t** buf, size_t* size, size_t* max_records) {
  *buf = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buf, size_t, size_t valid) {
  CUpti_Activity* rec = nullptr;
  std::vector<KernelRecord> got;
  while (cuptiActivityGetNextRecord(buf, valid, &rec) == CUPTI_SUCCESS) {
    if (rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && rec->kind != CUPTI_ACTIVITY_KIND_KERNEL)
      continue;
    auto* k = reinterpret_cast<CUpti_ActivityKernel10*>(rec);
    KernelRecord r;
    int status = 0;
    char* dm = abi::__cxa_demangle(k->name, nullptr, nullptr, &status);
    r.name = dm && status == 0 ? dm : (k->name ? k->name : "?");
    std::free(dm);
    r.stream = k->streamId;
    r.start_ns = k->start;
    r.end_ns = k->end;
    r.grid[0] = k->gridX, r.grid[1] = k->gridY, r.grid[2] = k->gridZ;
    r.block[0] = k->blockX, r.block[1] = k->blockY, r.block[2] = k->blockZ;
    got.push_back(std::move(r));
  }
  std::free(buf);
  std::lock_guard<std::mutex> lk(g_mu);
  g_records.insert(g_records.end(), got.begin(), got.end());
}
} // namespace

void KernelProfiler::start() {
  static bool registered = false;
  if (!registered) {
    BK_CUPTI_CHECK(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed));
    registered = true;
  }
  {
    std::lock_guard<std::mutex> lk(g_mu);
    g_records.clear();
  }
  BK_CUPTI_CHECK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
}

std::vector<KernelRecord> KernelProfiler::stop() {
  BK_CUDA_CHECK(cudaDeviceSynchronize());
  BK_CUPTI_CHECK(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED));
  BK_CUPTI_CHECK(cuptiActivityDisable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
  std::lock_guard<std::mutex> lk(g_mu);
  std::vector<KernelRecord> out;
  out.swap(g_records);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.start_ns < b.start_ns; });
  return out;
}

uint64_t KernelProfiler::now_ns() {
  uint64_t t = 0;
  BK_CUPTI_CHECK(cuptiGetTimestamp(&t));
  return t;
}

Json kernel_records_json(const std::vector<KernelRecord>& ks, double offset_s) {
  Json out = Json::array();
  if (ks.empty())
    return out;
  const uint64_t t0 = ks.front().start_ns;
  for (const auto& k : ks)
    out.push_back({{"name", k.name},
                   {"stream", k.stream},
                   {"start_s", offset_s + double(k.start_ns - t0) * 1e-9},
                   {"end_s", offset_s + double(k.end_ns - t0) * 1e-9},
                   {"grid", {k.grid[0], k.grid[1], k.grid[2]}},
                   {"block", {k.block[0], k.block[1], k.block[2]}}});
  return out;
}

Json kernel_summary_json(const std::vector<KernelRecord>& ks, int reps) {
  std::map<std::string, std::pair<int64_t, double>> by_name;
  for (const auto& k : ks) {
    auto& e = by_name[k.name];
    e.first++;
    e.second += double(k.end_ns - k.start_ns) * 1e-9;
  }
  Json out = Json::array();
  for (const auto& [name, e] : by_name)
    out.push_back({{"name", name}, {"invocations", e.first}, {"invocations_per_step", double(e.first) / std::max(1, reps)},
                   {"total_s", e.second}});
  return out;
}

} // namespace cpsim::backend
