// Launch tensors as buffer offsets; see attention_tensors.hpp.
#include "attention_tensors.hpp"

#include "buffer_plan.hpp"

namespace cpsim::backend {

AttnTensors attention_tensors(const Op& op, const AttnLaunch& l, const RankExecPlan& rp, const Workload& w) {
  const int per = w.heads / w.kv_heads;
  AttnTensors c;
  // a q-side buffer at the launch's first head and row offset, or a k-side one at its first KV head
  auto side = [&](int b, int plane, bool q_side) {
    const BufferPlacement& bp = rp.buffers[size_t(b)];
    const int h0 = q_side ? l.head_begin : l.head_begin / per;
    const auto off = l.row_offset.find(b);
    const int64_t row = off == l.row_offset.end() ? 0 : off->second;
    return TensorRef{b, plane * bp.plane_bytes() + row * bp.row_bytes() + int64_t(bp.head_pos(h0)) * bp.head_width * bp.elem_bytes,
                     h0, bp.heads, bp.elem_bytes};
  };
  auto named = [&](const std::vector<std::string>& names, const char* tensor) {
    for (const auto& n : names)
      if (rp.buffer(n).tensor == tensor)
        return rp.buffer_index.at(n);
    return -1;
  };
  if (l.gather >= 0) { // PIT: the slot's packed rows (K, V and their gradients; or Q, dO, O, LSE, partials and dQ)
    const GatherLayout& g = rp.gathers.at(l.gather);
    const bool one_head = g.slot_heads[size_t(l.slot)] >= 0;
    const BufferPlacement& src = rp.buffers[size_t(g.src[0])];
    const int h0 = one_head ? (g.rows ? l.head_begin : l.head_begin / per) : src.head_begin;
    const int64_t plane = g.packed_rows * g.row_elems * 2;
    auto packed = [&](int b, int pl, int elem_bytes = 2) { return TensorRef{b, pl * plane, h0, g.row_heads, elem_bytes}; };
    if (!g.rows) {
      c.k = packed(g.packed, 0);
      c.v = packed(g.packed, 1);
      if (const int d = named(op.writes, "dkv_packed"); d >= 0) {
        c.dk = packed(d, 0);
        c.dv = packed(d, 1);
      }
    } else {
      c.k = side(l.k, 0, false);
      c.v = side(l.v, 1, false);
      c.q = packed(g.packed, 0);
      if (op.dir == Direction::FORWARD) {
        c.o = packed(named(op.writes, "o_packed"), 0);
        c.lse = packed(named(op.writes, "lse_packed"), 0, 4);
      } else {
        c.dout = packed(g.packed, 1);
        c.out = packed(g.packed, 2);
        c.lse_in = packed(g.packed_lse, 0, 4);
        c.dq = packed(named(op.writes, "dq_packed"), 0);
        for (const auto& n : op.writes) // the fixed key tiles' gradients, in the rows of the kv buffer (exec_plan checks)
          if (const int b = rp.buffer_index.at(n); tensor_family(rp.buffers[size_t(b)].tensor) == "dkv") {
            c.dk = side(b, 0, false);
            c.dv = side(b, 1, false);
          }
      }
      return c;
    }
  } else {
    c.k = side(l.k, l.k_plane, false);
    c.v = side(l.v, l.v_plane, false);
  }
  c.q = side(l.q, 0, true);
  for (const auto& n : op.reads) {
    const int b = rp.buffer_index.at(n);
    const std::string& t = rp.buffers[size_t(b)].tensor;
    if (t == "o")
      c.out = side(b, 0, true);
    else if (t == "lse")
      c.lse_in = side(b, 0, true);
    else if (t == "do")
      c.dout = side(b, 0, true);
  }
  for (const auto& n : op.writes) {
    const int b = rp.buffer_index.at(n);
    const BufferPlacement& bp = rp.buffers[size_t(b)];
    const std::string f = tensor_family(bp.tensor);
    if (f == "o")
      c.o = side(b, 0, true);
    else if (f == "lse")
      c.lse = side(b, 0, true);
    else if (f == "dq") {
      c.dq = side(b, 0, true);
      c.dq_accumulate = bp.tensor == "dq_acc";
    } else if (l.gather < 0 && bp.head_pos(l.head_begin / per) >= 0) { // the K-side gradients of this launch's KV heads
      if (f == "dkv") {
        c.dk = side(b, 0, false);
        c.dv = side(b, 1, false);
      } else if (f == "dk") {
        c.dk = side(b, 0, false);
      } else if (f == "dv") {
        c.dv = side(b, 0, false);
      }
    }
  }
  return c;
}

} // namespace cpsim::backend
