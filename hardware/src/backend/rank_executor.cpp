// Slot issue, op implementations and the completion watchdog of RankExecutor.
#include "rank_executor.hpp"

#include "attention_tensors.hpp"
#include "buffer_plan.hpp"
#include "gpu_check.hpp"
#include "helper_kernels.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <exception>
#include <thread>

namespace cpsim::backend {


RankExecutor::RankExecutor(const Schedule& s, const Scenario& sc, const ExecPlan& plan, const WirePlan& wire, int rank,
                           Transport& transport, const RunOptions& opt)
    : s_(s), sc_(sc), plan_(plan), rp_(plan.ranks[size_t(rank)]), wire_(wire.ranks.at(size_t(rank))), rank_(rank),
      transport_(transport), opt_(opt),
      mask_(sc.workload), inj_(parse_injection(opt.inject)) {
  for (size_t i = 0; i < s.streams.size(); ++i) {
    cudaStream_t st;
    BK_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    streams_.push_back(st);
  }
  start_.resize(rp_.slots.size());
  end_.resize(rp_.slots.size());
  for (size_t i = 0; i < rp_.slots.size(); ++i) {
    BK_CUDA_CHECK(cudaEventCreate(&start_[i]));
    BK_CUDA_CHECK(cudaEventCreate(&end_[i]));
  }
  BK_CUDA_CHECK(cudaEventCreate(&t0_));
}

RankExecutor::~RankExecutor() {
  // leaving on an error: cudaFree waits for the device, whose streams may be held by a peer that will never answer
  // (an NCCL kernel, a loopback flag); the process exits right after, which frees everything anyway
  if (std::uncaught_exceptions() > 0)
    return;
  for (void* t : tables_)
    cudaFree(t);
  if (arena_)
    cudaFree(arena_);
  for (auto e : start_)
    cudaEventDestroy(e);
  for (auto e : end_)
    cudaEventDestroy(e);
  if (t0_)
    cudaEventDestroy(t0_);
  for (auto st : streams_)
    cudaStreamDestroy(st);
}

void RankExecutor::allocate() {
  size_t free_b = 0, total_b = 0;
  BK_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const int64_t need = rp_.arena_bytes + rp_.staging_bytes;
  const int64_t avail = opt_.memory_limit_bytes > 0 ? std::min<int64_t>(opt_.memory_limit_bytes, int64_t(free_b)) : int64_t(free_b);
  auto gib = [](int64_t b) { return std::to_string(double(b) / double(1 << 30)).substr(0, 6) + " GiB"; };
  if (need > avail)
    throw GpuError("the plan does not fit in device memory: it needs " + gib(need) + " (buffers " + gib(rp_.arena_bytes) +
                   ", collective staging " + gib(rp_.staging_bytes) + "; the memory model predicts a peak of " +
                   gib(rp_.predicted_peak_bytes) + ") but " + gib(avail) + " are free");
  cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&arena_), size_t(std::max<int64_t>(need, 256)));
  if (e != cudaSuccess)
    throw GpuError("the plan does not fit in device memory: cudaMalloc of " + gib(need) + " failed (" +
                   cudaGetErrorString(e) + ")");
  allocated_bytes_ = need;
  transport_.attach(arena_, need);
}

void* RankExecutor::ptr(int b) const { return arena_ + rp_.buffers[size_t(b)].offset_bytes; }

void RankExecutor::fill_inputs() {
  for (int b : input_buffers(s_.ranks[size_t(rank_)], rp_)) {
    const BufferPlacement& bp = rp_.buffers[size_t(b)];
    for (int plane = 0; plane < bp.planes; ++plane) {
      int64_t row = 0;
      for (const TokenSlice& t : bp.tokens) {
        char* dst = static_cast<char*>(ptr(b)) + plane * bp.plane_bytes() + row * bp.row_bytes();
        fill_input_bf16(dst, t.range.size(), t.range.begin, t.range.stride, bp.head_begin, bp.heads,
                        sc_.workload.head_dim, input_tensor_id(bp.tensor, plane), t.seq, streams_[0]);
        row += t.range.size();
      }
    }
  }
  BK_CUDA_CHECK(cudaStreamSynchronize(streams_[0]));
}

void RankExecutor::prepare() {
  if (opt_.comm_only)
    return;
  for (const Op& op : s_.ranks[size_t(rank_)].ops)
    if (op.kind == OpKind::ATTENTION)
      for (const AttnLaunch& l : rp_.launches.at(op.id))
        prepare_attention(attention_call(op, l, streams_[size_t(op.stream)]));
  prepare_compute();
  BK_CUDA_CHECK(cudaDeviceSynchronize());
}

void RankExecutor::touch(int slot, bool waiting) {
  slot_ = slot;
  waiting_ = waiting;
  progress_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string RankExecutor::where() const {
  const int i = slot_.load();
  if (i < 0 || size_t(i) >= rp_.slots.size())
    return "starting a repetition";
  const Op& op = s_.ranks[size_t(rank_)].ops[size_t(rp_.slots[size_t(i)].ops[0])];
  return std::string(waiting_ ? "waiting for" : "posting") + " op " + std::to_string(op.id) + " ('" + op.label + "')";
}

std::vector<OpTime> RankExecutor::run_once(bool inject) {
  touch(-1, false);
  busy_ = true;
  transport_.begin_repetition();
  if (inject && inj_.kind == InjectKind::HANG && inj_.rank == rank_)
    std::this_thread::sleep_for(std::chrono::hours(1)); // a process that stops answering; peers must time out
  BK_CUDA_CHECK(cudaEventRecord(t0_, streams_[0]));
  for (size_t i = 1; i < streams_.size(); ++i)
    BK_CUDA_CHECK(cudaStreamWaitEvent(streams_[i], t0_));
  for (size_t i = 0; i < rp_.slots.size(); ++i) {
    touch(int(i), false);
    issue_slot(i, inject);
  }
  wait_done();
  busy_ = false;
  std::vector<OpTime> out;
  for (size_t i = 0; i < rp_.slots.size(); ++i) {
    float a = 0, b = 0;
    BK_CUDA_CHECK(cudaEventElapsedTime(&a, t0_, start_[i]));
    BK_CUDA_CHECK(cudaEventElapsedTime(&b, t0_, end_[i]));
    for (int id : rp_.slots[i].ops)
      out.push_back({id, a * 1e-3, b * 1e-3});
  }
  std::sort(out.begin(), out.end(), [](const OpTime& x, const OpTime& y) { return x.op < y.op; });
  return out;
}

void RankExecutor::wait_done() {
  auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < rp_.slots.size(); ++i) {
    touch(int(i), true);
    while (true) {
      cudaError_t e = cudaEventQuery(end_[i]);
      if (e == cudaSuccess)
        break;
      if (e != cudaErrorNotReady)
        BK_CUDA_CHECK(e);
      transport_.check_async("waiting for op " + std::to_string(rp_.slots[i].ops[0]));
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > opt_.timeout_s) {
        const Op& op = s_.ranks[size_t(rank_)].ops[size_t(rp_.slots[i].ops[0])];
        std::string peer;
        if (op.kind == OpKind::SEND || op.kind == OpKind::RECV)
          peer = "; its peer rank " + std::to_string(op.peer) + " never answered";
        else if (op.kind == OpKind::COLLECTIVE)
          peer = "; a member of its group never answered";
        throw GpuError("no progress for " + std::to_string(int(opt_.timeout_s)) + " s: op " + std::to_string(op.id) +
                       " ('" + op.label + "') on stream '" + s_.streams[size_t(op.stream)].name + "' did not finish" + peer);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
}

void RankExecutor::issue_slot(size_t i, bool inject) {
  const Slot& sl = rp_.slots[i];
  cudaStream_t st = streams_[size_t(sl.stream)];
  for (int a : sl.wait_slots)
    BK_CUDA_CHECK(cudaStreamWaitEvent(st, end_[size_t(a)]));
  BK_CUDA_CHECK(cudaEventRecord(start_[i], st));
  const Op& first = s_.ranks[size_t(rank_)].ops[size_t(sl.ops[0])];
  if (inject && inj_.rank == rank_ && std::find(sl.ops.begin(), sl.ops.end(), inj_.op) != sl.ops.end()) {
    if (inj_.kind == InjectKind::DIE)
      std::raise(SIGKILL); // as an OOM-killer or a crashed node would
    if (inj_.kind == InjectKind::CUDA_ERROR)
      BK_CUDA_CHECK(cudaMemcpyAsync(nullptr, arena_, 1, cudaMemcpyDeviceToDevice, st));
  }
  if (first.kind == OpKind::SEND || first.kind == OpKind::RECV) {
    issue_p2p(sl, st);
  } else {
    for (int id : sl.ops) {
      const Op& op = s_.ranks[size_t(rank_)].ops[size_t(id)];
      if (op.kind == OpKind::COLLECTIVE)
        issue_collective(op, st);
      else if (op.kind == OpKind::ATTENTION && !opt_.comm_only)
        issue_attention(op, st);
      else if (op.kind == OpKind::MERGE && !opt_.comm_only)
        issue_merge(op, st);
      else if (op.kind == OpKind::COMPUTE && !opt_.comm_only)
        issue_compute(op, st);
    }
  }
  BK_CUDA_CHECK(cudaEventRecord(end_[i], st));
}

void RankExecutor::issue_p2p(const Slot& sl, cudaStream_t st) {
  pack_messages(sl, st); // sends of buffer regions (message_regions.cpp)
  transport_.post(wire_.postings.at(size_t(wire_.posting_of_op.at(sl.ops[0]))), st);
  unpack_messages(sl, st);
}

void RankExecutor::issue_collective(const Op& op, cudaStream_t st) {
  const CollectivePlan& cp = rp_.collectives.at(op.id);
  const BufferPlacement &src = rp_.buffers[size_t(cp.src)], &dst = rp_.buffers[size_t(cp.dst)];
  char* staging = arena_ + rp_.arena_bytes + cp.staging_offset_bytes;
  // element units: an fp32 accumulator may feed a bf16 destination (dq_acc -> dq, dkv_acc -> dkv), and the
  // wire carries the destination's type, as frameworks convert before they communicate
  const int64_t head_elems = src.heads ? src.width / src.heads : 0;
  const int wire = dst.elem_bytes;
  auto copy = [&](const CollectivePiece& pc, const char* from, int from_elem, int64_t from_row, int64_t from_plane, char* to,
                  int to_elem, int64_t to_row, int64_t to_plane, bool from_is_buf, bool to_is_buf, bool add = false) {
    const int64_t w = pc.heads * head_elems;
    for (int plane = cp.plane_begin; plane < cp.plane_end; ++plane) {
      // buffers hold K then V; packed staging holds only the planes that move, [piece][plane][rows][heads x dim]
      const char* f = from + (from_is_buf ? plane : plane - cp.plane_begin) * from_plane;
      char* t = to + (to_is_buf ? plane : plane - cp.plane_begin) * to_plane;
      int64_t spitch = w, dpitch = w;
      if (from_is_buf) {
        f += (pc.block.src_row * from_row + pc.src_head_offset * head_elems) * from_elem;
        spitch = from_row * pc.block.src_step;
      }
      if (to_is_buf) {
        t += (pc.block.dst_row * to_row + pc.dst_head_offset * head_elems) * to_elem;
        dpitch = to_row * pc.block.dst_step;
      }
      if (add)
        accumulate_2d(t, to_elem, dpitch, f, from_elem, spitch, pc.block.rows, w, st);
      else
        convert_2d(t, to_elem, dpitch, f, from_elem, spitch, pc.block.rows, w, st);
    }
  };
  auto piece_bytes = [&](const CollectivePiece& pc) { return piece_plane_bytes(rp_, cp, pc); }; // the wire plan's spans
  const int planes = cp.plane_end - cp.plane_begin;
  int64_t off = 0;
  for (const auto& pc : cp.sends) { // packed as [piece][plane][rows][heads x dim], in the wire type
    copy(pc, static_cast<char*>(ptr(cp.src)), src.elem_bytes, src.width, src.plane_bytes(), staging + off, wire, 0,
         piece_bytes(pc), true, false);
    off += piece_bytes(pc) * planes;
  }
  for (const auto& pc : cp.local)
    copy(pc, static_cast<char*>(ptr(cp.src)), src.elem_bytes, src.width, src.plane_bytes(), static_cast<char*>(ptr(cp.dst)),
         dst.elem_bytes, dst.width, dst.plane_bytes(), true, true, pc.add);
  transport_.post(wire_.postings.at(size_t(wire_.posting_of_op.at(op.id))), st); // one span per peer and direction
  off = cp.send_bytes;
  for (const auto& pc : cp.recvs) {
    copy(pc, staging + off, wire, 0, piece_bytes(pc), static_cast<char*>(ptr(cp.dst)), dst.elem_bytes, dst.width,
         dst.plane_bytes(), false, true, cp.reduce || pc.add); // reduce-scatter: onto the own piece, copied before
    off += piece_bytes(pc) * planes;
  }
}

void RankExecutor::zero_before(const Op& op, cudaStream_t st) {
  if (auto z = rp_.zero_before.find(op.id); z != rp_.zero_before.end())
    for (int b : z->second)
      BK_CUDA_CHECK(cudaMemsetAsync(ptr(b), 0, size_t(rp_.buffers[size_t(b)].bytes), st));
}

AttnCall RankExecutor::attention_call(const Op& op, const AttnLaunch& l, cudaStream_t st) const {
  AttnCall c;
  c.mask = &mask_;
  c.segments = &l.segments;
  c.head_dim = sc_.workload.head_dim;
  c.heads_total = sc_.workload.heads;
  c.kv_heads_total = sc_.workload.kv_heads;
  c.head_begin = l.head_begin;
  c.head_end = l.head_end;
  c.stream = st;
  if (l.gather >= 0) {
    c.gather = &rp_.gathers.at(l.gather);
    c.slot = l.slot;
  }
  const AttnTensors t = attention_tensors(op, l, rp_, sc_.workload);
  auto block = [&](const TensorRef& r) {
    return r.buffer < 0 ? HeadBlock{} : HeadBlock{static_cast<const char*>(ptr(r.buffer)) + r.offset_bytes, r.head_begin, r.heads, r.elem_bytes};
  };
  c.q = block(t.q);
  c.k = block(t.k);
  c.v = block(t.v);
  c.o = block(t.o);
  c.lse = block(t.lse);
  c.out = block(t.out);
  c.lse_in = block(t.lse_in);
  c.dout = block(t.dout);
  c.dq = block(t.dq);
  c.dk = block(t.dk);
  c.dv = block(t.dv);
  c.dq_accumulate = t.dq_accumulate;
  return c;
}

void RankExecutor::issue_attention(const Op& op, cudaStream_t st) {
  zero_before(op, st);
  if (auto pf = rp_.prefill.find(op.id); pf != rp_.prefill.end())
    for (int b : pf->second) { // rows no launch covers must read as "no keys" for the merge that follows
      const BufferPlacement& bp = rp_.buffers[size_t(b)];
      if (is_lse(bp.tensor))
        fill_f32(ptr(b), bp.bytes / 4, -INFINITY, st);
      else
        BK_CUDA_CHECK(cudaMemsetAsync(ptr(b), 0, size_t(bp.bytes), st));
    }
  for (const AttnLaunch& l : rp_.launches.at(op.id)) {
    const AttnCall c = attention_call(op, l, st);
    if (op.dir == Direction::FORWARD)
      attention_forward(c);
    else
      attention_backward(c);
  }
}

void RankExecutor::issue_merge(const Op& op, cudaStream_t st) {
  auto find = [&](const std::vector<std::string>& names, const std::string& tensor) {
    for (const auto& n : names)
      if (rp_.buffer(n).tensor == tensor)
        return rp_.buffer_index.at(n);
    return -1;
  };
  if (auto fm = rp_.forward_merges.find(op.id); fm != rp_.forward_merges.end()) {
    issue_forward_merge(op, fm->second, st);
    return;
  }
  if (op.dir == Direction::FORWARD) {
    int po = find(op.reads, "o"), pl = find(op.reads, "lse"), ao = find(op.writes, "o_acc"), al = find(op.writes, "lse_acc");
    if (po < 0 || pl < 0 || ao < 0 || al < 0)
      throw GpuError("forward merge op " + std::to_string(op.id) + " must read o and lse partials and write o_acc, lse_acc");
    const BufferPlacement& acc = rp_.buffers[size_t(ao)];
    lse_merge2(static_cast<float*>(ptr(ao)), static_cast<float*>(ptr(al)), ptr(po), rp_.buffers[size_t(po)].elem_bytes,
               static_cast<const float*>(ptr(pl)), acc.rows, acc.heads, sc_.workload.head_dim, op.inputs <= 1, st);
    for (const auto& n : op.writes) {
      int b = rp_.buffer_index.at(n);
      const BufferPlacement& bp = rp_.buffers[size_t(b)];
      if (bp.tensor == "o")
        convert(ptr(b), bp.elem_bytes, ptr(ao), 4, bp.rows * bp.width, st);
      else if (bp.tensor == "lse")
        convert(ptr(b), 4, ptr(al), 4, bp.rows * bp.width, st);
    }
    return;
  }
  zero_before(op, st);
  if (auto a = rp_.merge_adds.find(op.id); a != rp_.merge_adds.end())
    for (const MergeAdd& m : a->second) { // in place, matched by token: dst rows += src rows
      const BufferPlacement &s = rp_.buffers[size_t(m.src)], &d = rp_.buffers[size_t(m.dst)];
      for (int plane = 0; plane < d.planes; ++plane)
        accumulate_2d(static_cast<char*>(ptr(m.dst)) + plane * d.plane_bytes() + m.block.dst_row * d.row_bytes() +
                          int64_t(m.dst_head) * d.head_width * d.elem_bytes,
                      d.elem_bytes, d.width * m.block.dst_step,
                      static_cast<const char*>(ptr(m.src)) + plane * s.plane_bytes() + m.block.src_row * s.row_bytes() +
                          int64_t(m.src_head) * s.head_width * s.elem_bytes,
                      s.elem_bytes, s.width * m.block.src_step, m.block.rows, m.heads * d.head_width, st);
    }
  for (const auto& n : op.writes) {
    if (in_place(op, n))
      continue; // the additions above
    int w = rp_.buffer_index.at(n);
    const BufferPlacement& wb = rp_.buffers[size_t(w)];
    bool first = true;
    for (const auto& r : op.reads) {
      const BufferPlacement& rb = rp_.buffer(r);
      if (r == n || tensor_family(rb.tensor) != tensor_family(wb.tensor))
        continue;
      const int64_t elems = wb.rows * wb.width * wb.planes;
      if (rb.rows * rb.width * rb.planes != elems)
        throw GpuError("backward merge op " + std::to_string(op.id) + ": '" + r + "' and '" + n + "' differ in size");
      if (first)
        convert(ptr(w), wb.elem_bytes, ptr(rp_.buffer_index.at(r)), rb.elem_bytes, elems, st);
      else
        accumulate(ptr(w), wb.elem_bytes, ptr(rp_.buffer_index.at(r)), rb.elem_bytes, elems, st);
      first = false;
    }
  }
}

} // namespace cpsim::backend
