// The zhuzilin ring program (schedules.md 3.2-3.4) over any ring of ranks, so that stripe, USP and
// other hybrids share one faithful copy: the ring may be a subgroup of the world (USP's strided
// ring groups), compute a head range, and start after earlier ops (an all-to-all). Over the whole
// world with heads [0, H) it is the ring, zigzag and stripe generators (generate_world_ring).
#pragma once

#include "cpsim/model/schedule_builder.hpp"

#include <string>
#include <vector>

namespace cpsim::ring {

using Layout = std::vector<std::vector<TokenSlice>>; // [ring position] -> token set it holds

/** Contiguous (ring), zigzag and stripe token sets of `n` ring positions over every sequence. */
Layout contiguous_layout(const Workload& w, int n);
Layout zigzag_layout(const Workload& w, int n);
Layout stripe_layout(const Workload& w, int n);

/** UserError unless the mask is causal, the only one the stripe kernels express (stripe.cpp). */
void require_stripe_mask(const Scenario& sc, const std::string& who);

int64_t tokens_of(const std::vector<TokenSlice>& s);
/** Every (query slice x key slice) rectangle of the same sequence. */
std::vector<AttnSegment> pieces(const std::vector<TokenSlice>& q, const std::vector<TokenSlice>& k);
Buffer make_buffer(std::string name, std::string tensor, int64_t bytes, int h0, int h1, std::vector<TokenSlice> toks,
                   int alloc = -1, int free = -1);

struct RingSpec {
  std::vector<int> members; // world ranks in ring order; position p sends to p+1
  Layout layout;            // per position, the tokens whose Q and KV it holds
  int head_begin = 0, head_end = 0;       // query heads the ring computes
  int kv_head_begin = 0, kv_head_end = 0; // KV heads it moves (after any replication)
  std::string q = "q", kv = "kv", o = "o", lse = "lse", dout = "do", dq = "dq"; // resident buffers
  std::string prefix;       // prepended to the names of per-step buffers
  int compute = 0, comm_kv = 1, comm_dkv = -1;
  std::vector<int> start_deps; // ops the first transfer and attention of the pass wait for

  int size() const { return static_cast<int>(members.size()); }
  int heads() const { return head_end - head_begin; }
  int kv_heads() const { return kv_head_end - kv_head_begin; }
};

/** Bytes of one position's resident tensors: Q (= O), KV, LSE (fp32), for the ring's heads. */
struct RingSizes {
  int64_t tokens, B_Q, B_KV, B_LSE;
};
RingSizes ring_sizes(const Workload& w, const RingSpec& spec, int pos);

/** Declares the resident q, kv, o, lse (and do for fwd_bwd) buffers of the position's rank. */
void add_resident_buffers(ScheduleBuilder& b, const RingSpec& spec, int pos);

/** Forward of position `pos`; returns the id of its last compute op (-1 if none). */
int emit_forward(ScheduleBuilder& b, const RingSpec& spec, int pos);

struct BackwardResult {
  int last_compute = -1;
  std::string dkv;    // buffer that holds the finished dKV of the rank's own block (fp32)
  int dkv_ready = -1; // op after which it is complete (the last dKV receive)
};
/** Backward of position `pos`: KV ring again, fp32 dKV ring with W sends, local dQ in `dq_acc`. */
BackwardResult emit_backward(ScheduleBuilder& b, const RingSpec& spec, int pos, int last_fwd);

/** The ring over the whole world with every head (ring, zigzag, stripe): only `layout` differs. */
Schedule generate_world_ring(const Scenario& sc, const MaskGeometry& mask, const std::string& scheme, Layout layout);

} // namespace cpsim::ring
