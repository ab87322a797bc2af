// Sends and receives of buffer regions (the IR's `regions`): TE p2p's K/V and dK/dV halves, DSV's per-peer head
// sets and the token blocks of CQS and DCP. A message that is one byte range of one buffer is posted in place;
// any other is packed into staging before the send, or unpacked from it after the receive, region by region in
// the IR's order ([plane][row][head][element]), which both sides therefore agree on.
#include "op_plans.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>
#include <map>

namespace cpsim::backend {

namespace {

int64_t align_up(int64_t x) { return (x + 255) / 256 * 256; }

/** Rows of `t` in `b`: first row and row step (the validator checked that one slice holds them). */
std::pair<int64_t, int64_t> rows_of(const BufferPlacement& b, const TokenSlice& t, const std::string& at) {
  for (int64_t row0 = 0; const TokenSlice& s : b.tokens) {
    const TokenRange& a = s.range;
    if (s.seq == t.seq && t.range.begin >= a.begin && t.range.last() <= a.last() && (t.range.begin - a.begin) % a.stride == 0)
      return {row0 + (t.range.begin - a.begin) / a.stride, t.range.size() == 1 ? 1 : t.range.stride / a.stride};
    row0 += a.size();
  }
  throw UserError(at + ": buffer '" + b.name + "' does not hold the tokens of its region");
}

MessagePlan plan_message(const Op& op, const RankExecPlan& rp, const std::string& at) {
  MessagePlan m;
  int64_t msg = 0;
  for (const BufferRegion& g : op.regions) {
    const int bi = rp.buffer_index.at(g.buffer);
    const BufferPlacement& b = rp.buffers[size_t(bi)];
    if (b.tokens.empty())
      throw UserError(at + ": a region of '" + b.name + "', which holds no token rows");
    const std::vector<TokenSlice> toks = g.tokens.empty() ? b.tokens : g.tokens;
    const std::vector<int> heads = g.heads.empty() ? b.head_ids : g.heads;
    int64_t rows = 0;
    for (const TokenSlice& t : toks)
      rows += t.range.size();
    const int64_t pitch = int64_t(heads.size()) * b.head_width * b.elem_bytes;
    const int pe = g.plane_end < 0 ? b.planes : g.plane_end;
    for (int plane = g.plane_begin; plane < pe; ++plane) {
      int64_t msg_row = 0;
      for (const TokenSlice& t : toks) {
        const auto [row, step] = rows_of(b, t, at);
        for (size_t i = 0; i < heads.size();) { // runs of heads side by side in the buffer
          const int pos = b.head_pos(heads[i]);
          size_t j = i + 1;
          while (j < heads.size() && b.head_pos(heads[j]) == pos + int(j - i))
            ++j;
          m.pieces.push_back({bi, plane, row, step, t.range.size(), pos, int(j - i),
                              msg + msg_row * pitch + int64_t(i) * b.head_width * b.elem_bytes, pitch});
          i = j;
        }
        msg_row += t.range.size();
      }
      msg += rows * pitch;
    }
  }
  if (msg != op.bytes)
    throw UserError(at + ": its regions hold " + std::to_string(msg) + " bytes, not the op's " + std::to_string(op.bytes));
  // in place when every piece continues the previous one's bytes in one buffer
  const MessagePiece& p0 = m.pieces.front();
  const BufferPlacement& b0 = rp.buffers[size_t(p0.buffer)];
  const int64_t start = p0.plane * b0.plane_bytes() + p0.row * b0.row_bytes() + int64_t(p0.head_pos) * b0.head_width * b0.elem_bytes;
  m.direct = std::all_of(m.pieces.begin(), m.pieces.end(), [&](const MessagePiece& pc) {
    const BufferPlacement& b = rp.buffers[size_t(pc.buffer)];
    const bool whole_rows = pc.heads == b.heads && pc.msg_pitch_bytes == b.row_bytes();
    const int64_t at_b = pc.plane * b.plane_bytes() + pc.row * b.row_bytes();
    return pc.buffer == p0.buffer && (whole_rows || pc.rows == 1) && (pc.step == 1 || pc.rows == 1) &&
           at_b + int64_t(pc.head_pos) * b.head_width * b.elem_bytes == start + pc.msg_offset_bytes;
  });
  if (m.direct) {
    m.buffer = p0.buffer;
    m.offset_bytes = start;
    m.pieces.clear();
  }
  return m;
}

} // namespace

void plan_messages(const RankProgram& p, RankExecPlan& rp) {
  std::map<int, int64_t> need; // stream -> largest packed bytes one slot posts
  for (const Slot& sl : rp.slots) {
    int64_t slot_bytes = 0;
    for (int id : sl.ops) {
      const Op& op = p.ops[size_t(id)];
      if ((op.kind != OpKind::SEND && op.kind != OpKind::RECV))
        continue;
      const std::string at = op_where(p.rank, op);
      if (op.regions.empty()) { // the first `bytes` bytes of its one buffer
        const BufferPlacement& b = rp.buffer(op.kind == OpKind::SEND ? op.reads.at(0) : op.writes.at(0));
        if (op.bytes > b.bytes)
          throw UserError(at + ": moves " + std::to_string(op.bytes) + " bytes of buffer '" + b.name + "', which holds " +
                          std::to_string(b.bytes));
        continue;
      }
      MessagePlan m = plan_message(op, rp, at);
      if (!m.direct) {
        m.staging_offset_bytes = slot_bytes; // relative to the stream's area until it is placed below
        slot_bytes += align_up(op.bytes);
      }
      rp.messages[id] = std::move(m);
    }
    need[sl.stream] = std::max(need[sl.stream], slot_bytes);
  }
  std::map<int, int64_t> base;
  for (const auto& [stream, bytes] : need) {
    base[stream] = rp.staging_bytes;
    rp.staging_bytes += bytes;
  }
  for (auto& [id, m] : rp.messages)
    if (!m.direct)
      m.staging_offset_bytes += base[p.ops[size_t(id)].stream];
}

} // namespace cpsim::backend
