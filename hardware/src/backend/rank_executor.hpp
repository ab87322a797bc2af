// Replays one rank's exec plan on its GPU: a CUDA stream per IR stream, a CUDA event per slot
// boundary (cross-stream dependencies wait on them, and they time every op), the wire plan's postings
// through the transport (NCCL, or the one-GPU loopback) for send/recv slots and collectives, the
// attention adapter for compute.
#pragma once

#include "compute_ops.hpp"
#include "transport.hpp"

#include "cpsim/hardware/backend/exec_plan.hpp"
#include "cpsim/hardware/backend/run_options.hpp"
#include "cpsim/model/scenario.hpp"

#include <cuda_runtime.h>

#include <array>
#include <map>
#include <atomic>
#include <string>
#include <vector>

namespace cpsim::backend {

struct OpTime {
  int op = 0;
  double start_s = 0;
  double end_s = 0;
};

class RankExecutor {
public:
  RankExecutor(const Schedule& s, const Scenario& sc, const ExecPlan& plan, const WirePlan& wire, int rank,
               Transport& transport, const RunOptions& opt);
  ~RankExecutor();
  RankExecutor(const RankExecutor&) = delete;
  RankExecutor& operator=(const RankExecutor&) = delete;

  /** Allocates arena + staging and hands them to the transport; throws GpuError naming the sizes when they do not fit. */
  void allocate();
  /** Deterministic inputs (q, k, v, dO) by global position. */
  void fill_inputs();
  /** Uploads every attention op's kernel plan (may synchronise): call before the first repetition. */
  void prepare();
  /** One repetition; waits for it under the watchdog. `inject` arms the failure injection. Op times include
   *  the host's posting latency: NCCL's non-blocking posting took ~150 us per op on 2 H100s (2026-11-27), and a
   *  device-side gate that held the streams until everything was posted stalled that posting (ncclGroupEnd
   *  stayed in progress until the 60 s timeout), so it was removed. */
  std::vector<OpTime> run_once(bool inject);

  /** For the rank's watchdog thread: whether a repetition is under way, when it last progressed, and where. */
  bool busy() const { return busy_.load(); }
  /** The failure injection this rank was started with (--inject), parsed once. */
  const Injection& injection() const { return inj_; }
  int64_t last_progress_ns() const { return progress_ns_.load(); }
  std::string where() const;

  void* ptr(int buffer) const;
  int64_t allocated_bytes() const { return allocated_bytes_; }
  const RankExecPlan& plan() const { return rp_; }
  cudaStream_t stream(int i) const { return streams_[size_t(i)]; }

private:
  void issue_slot(size_t i, bool inject);
  void issue_p2p(const Slot& sl, cudaStream_t st);
  /** Messages with regions (message_regions.cpp): where a send's or receive's bytes are, and their packing. */
  void* message_ptr(const Op& op) const;
  void pack_messages(const Slot& sl, cudaStream_t st);
  void unpack_messages(const Slot& sl, cudaStream_t st);
  void issue_collective(const Op& op, cudaStream_t st);
  /** Zeroes the buffers the exec plan lists for `op` (accumulators and dK/dV before their first writer). */
  void zero_before(const Op& op, cudaStream_t st);
  void issue_attention(const Op& op, cudaStream_t st);
  AttnCall attention_call(const Op& op, const AttnLaunch& l, cudaStream_t st) const;
  /** Compute ops (sparse_ops.cpp): PIT's gather and scatter, DSV's predictor, block copies. */
  void prepare_compute();
  void issue_compute(const Op& op, cudaStream_t st);
  template <class T> T* upload(const std::vector<T>& v);
  void issue_merge(const Op& op, cudaStream_t st);
  void issue_forward_merge(const Op& op, const ForwardMerge& m, cudaStream_t st); // merge_ops.cpp
  void wait_done();

  const Schedule& s_;
  const Scenario& sc_;
  const ExecPlan& plan_;
  const RankExecPlan& rp_;
  const RankWire& wire_;
  int rank_;
  Transport& transport_;
  const RunOptions& opt_;
  MaskGeometry mask_;
  Injection inj_;
  std::vector<cudaStream_t> streams_;
  std::vector<cudaEvent_t> start_, end_;
  cudaEvent_t t0_ = nullptr;
  char* arena_ = nullptr;
  int64_t allocated_bytes_ = 0;
  std::atomic<bool> busy_{false};
  std::atomic<int64_t> progress_ns_{0};
  std::atomic<int> slot_{-1};
  std::atomic<bool> waiting_{false};
  void touch(int slot, bool waiting);
  std::vector<void*> tables_; // device copies of static gather/scatter/predictor tables, freed with the executor
  struct GatherTables {
    uint8_t* flags = nullptr;
    int64_t *flag_off = nullptr, *first_cand = nullptr, *entry_off = nullptr;
    int32_t *n_cand = nullptr, *entry_head = nullptr;
    int64_t *entry_src_row0 = nullptr, *entry_dst_row = nullptr, *entry_lo = nullptr, *entry_hi = nullptr;
    int64_t items = 0;
  };
  struct UnitTables { // PIT's scatter (byte offsets) and scatter-merge (element offsets, packed rows)
    int64_t *unit_dst = nullptr, *unit_lse = nullptr, *copy_begin = nullptr, *copy_src = nullptr;
    int64_t units = 0, unit_elems = 0;
    int unit_heads = 0;
  };
  struct PredictorTables {
    void *w_q = nullptr, *w_k = nullptr;
    int64_t *block_seq = nullptr, *block_head = nullptr, *block_proxy = nullptr;
    int64_t *seq_q_row = nullptr, *seq_queries = nullptr, *seq_first_proxy = nullptr, *seq_k_row = nullptr,
            *seq_keys = nullptr, *keep = nullptr, *index_offset = nullptr;
    int32_t *kv_pos = nullptr, *counts = nullptr, *requests = nullptr;
    int64_t blocks = 0;
  };
  std::map<int, PredictorTables> predictor_tables_;
  std::map<int, GatherTables> gather_tables_;
  std::map<int, UnitTables> scatter_tables_; // SCATTER ops and PACKED forward merges
};

} // namespace cpsim::backend
