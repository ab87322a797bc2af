// Internal to the CPU emulator of exec plans (plan_emulator.hpp): the fp64 reference and the emulator's state, shared
// by its driver and communication (plan_emulator.cpp), its compute ops (plan_emulator_ops.cpp) and the reference
// (plan_emulator_reference.cpp).
#pragma once

#include "plan_emulator.hpp"

#include "cpsim/model/mask_geometry.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace cpsim::backend::emulator {

constexpr double kNegInf = -INFINITY;

inline double logaddexp(double a, double b) {
  if (a == kNegInf)
    return b;
  if (b == kNegInf)
    return a;
  const double m = std::max(a, b);
  return m + std::log(std::exp(a - m) + std::exp(b - m));
}

/** Attention over the whole workload in fp64: O, LSE per (sequence, position, head); gradients when asked. */
struct Reference {
  int heads = 0, kv_heads = 0, dim = 0;
  std::vector<int64_t> seq_row;
  std::vector<double> o, lse, dq, dk, dv; // [row][head][dim], lse [row][head]
  double& at(std::vector<double>& t, int seq, int64_t pos, int head, int nh, int64_t e, int64_t w) {
    return t[size_t(((seq_row[size_t(seq)] + pos) * nh + head) * w + e)];
  }
};

/** The reference for `sc` (gradients when `backward`); inputs nonzero in the first `dims` elements of each head. */
Reference reference(const Scenario& sc, bool backward, int dims);

/** A message in flight: elements by byte offset / 2 (a message may hold bf16 and fp32 regions). */
using Message = std::vector<double>;

class Emulator {
public:
  Emulator(const Schedule& s, const Scenario& sc, const ExecPlan& plan, const EmulationOptions& opt)
      : s_(s), sc_(sc), w_(sc.workload), plan_(plan), opt_(opt), mask_(sc.workload) {
    for (const RankExecPlan& rp : plan.ranks) {
      std::vector<std::vector<double>> bufs;
      for (const BufferPlacement& b : rp.buffers)
        bufs.emplace_back(size_t(b.bytes / b.elem_bytes), 0.0);
      mem_.push_back(std::move(bufs));
    }
  }

  void run();
  std::vector<EmulatedResult> compare(const Reference& r) const;

private:
  double& el(int rank, int b, int64_t byte) { return mem_[size_t(rank)][size_t(b)][size_t(byte / elem(rank, b))]; }
  int elem(int rank, int b) const { return plan_.ranks[size_t(rank)].buffers[size_t(b)].elem_bytes; }
  const BufferPlacement& buf(int rank, int b) const { return plan_.ranks[size_t(rank)].buffers[size_t(b)]; }
  const Op& op(int rank, int id) const { return s_.ranks[size_t(rank)].ops[size_t(id)]; }

  void fill_inputs(int rank);
  void zero_before(int rank, const Op& o);
  void attention(int rank, const Op& o);
  void merge(int rank, const Op& o);
  void forward_merge(int rank, const Op& o, const ForwardMerge& m);
  void compute(int rank, const Op& o);
  void collective(const std::vector<std::pair<int, int>>& members); // (rank, op id)
  Message pack(int rank, const Op& o);
  void unpack(int rank, const Op& o, const Message& msg);

  const Schedule& s_;
  const Scenario& sc_;
  const Workload& w_;
  const ExecPlan& plan_;
  EmulationOptions opt_;
  MaskGeometry mask_;
  std::vector<std::vector<std::vector<double>>> mem_; // [rank][buffer][element]
};

} // namespace cpsim::backend::emulator
