// Which buffer bytes each tensor of an attention launch reads or writes: the q, k, v inputs, the forward's O and LSE,
// the backward's inputs and gradients, as offsets into the rank's buffers. A pure function of the exec plan, shared
// by the GPU executor (which adds its arena's address) and the CPU emulator of plans (plan_emulator.hpp).
#pragma once

#include "cpsim/hardware/backend/exec_plan.hpp"

namespace cpsim::backend {

/** Element (row, global head h, e) of a launch tensor lies at byte offset_bytes + ((row * heads + h - head_begin) *
 *  head_elems + e) * elem_bytes of `buffer`, head_elems being head_dim (1 for an LSE). */
struct TensorRef {
  int buffer = -1; // none
  int64_t offset_bytes = 0;
  int head_begin = 0; // global head at the offset
  int heads = 0;      // heads per row: the row stride
  int elem_bytes = 2;
};

struct AttnTensors {
  TensorRef q, k, v;
  TensorRef o, lse;              // forward outputs
  TensorRef out, lse_in, dout;   // backward inputs
  TensorRef dq, dk, dv;          // backward outputs (dq accumulated when dq_accumulate)
  bool dq_accumulate = false;
};

AttnTensors attention_tensors(const Op& op, const AttnLaunch& l, const RankExecPlan& rp, const Workload& w);

} // namespace cpsim::backend
