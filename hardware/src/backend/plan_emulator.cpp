// The CPU emulator of exec plans; see plan_emulator.hpp. This file holds its driver (streams advancing behind the
// slots they wait on, sends and receives paired in order per communicator, collectives once every member arrives),
// the inputs, the communication ops and the comparison with the reference; the compute ops are in
// plan_emulator_ops.cpp. Buffers are element arrays (bytes / dtype size); messages are byte-addressed (elements at
// byte offset / 2), as a message may hold bf16 and fp32 regions.
#include "plan_emulator_internal.hpp"

#include "buffer_plan.hpp"
#include "op_plans.hpp"

#include "cpsim/model/errors.hpp"

#include <deque>
#include <map>
#include <tuple>

namespace cpsim::backend {

namespace emulator {

void Emulator::fill_inputs(int rank) {
  const RankExecPlan& rp = plan_.ranks[size_t(rank)];
  for (int b : input_buffers(s_.ranks[size_t(rank)], rp)) {
    const BufferPlacement& bp = rp.buffers[size_t(b)];
    auto& m = mem_[size_t(rank)][size_t(b)];
    for (int plane = 0; plane < bp.planes; ++plane) {
      int64_t row = 0;
      for (const TokenSlice& t : bp.tokens)
        for (int64_t i = 0; i < t.range.size(); ++i, ++row)
          for (int hp = 0; hp < bp.heads; ++hp)
            for (int64_t e = 0; e < bp.head_width; ++e)
              m[size_t(plane * bp.rows * bp.width + row * bp.width + hp * bp.head_width + e)] =
                  emulated_input(input_tensor_id(bp.tensor, plane), t.seq, t.range.at(i), bp.head_ids[size_t(hp)], e,
                                 opt_.value_dims);
    }
  }
}

void Emulator::collective(const std::vector<std::pair<int, int>>& members) {
  // element (piece, plane, row, column) of a piece in a buffer
  auto index = [](const BufferPlacement& b, int plane, int64_t row, int head_off, int64_t col) {
    const int64_t he = b.heads ? b.width / b.heads : 0;
    return size_t(plane * b.rows * b.width + row * b.width + head_off * he + col);
  };
  // locals first (a reduce-scatter adds the received pieces onto the own one)
  for (auto [r, id] : members) {
    const CollectivePlan& cp = plan_.ranks[size_t(r)].collectives.at(id);
    const BufferPlacement &src = buf(r, cp.src), &dst = buf(r, cp.dst);
    const int64_t he = src.heads ? src.width / src.heads : 0;
    for (const auto& pc : cp.local)
      for (int plane = cp.plane_begin; plane < cp.plane_end; ++plane)
        for (int64_t i = 0; i < pc.block.rows; ++i)
          for (int64_t c = 0; c < pc.heads * he; ++c)
            mem_[size_t(r)][size_t(cp.dst)][index(dst, plane, pc.block.dst_row + i * pc.block.dst_step, pc.dst_head_offset, c)] =
                (pc.add ? mem_[size_t(r)][size_t(cp.dst)][index(dst, plane, pc.block.dst_row + i * pc.block.dst_step, pc.dst_head_offset, c)] : 0.0) +
                mem_[size_t(r)][size_t(cp.src)][index(src, plane, pc.block.src_row + i * pc.block.src_step, pc.src_head_offset, c)];
  }
  // the k-th piece rank a sends to b is the k-th piece b receives from a
  std::map<std::pair<int, int>, std::deque<std::vector<double>>> wire;
  for (auto [r, id] : members) {
    const CollectivePlan& cp = plan_.ranks[size_t(r)].collectives.at(id);
    const BufferPlacement& src = buf(r, cp.src);
    const int64_t he = src.heads ? src.width / src.heads : 0;
    for (const auto& pc : cp.sends) {
      std::vector<double> piece;
      for (int plane = cp.plane_begin; plane < cp.plane_end; ++plane)
        for (int64_t i = 0; i < pc.block.rows; ++i)
          for (int64_t c = 0; c < pc.heads * he; ++c)
            piece.push_back(mem_[size_t(r)][size_t(cp.src)][index(src, plane, pc.block.src_row + i * pc.block.src_step, pc.src_head_offset, c)]);
      wire[{r, pc.peer}].push_back(std::move(piece));
    }
  }
  for (auto [r, id] : members) {
    const CollectivePlan& cp = plan_.ranks[size_t(r)].collectives.at(id);
    const BufferPlacement& dst = buf(r, cp.dst);
    const int64_t he = dst.heads ? dst.width / dst.heads : 0;
    for (const auto& pc : cp.recvs) {
      auto& q = wire[{pc.peer, r}];
      if (q.empty())
        throw UserError(op_where(r, op(r, id)) + ": receives a piece rank " + std::to_string(pc.peer) + " does not send");
      const std::vector<double> piece = std::move(q.front());
      q.pop_front();
      size_t k = 0;
      for (int plane = cp.plane_begin; plane < cp.plane_end; ++plane)
        for (int64_t i = 0; i < pc.block.rows; ++i)
          for (int64_t c = 0; c < pc.heads * he; ++c) {
            if (k >= piece.size())
              throw UserError(op_where(r, op(r, id)) + ": a piece from rank " + std::to_string(pc.peer) + " is shorter than expected");
            double& x = mem_[size_t(r)][size_t(cp.dst)][index(dst, plane, pc.block.dst_row + i * pc.block.dst_step, pc.dst_head_offset, c)];
            x = cp.reduce || pc.add ? x + piece[k] : piece[k];
            ++k;
          }
    }
  }
}

Message Emulator::pack(int rank, const Op& o) {
  const RankExecPlan& rp = plan_.ranks[size_t(rank)];
  Message msg(size_t((o.bytes + 1) / 2), 0.0);
  auto it = rp.messages.find(o.id);
  if (it == rp.messages.end() || it->second.direct) {
    const int b = it == rp.messages.end() ? rp.buffer_index.at(o.reads.at(0)) : it->second.buffer;
    const int64_t off = it == rp.messages.end() ? 0 : it->second.offset_bytes;
    const int eb = elem(rank, b);
    for (int64_t x = 0; x < o.bytes; x += eb)
      msg[size_t(x / 2)] = el(rank, b, off + x);
    return msg;
  }
  for (const MessagePiece& pc : it->second.pieces) {
    const BufferPlacement& b = rp.buffers[size_t(pc.buffer)];
    for (int64_t i = 0; i < pc.rows; ++i)
      for (int64_t c = 0; c < int64_t(pc.heads) * b.head_width; ++c)
        msg[size_t((pc.msg_offset_bytes + i * pc.msg_pitch_bytes + c * b.elem_bytes) / 2)] =
            mem_[size_t(rank)][size_t(pc.buffer)][size_t(pc.plane * b.rows * b.width + (pc.row + i * pc.step) * b.width + pc.head_pos * b.head_width + c)];
  }
  return msg;
}

void Emulator::unpack(int rank, const Op& o, const Message& msg) {
  const RankExecPlan& rp = plan_.ranks[size_t(rank)];
  if (int64_t(msg.size()) != (o.bytes + 1) / 2)
    throw UserError(op_where(rank, o) + ": receives " + std::to_string(2 * msg.size()) + " bytes for " + std::to_string(o.bytes));
  auto it = rp.messages.find(o.id);
  if (it == rp.messages.end() || it->second.direct) {
    const int b = it == rp.messages.end() ? rp.buffer_index.at(o.writes.at(0)) : it->second.buffer;
    const int64_t off = it == rp.messages.end() ? 0 : it->second.offset_bytes;
    const int eb = elem(rank, b);
    for (int64_t x = 0; x < o.bytes; x += eb)
      el(rank, b, off + x) = msg[size_t(x / 2)];
    return;
  }
  for (const MessagePiece& pc : it->second.pieces) {
    const BufferPlacement& b = rp.buffers[size_t(pc.buffer)];
    for (int64_t i = 0; i < pc.rows; ++i)
      for (int64_t c = 0; c < int64_t(pc.heads) * b.head_width; ++c)
        mem_[size_t(rank)][size_t(pc.buffer)][size_t(pc.plane * b.rows * b.width + (pc.row + i * pc.step) * b.width + pc.head_pos * b.head_width + c)] =
            msg[size_t((pc.msg_offset_bytes + i * pc.msg_pitch_bytes + c * b.elem_bytes) / 2)];
  }
}

void Emulator::run() {
  const int R = int(plan_.ranks.size());
  for (int r = 0; r < R; ++r)
    fill_inputs(r);
  // per rank: the slots of each stream in issue order, the next one, what is done
  std::vector<std::map<int, std::vector<int>>> stream_slots(static_cast<size_t>(R));
  std::vector<std::map<int, size_t>> next(static_cast<size_t>(R));
  std::vector<std::vector<bool>> done(static_cast<size_t>(R)), posted(static_cast<size_t>(R));
  for (int r = 0; r < R; ++r) {
    const auto& slots = plan_.ranks[size_t(r)].slots;
    done[size_t(r)].assign(slots.size(), false);
    posted[size_t(r)].assign(slots.size(), false);
    for (size_t i = 0; i < slots.size(); ++i)
      stream_slots[size_t(r)][slots[i].stream].push_back(int(i));
  }
  std::map<std::tuple<int, int, int>, std::deque<Message>> mailbox;  // (comm, from, to) -> messages in order
  std::map<std::pair<int, int64_t>, std::vector<std::pair<int, int>>> arrived; // (comm, k-th) -> (rank, op)
  std::vector<std::map<int, int64_t>> coll_count(static_cast<size_t>(R));          // per rank: collectives posted per comm
  std::vector<std::map<int, int64_t>> slot_coll(static_cast<size_t>(R));           // slot -> its (comm, k) key's k
  int64_t remaining = 0;
  for (int r = 0; r < R; ++r)
    remaining += int64_t(done[size_t(r)].size());
  while (remaining > 0) {
    bool progress = false;
    for (int r = 0; r < R; ++r) {
      const RankExecPlan& rp = plan_.ranks[size_t(r)];
      for (auto& [stream, list] : stream_slots[size_t(r)]) {
        size_t& nx = next[size_t(r)][stream];
        while (nx < list.size()) {
          const int si = list[nx];
          const Slot& sl = rp.slots[size_t(si)];
          bool ready = true;
          for (int a : sl.wait_slots)
            ready = ready && done[size_t(r)][size_t(a)];
          if (!ready)
            break;
          const Op& first = op(r, sl.ops[0]);
          bool finished = true;
          if (first.kind == OpKind::SEND || first.kind == OpKind::RECV) {
            if (!posted[size_t(r)][size_t(si)]) {
              for (int id : sl.ops)
                if (op(r, id).kind == OpKind::SEND)
                  mailbox[{rp.comm_of_op[size_t(id)], r, op(r, id).peer}].push_back(pack(r, op(r, id)));
              posted[size_t(r)][size_t(si)] = true;
              progress = true;
            }
            std::map<std::tuple<int, int, int>, size_t> wanted; // a slot may receive twice from one peer
            for (int id : sl.ops)
              if (op(r, id).kind == OpKind::RECV)
                ++wanted[{rp.comm_of_op[size_t(id)], op(r, id).peer, r}];
            for (const auto& [key, n] : wanted)
              finished = finished && mailbox[key].size() >= n;
            if (finished)
              for (int id : sl.ops)
                if (op(r, id).kind == OpKind::RECV) {
                  auto& q = mailbox[{rp.comm_of_op[size_t(id)], op(r, id).peer, r}];
                  unpack(r, op(r, id), q.front());
                  q.pop_front();
                }
          } else if (first.kind == OpKind::COLLECTIVE) {
            if (sl.ops.size() != 1)
              throw UserError(op_where(r, first) + ": a collective posted with other ops is not emulated");
            const int comm = rp.comm_of_op[size_t(first.id)];
            if (!posted[size_t(r)][size_t(si)]) {
              const int64_t k = coll_count[size_t(r)][comm]++;
              slot_coll[size_t(r)][si] = k;
              arrived[{comm, k}].push_back({r, first.id});
              posted[size_t(r)][size_t(si)] = true;
              progress = true;
              auto& who = arrived[{comm, k}];
              if (who.size() == plan_.comms[size_t(comm)].ranks.size())
                collective(who);
            }
            const auto& who = arrived[{comm, slot_coll[size_t(r)][si]}];
            finished = who.size() == plan_.comms[size_t(comm)].ranks.size();
          } else {
            for (int id : sl.ops) {
              const Op& o = op(r, id);
              if (o.kind == OpKind::ATTENTION)
                attention(r, o);
              else if (o.kind == OpKind::MERGE)
                merge(r, o);
              else if (o.kind == OpKind::COMPUTE)
                compute(r, o);
            }
          }
          if (!finished)
            break;
          done[size_t(r)][size_t(si)] = true;
          --remaining;
          ++nx;
          progress = true;
        }
      }
    }
    if (!progress) {
      std::string where;
      for (int r = 0; r < R && where.empty(); ++r)
        for (auto& [stream, list] : stream_slots[size_t(r)])
          if (next[size_t(r)][stream] < list.size()) {
            const Op& o = op(r, plan_.ranks[size_t(r)].slots[size_t(list[next[size_t(r)][stream]])].ops[0]);
            where = op_where(r, o);
            break;
          }
      throw UserError("the plan cannot complete: " + where + " waits for a peer that never sends or arrives");
    }
  }
}

std::vector<EmulatedResult> Emulator::compare(const Reference& ref) const {
  std::vector<EmulatedResult> out;
  const bool backward = s_.pass == PassKind::FWD_BWD;
  for (const RankExecPlan& rp : plan_.ranks)
    for (const auto& [key, b] : rp.results) {
      if (!backward && key != "o" && key != "lse")
        continue;
      const BufferPlacement& bp = rp.buffers[size_t(b)];
      const auto& mem = mem_[size_t(rp.rank)][size_t(b)];
      const bool lse = key == "lse";
      const bool kv_side = key == "dk" || key == "dv" || key == "dkv";
      const int nh = kv_side ? ref.kv_heads : ref.heads;
      const int64_t hw = lse ? 1 : ref.dim;
      EmulatedResult res;
      res.rank = rp.rank;
      res.result = key;
      res.buffer = bp.name;
      const int planes = key == "dkv" ? 2 : 1;
      for (int plane = 0; plane < planes; ++plane) {
        const std::vector<double>& t = key == "o" ? ref.o : lse ? ref.lse : key == "dq" ? ref.dq
                                      : key == "dv" || plane == 1 ? ref.dv : ref.dk;
        int64_t row = 0;
        for (const TokenSlice& ts : bp.tokens)
          for (int64_t i = 0; i < ts.range.size(); ++i, ++row)
            for (int hp = 0; hp < bp.heads; ++hp)
              for (int64_t e = 0; e < hw; ++e) {
                const double want = t[size_t(((ref.seq_row[size_t(ts.seq)] + ts.range.at(i)) * nh + bp.head_ids[size_t(hp)]) * hw + e)];
                const double got = mem[size_t(plane * bp.rows * bp.width + row * bp.width + hp * bp.head_width + e)];
                const double err = want == got ? 0.0 : std::isfinite(want) && std::isfinite(got) ? std::abs(want - got) : INFINITY;
                if (err > res.max_abs_err)
                  res.worst = "sequence " + std::to_string(ts.seq) + " position " + std::to_string(ts.range.at(i)) + " head " +
                              std::to_string(bp.head_ids[size_t(hp)]) + " element " + std::to_string(e) + " plane " +
                              std::to_string(plane) + ": " + std::to_string(got) + " for " + std::to_string(want);
                res.max_abs_err = std::max(res.max_abs_err, err);
                if (std::isfinite(want))
                  res.max_abs_ref = std::max(res.max_abs_ref, std::abs(want));
                ++res.elements;
              }
      }
      out.push_back(res);
    }
  return out;
}

} // namespace emulator

std::vector<EmulatedResult> emulate_plan(const Schedule& s, const Scenario& sc, const ExecPlan& plan, const EmulationOptions& opt) {
  emulator::Emulator e(s, sc, plan, opt);
  e.run();
  return e.compare(emulator::reference(sc, s.pass == PassKind::FWD_BWD, opt.value_dims));
}

} // namespace cpsim::backend
