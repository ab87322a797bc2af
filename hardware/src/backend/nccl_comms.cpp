// Communicator setup and teardown (see the header).
#include "nccl_comms.hpp"

#include "gpu_check.hpp"

#include "cpsim/hardware/backend/rendezvous.hpp"

#include <algorithm>
#include <chrono>
#include <thread>

namespace cpsim::backend {

namespace {
ncclConfig_t nonblocking() {
  ncclConfig_t c = NCCL_CONFIG_INITIALIZER;
  c.blocking = 0;
  return c;
}
} // namespace

NcclComms::NcclComms(const ExecPlan& plan, int rank, int world, const std::string& dir, double timeout_s)
    : timeout_s_(timeout_s) {
  ncclUniqueId id;
  if (rank == 0) {
    BK_NCCL_CHECK(ncclGetUniqueId(&id));
    publish_file(dir, "nccl_id", std::string(reinterpret_cast<const char*>(&id), sizeof id));
  } else {
    std::string bytes = wait_for_file(dir, "nccl_id", timeout_s, "rank 0's NCCL id (did rank 0 start?)");
    if (bytes.size() != sizeof id)
      throw GpuError("NCCL id file of the wrong size");
    std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(&id));
  }
  ncclConfig_t cfg = nonblocking();
  BK_NCCL_CHECK(ncclCommInitRankConfig(&world_, world, id, rank, &cfg));
  wait_ready("creating the world communicator");
  comms_.assign(plan.comms.size(), nullptr);
  for (const CommSpec& c : plan.comms)
    members_.push_back(c.ranks);
  for (size_t i = 0; i < plan.comms.size(); ++i) {
    const auto& members = plan.comms[i].ranks;
    auto it = std::find(members.begin(), members.end(), rank);
    int color = it == members.end() ? NCCL_SPLIT_NOCOLOR : 1;
    int key = it == members.end() ? 0 : int(it - members.begin()); // comm rank = position in the IR's group
    ncclConfig_t c = nonblocking();
    BK_NCCL_CHECK(ncclCommSplit(world_, color, key, &comms_[i], &c));
    wait_ready("splitting communicator " + std::to_string(i));
  }
}

NcclComms::~NcclComms() {
  if (aborted_)
    return;
  for (ncclComm_t c : comms_)
    if (c)
      ncclCommDestroy(c);
  if (world_)
    ncclCommDestroy(world_);
}

void NcclComms::check_async(const std::string& what) const {
  auto check = [&](ncclComm_t c) {
    if (!c)
      return;
    ncclResult_t st = ncclSuccess;
    ncclCommGetAsyncError(c, &st);
    if (st != ncclSuccess && st != ncclInProgress)
      throw GpuError("NCCL asynchronous error '" + std::string(ncclGetErrorString(st)) + "' while " + what +
                     (ncclGetLastError(c) ? std::string(": ") + ncclGetLastError(c) : std::string()));
  };
  check(world_);
  for (ncclComm_t c : comms_)
    check(c);
}

void NcclComms::wait_ready(const std::string& what) const {
  auto t0 = std::chrono::steady_clock::now();
  auto pending = [&] {
    bool any = false;
    auto one = [&](ncclComm_t c) {
      if (!c)
        return;
      ncclResult_t st = ncclSuccess;
      ncclCommGetAsyncError(c, &st);
      if (st == ncclInProgress)
        any = true;
      else if (st != ncclSuccess)
        throw GpuError("NCCL error '" + std::string(ncclGetErrorString(st)) + "' while " + what);
    };
    one(world_);
    for (ncclComm_t c : comms_)
      one(c);
    return any;
  };
  while (pending()) {
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > timeout_s_)
      throw GpuError("timed out after " + std::to_string(int(timeout_s_)) + " s " + what + " (a peer never answered)");
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void NcclComms::attach(char* base, int64_t bytes) {
  base_ = base;
  bytes_ = bytes;
}

void NcclComms::post(const WirePosting& p, cudaStream_t st) {
  ncclComm_t c = comms_.at(size_t(p.comm));
  const std::vector<int>& members = members_[size_t(p.comm)];
  BK_NCCL_CHECK(ncclGroupStart());
  for (const WirePart& part : p.parts) {
    const auto it = std::find(members.begin(), members.end(), part.peer);
    if (!c || it == members.end() || part.offset_bytes + part.bytes > bytes_)
      throw GpuError("op " + std::to_string(part.op) + ": peer " + std::to_string(part.peer) + " or its bytes lie outside communicator " +
                     std::to_string(p.comm) + " or this rank's memory");
    const int peer = int(it - members.begin()); // comm rank = position in the IR's group
    if (part.send)
      BK_NCCL_CHECK(ncclSend(base_ + part.offset_bytes, size_t(part.bytes), ncclUint8, peer, c, st));
    else
      BK_NCCL_CHECK(ncclRecv(base_ + part.offset_bytes, size_t(part.bytes), ncclUint8, peer, c, st));
  }
  BK_NCCL_CHECK(ncclGroupEnd());
  wait_ready("posting op " + std::to_string(p.op)); // non-blocking: enqueued only once ready
}

std::string NcclComms::describe() const {
  int v = 0;
  ncclGetVersion(&v);
  return "nccl " + std::to_string(v);
}

void NcclComms::abort_all() {
  if (aborted_)
    return;
  aborted_ = true;
  for (ncclComm_t c : comms_)
    if (c)
      ncclCommAbort(c);
  if (world_)
    ncclCommAbort(world_);
}

} // namespace cpsim::backend
