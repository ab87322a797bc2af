// Sends and receives of buffer regions on the GPU (the plan is message_plan.cpp): a message that is one byte range
// of one buffer is posted in place; any other is packed into its staging area before the send and unpacked from it
// after the receive, piece by piece, on the op's stream.
#include "rank_executor.hpp"

#include "gpu_check.hpp"
#include "helper_kernels.hpp"

namespace cpsim::backend {

void* RankExecutor::message_ptr(const Op& op) const {
  auto it = rp_.messages.find(op.id);
  if (it == rp_.messages.end()) // no regions: the first `bytes` bytes of the one buffer
    return ptr(rp_.buffer_index.at(op.kind == OpKind::SEND ? op.reads.at(0) : op.writes.at(0)));
  const MessagePlan& m = it->second;
  if (m.direct)
    return static_cast<char*>(ptr(m.buffer)) + m.offset_bytes;
  return arena_ + rp_.arena_bytes + m.staging_offset_bytes;
}

namespace {
/** Copies one piece between its buffer and the packed message (to_message: pack, else unpack). */
void move_piece(const MessagePiece& pc, const BufferPlacement& b, char* buffer, char* message, bool to_message, cudaStream_t st) {
  char* buf = buffer + pc.plane * b.plane_bytes() + pc.row * b.row_bytes() + int64_t(pc.head_pos) * b.head_width * b.elem_bytes;
  char* msg = message + pc.msg_offset_bytes;
  const int64_t cols = int64_t(pc.heads) * b.head_width, buf_pitch = b.width * pc.step, msg_pitch = pc.msg_pitch_bytes / b.elem_bytes;
  if (to_message)
    convert_2d(msg, b.elem_bytes, msg_pitch, buf, b.elem_bytes, buf_pitch, pc.rows, cols, st);
  else
    convert_2d(buf, b.elem_bytes, buf_pitch, msg, b.elem_bytes, msg_pitch, pc.rows, cols, st);
}
} // namespace

void RankExecutor::pack_messages(const Slot& sl, cudaStream_t st) {
  for (int id : sl.ops) {
    const Op& op = s_.ranks[size_t(rank_)].ops[size_t(id)];
    auto it = rp_.messages.find(id);
    if (op.kind != OpKind::SEND || it == rp_.messages.end() || it->second.direct)
      continue;
    char* msg = static_cast<char*>(message_ptr(op));
    for (const MessagePiece& pc : it->second.pieces)
      move_piece(pc, rp_.buffers[size_t(pc.buffer)], static_cast<char*>(ptr(pc.buffer)), msg, true, st);
  }
}

void RankExecutor::unpack_messages(const Slot& sl, cudaStream_t st) {
  for (int id : sl.ops) {
    const Op& op = s_.ranks[size_t(rank_)].ops[size_t(id)];
    auto it = rp_.messages.find(id);
    if (op.kind != OpKind::RECV || it == rp_.messages.end() || it->second.direct)
      continue;
    char* msg = static_cast<char*>(message_ptr(op));
    for (const MessagePiece& pc : it->second.pieces)
      move_piece(pc, rp_.buffers[size_t(pc.buffer)], static_cast<char*>(ptr(pc.buffer)), msg, false, st);
  }
}

} // namespace cpsim::backend
