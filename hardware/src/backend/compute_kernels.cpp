// Adapter from AttnCall to cpsim_kernels: the op's rectangles and the workload mask become a kernel
// plan (built once per op and kept on the device for the whole run), the buffers become
// HeadTensors. Without cpsim_kernels in the build, attention ops stop the run with a clear message.
#include "compute_ops.hpp"

#include "gpu_check.hpp"

#ifdef CPSIM_HAVE_KERNELS
#include "kernel_plans.hpp"

#include "cpsim/kernels/attention.hpp"
#include "cpsim/kernels/merge_gather.hpp"

#include <algorithm>
#include <map>
#include <mutex>
#endif

namespace cpsim::backend {

#ifndef CPSIM_HAVE_KERNELS

bool attention_kernels_available() { return false; }

void prepare_attention(const AttnCall&) {}

void attention_forward(const AttnCall&) {
  throw GpuError("this build has no attention kernels (cpsim_kernels): run with --comm-only, or rebuild with CUDA");
}

void attention_backward(const AttnCall&) {
  throw GpuError("this build has no attention kernels (cpsim_kernels): run with --comm-only, or rebuild with CUDA");
}

void merge_partials(const MergeCall&) {
  throw GpuError("this build has no merge kernels (cpsim_kernels): run with --comm-only, or rebuild with CUDA");
}

#else

namespace {

namespace kn = cpsim::kernels;

/**
 * One device plan per launch (keyed by its segment list, which lives as long as the run): the kernels' own
 * planner for head-uniform masks, one list slot per head for per-head layouts, packed tiles for PIT.
 */
const kn::DevicePlan& plan_for(const AttnCall& c) {
  static std::mutex mu;
  static std::map<const void*, kn::DevicePlan> plans;
  std::lock_guard<std::mutex> lock(mu);
  auto it = plans.find(c.segments);
  if (it != plans.end())
    return it->second;
  if (c.gather) {
    const PlannedKernel k = gathered_plan(*c.gather, c.slot, *c.mask, c.head_begin);
    return plans.emplace(c.segments, kn::DevicePlan(k.plan, k.mask, c.stream)).first->second;
  }
  if (c.mask->per_head()) {
    const PlannedKernel k = per_head_plan(*c.segments, *c.mask, c.head_begin, c.head_end);
    return plans.emplace(c.segments, kn::DevicePlan(k.plan, k.mask, c.stream)).first->second;
  }
  std::vector<kn::PlanSegment> segs;
  int n_seqs = 0;
  for (const SegmentRows& s : *c.segments) {
    segs.push_back({s.seq, s.q_row, s.q.begin, s.q.stride, s.q.size(), s.k_row, s.k.begin, s.k.stride, s.k.size()});
    n_seqs = std::max(n_seqs, s.seq + 1);
  }
  const kn::MaskDesc m = kernel_mask(*c.mask, n_seqs);
  return plans.emplace(c.segments, kn::DevicePlan(kn::plan_segments(segs, m), m, c.stream)).first->second;
}

kn::HeadTensor tensor(const HeadBlock& b, int width) {
  return {const_cast<void*>(b.ptr), int64_t(b.heads) * width, b.head_begin, b.elem_bytes == 4 ? kn::DType::FP32 : kn::DType::BF16};
}

kn::AttnArgs args(const AttnCall& c) {
  kn::AttnArgs a;
  a.head_dim = c.head_dim;
  a.head_begin = c.head_begin;
  a.head_end = c.head_end;
  a.heads_per_kv = c.heads_total / c.kv_heads_total;
  a.dtype = kn::DType::BF16;
  a.stream = c.stream;
  a.q = tensor(c.q, c.head_dim);
  a.k = tensor(c.k, c.head_dim);
  a.v = tensor(c.v, c.head_dim);
  return a;
}

template <class F> void translate(F&& f) {
  try {
    f();
  } catch (const kn::KernelError& e) {
    throw GpuError(e.what());
  }
}

} // namespace

bool attention_kernels_available() { return true; }

void prepare_attention(const AttnCall& c) {
  translate([&] { plan_for(c); });
}

void attention_forward(const AttnCall& c) {
  translate([&] {
    kn::AttnArgs a = args(c);
    a.o = tensor(c.o, c.head_dim);
    a.lse = tensor(c.lse, 1);
    const kn::DevicePlan& p = plan_for(c);
    kn::attention_forward(a, p, kn::fast_path_supported(a) ? kn::Impl::FAST : kn::Impl::REFERENCE);
  });
}

void merge_partials(const MergeCall& c) {
  translate([&] {
    constexpr size_t kMax = 16; // merge_lse's inputs per launch
    size_t done = 0;
    while (done < c.o_in.size()) {
      kn::MergeArgs a;
      a.rows = int(c.rows);
      a.head_begin = c.head_begin;
      a.head_end = c.head_end;
      a.head_dim = c.head_dim;
      a.stream = c.stream;
      if (done > 0) { // chained: what is merged so far is the first input
        a.o_in.push_back(tensor(c.o_out, c.head_dim));
        a.lse_in.push_back(tensor(c.lse_out, 1));
      }
      while (done < c.o_in.size() && a.o_in.size() < kMax) {
        a.o_in.push_back(tensor(c.o_in[done], c.head_dim));
        a.lse_in.push_back(tensor(c.lse_in[done], 1));
        ++done;
      }
      a.o_out = tensor(c.o_out, c.head_dim);
      a.lse_out = tensor(c.lse_out, 1);
      kn::merge_lse(a);
    }
  });
}

void attention_backward(const AttnCall& c) {
  translate([&] {
    kn::AttnArgs a = args(c);
    a.out = tensor(c.out, c.head_dim);
    a.lse_in = tensor(c.lse_in, 1);
    a.dout = tensor(c.dout, c.head_dim);
    a.dq = tensor(c.dq, c.head_dim);
    a.dq_accumulate = c.dq_accumulate;
    a.dk = tensor(c.dk, c.head_dim);
    a.dv = tensor(c.dv, c.head_dim);
    kn::attention_backward(a, plan_for(c), kn::fast_path_supported(a) ? kn::Impl::FAST : kn::Impl::REFERENCE);
  });
}

#endif

} // namespace cpsim::backend
