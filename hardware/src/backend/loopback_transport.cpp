// The loopback transport (see the header): the fit decision, the IPC exchange, and the postings as
// stream-side flag writes, flag waits and copies.
#include "loopback_transport.hpp"

#include "gpu_check.hpp"
#include "loopback_kernels.hpp"

#include "cpsim/hardware/backend/loopback_fit.hpp"
#include "cpsim/hardware/backend/rendezvous.hpp"

#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

namespace cpsim::backend {

namespace {
/** What a rank publishes about its memory for the others to open. */
struct Exported {
  cudaIpcMemHandle_t memory;
  cudaIpcMemHandle_t flags;
  int64_t bytes;
  int32_t flag_count;
};

void check_driver(CUresult r, const char* call, const char* file, int line) {
  if (r == CUDA_SUCCESS)
    return;
  void* fn = nullptr; // the driver's name for the code, found like the stream memory operations
  const char* name = nullptr;
  if (cudaGetDriverEntryPointByVersion("cuGetErrorName", &fn, 12000, cudaEnableDefault, nullptr) == cudaSuccess && fn)
    reinterpret_cast<PFN_cuGetErrorName_v6000>(fn)(r, &name);
  gpu_fail("CUDA driver", call, (name ? std::string(name) : "CUresult " + std::to_string(int(r))).c_str(), file, line);
}
#define BK_CU_CHECK(call) check_driver((call), #call, __FILE__, __LINE__)

std::string name_of(const char* what, int rank) { return std::string("loopback_") + what + "_" + std::to_string(rank); }
} // namespace

LoopbackTransport::LoopbackTransport(const Schedule& s, const ExecPlan& plan, const WirePlan& wire, const Workload& w,
                                     const RunOptions& o, int device)
    : wire_(wire.ranks.at(size_t(o.rank))), opt_(o), rank_(o.rank), world_(o.world), device_(device),
      ir_streams_(s.streams.size()) {
  const bool backward = s.pass == PassKind::FWD_BWD;
  if (o.loopback_sync != "kernels") {
    cudaDriverEntryPointQueryResult qa = cudaDriverEntryPointSymbolNotFound, qb = cudaDriverEntryPointSymbolNotFound;
    BK_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuStreamWaitValue32", &wait_value_, 12000, cudaEnableDefault, &qa));
    BK_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuStreamWriteValue32", &write_value_, 12000, cudaEnableDefault, &qb));
    memops_ = wait_value_ && write_value_ && qa == cudaDriverEntryPointSuccess && qb == cudaDriverEntryPointSuccess;
    if (memops_) { // a driver may export them and still refuse them on this device: try once
      uint32_t* probe = nullptr;
      cudaStream_t st = nullptr;
      BK_CUDA_CHECK(cudaMalloc(&probe, sizeof(uint32_t)));
      BK_CUDA_CHECK(cudaMemset(probe, 0, sizeof(uint32_t)));
      BK_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
      const auto dp = CUdeviceptr(reinterpret_cast<uintptr_t>(probe));
      CUresult a = reinterpret_cast<PFN_cuStreamWriteValue32_v11070>(write_value_)(st, dp, 1, CU_STREAM_WRITE_VALUE_DEFAULT);
      CUresult b = a == CUDA_SUCCESS ? reinterpret_cast<PFN_cuStreamWaitValue32_v11070>(wait_value_)(st, dp, 1, CU_STREAM_WAIT_VALUE_GEQ)
                                     : a;
      BK_CUDA_CHECK(cudaStreamSynchronize(st));
      BK_CUDA_CHECK(cudaStreamDestroy(st));
      BK_CUDA_CHECK(cudaFree(probe));
      if (b == CUDA_ERROR_NOT_SUPPORTED)
        memops_ = false;
      else
        BK_CU_CHECK(b);
    }
    if (!memops_ && o.loopback_sync == "memops")
      throw GpuError("--loopback-sync memops: the driver offers no cuStreamWaitValue32/cuStreamWriteValue32 on GPU " +
                     std::to_string(device) + "; use --loopback-sync kernels");
  }
  // the fit is decided once every rank's context exists (each costs memory) and before any rank allocates
  const std::string& dir = o.rendezvous_dir;
  publish_file(dir, name_of("context", rank_), "");
  if (rank_ == 0) {
    for (int r = 1; r < world_; ++r)
      wait_for_file(dir, name_of("context", r), o.timeout_s, "rank " + std::to_string(r) + "'s CUDA context (--loopback)");
    size_t free_b = 0, total_b = 0;
    BK_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    const int64_t avail = o.memory_limit_bytes > 0 ? std::min<int64_t>(o.memory_limit_bytes, int64_t(free_b)) : int64_t(free_b);
    const std::string err = loopback_fit_error(loopback_need(plan, w, o.check, backward), avail, device);
    if (!err.empty())
      throw GpuError(err);
    publish_file(dir, "loopback_fits", "");
  } else {
    wait_for_file(dir, "loopback_fits", o.timeout_s,
                  "rank 0's decision whether all ranks fit on GPU " + std::to_string(device) + " (--loopback)");
  }
}

LoopbackTransport::~LoopbackTransport() {
  if (std::uncaught_exceptions() > 0)
    return; // leaving on an error: freeing could wait on streams held by a peer's flag, and the process exits next
  for (auto& [st, f] : fanouts_) {
    for (auto e : f.joins)
      cudaEventDestroy(e);
    for (auto s : f.streams)
      cudaStreamDestroy(s);
    if (f.fork)
      cudaEventDestroy(f.fork);
  }
  if (!detached_)
    for (int r = 0; r < int(peer_base_.size()); ++r) {
      if (peer_base_[size_t(r)])
        cudaIpcCloseMemHandle(peer_base_[size_t(r)]);
      if (peer_flags_[size_t(r)])
        cudaIpcCloseMemHandle(peer_flags_[size_t(r)]);
    }
  if (flags_)
    cudaFree(flags_);
}

void LoopbackTransport::attach(char* base, int64_t bytes) {
  base_ = base;
  bytes_ = bytes;
  const size_t flag_bytes = sizeof(uint32_t) * size_t(std::max(wire_.flags, 1));
  BK_CUDA_CHECK(cudaMalloc(&flags_, flag_bytes));
  BK_CUDA_CHECK(cudaMemset(flags_, 0, flag_bytes));
  BK_CUDA_CHECK(cudaDeviceSynchronize()); // zero before any peer can see the handle
  Exported e{};
  BK_CUDA_CHECK(cudaIpcGetMemHandle(&e.memory, base_));
  BK_CUDA_CHECK(cudaIpcGetMemHandle(&e.flags, flags_));
  e.bytes = bytes;
  e.flag_count = wire_.flags;
  const std::string& dir = opt_.rendezvous_dir;
  publish_file(dir, name_of("ipc", rank_), std::string(reinterpret_cast<const char*>(&e), sizeof e));
  peer_base_.assign(size_t(world_), nullptr);
  peer_flags_.assign(size_t(world_), nullptr);
  peer_bytes_.assign(size_t(world_), 0);
  peer_flag_count_.assign(size_t(world_), 0);
  for (int r = 0; r < world_; ++r) {
    if (r == rank_)
      continue;
    const std::string got =
        wait_for_file(dir, name_of("ipc", r), opt_.timeout_s, "rank " + std::to_string(r) + "'s memory handles (--loopback)");
    if (got.size() != sizeof(Exported))
      throw GpuError("rank " + std::to_string(r) + "'s memory handles file has " + std::to_string(got.size()) + " bytes, not " +
                     std::to_string(sizeof(Exported)));
    Exported pe{};
    std::memcpy(&pe, got.data(), sizeof pe);
    void* p = nullptr;
    BK_CUDA_CHECK(cudaIpcOpenMemHandle(&p, pe.memory, cudaIpcMemLazyEnablePeerAccess));
    peer_base_[size_t(r)] = static_cast<char*>(p);
    BK_CUDA_CHECK(cudaIpcOpenMemHandle(&p, pe.flags, cudaIpcMemLazyEnablePeerAccess));
    peer_flags_[size_t(r)] = static_cast<uint32_t*>(p);
    peer_bytes_[size_t(r)] = pe.bytes;
    peer_flag_count_[size_t(r)] = pe.flag_count;
  }
  // every address a posting will touch, checked once here rather than trusted on the GPU
  for (const WirePosting& post : wire_.postings)
    for (const WirePart& part : post.parts) {
      const auto peer = size_t(part.peer);
      const bool ok = part.peer >= 0 && part.peer < world_ && part.peer != rank_ && part.offset_bytes >= 0 &&
                      part.offset_bytes + part.bytes <= bytes_ && part.peer_offset_bytes >= 0 &&
                      part.peer_offset_bytes + part.bytes <= peer_bytes_[peer] && part.flag >= 0 &&
                      part.flag < wire_.flags && part.peer_flag >= 0 && part.peer_flag < peer_flag_count_[peer];
      if (!ok)
        throw GpuError("op " + std::to_string(part.op) + ": its " + (part.send ? "send to" : "receive from") + " rank " +
                       std::to_string(part.peer) + " lies outside the memory or flags the two ranks exported");
    }
  for (const WirePosting& post : wire_.postings) {
    const size_t n = size_t(std::count_if(post.parts.begin(), post.parts.end(), [](const WirePart& x) { return !x.send; }));
    if (n < 2)
      continue;
    Fanout& f = fanouts_[post.stream];
    if (!f.fork)
      BK_CUDA_CHECK(cudaEventCreateWithFlags(&f.fork, cudaEventDisableTiming));
    while (f.streams.size() < n) {
      cudaStream_t st = nullptr;
      cudaEvent_t e = nullptr;
      BK_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
      f.streams.push_back(st);
      BK_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      f.joins.push_back(e);
    }
  }
  // a stream held on a flag holds every stream that shares its hardware queue: more streams than queues can
  // stall a peer's progress behind an unrelated wait (run_rank asks for CUDA_DEVICE_MAX_CONNECTIONS=32)
  size_t side = 0;
  for (const auto& [stream, f] : fanouts_)
    side += f.streams.size();
  const char* env = std::getenv("CUDA_DEVICE_MAX_CONNECTIONS");
  const size_t queues = env && std::atoi(env) > 0 ? size_t(std::atoi(env)) : 8;
  if (ir_streams_ + side > queues)
    std::fprintf(stderr, "cpsim: rank %d: warning: --loopback uses %zu CUDA streams (%zu of the plan, %zu for receives) but "
                 "CUDA_DEVICE_MAX_CONNECTIONS gives %zu hardware queues: a wait may stall unrelated streams, ending in a timeout\n",
                 rank_, ir_streams_ + side, ir_streams_, side, queues);
}

void LoopbackTransport::detach() {
  if (detached_ || peer_base_.empty())
    return;
  BK_CUDA_CHECK(cudaDeviceSynchronize());
  for (int r = 0; r < world_; ++r) {
    if (peer_base_[size_t(r)])
      BK_CUDA_CHECK(cudaIpcCloseMemHandle(peer_base_[size_t(r)]));
    if (peer_flags_[size_t(r)])
      BK_CUDA_CHECK(cudaIpcCloseMemHandle(peer_flags_[size_t(r)]));
  }
  detached_ = true;
  const std::string& dir = opt_.rendezvous_dir;
  publish_file(dir, name_of("closed", rank_), "");
  for (int r = 0; r < world_; ++r)
    if (r != rank_)
      wait_for_file(dir, name_of("closed", r), opt_.timeout_s,
                    "rank " + std::to_string(r) + " to close its view of this rank's memory (--loopback)");
}

void LoopbackTransport::write_flag(uint32_t* flag, cudaStream_t st) {
  if (memops_) {
    BK_CU_CHECK(reinterpret_cast<PFN_cuStreamWriteValue32_v11070>(write_value_)(
        st, CUdeviceptr(reinterpret_cast<uintptr_t>(flag)), epoch_, CU_STREAM_WRITE_VALUE_DEFAULT)); // fenced after the copies before it
  } else {
    write_flag_kernel(flag, epoch_, st);
    BK_CUDA_CHECK(cudaGetLastError());
  }
}

void LoopbackTransport::wait_flag(const uint32_t* flag, cudaStream_t st) {
  if (memops_) {
    BK_CU_CHECK(reinterpret_cast<PFN_cuStreamWaitValue32_v11070>(wait_value_)(
        st, CUdeviceptr(reinterpret_cast<uintptr_t>(flag)), epoch_, CU_STREAM_WAIT_VALUE_GEQ));
  } else {
    wait_flag_kernel(flag, epoch_, st);
    BK_CUDA_CHECK(cudaGetLastError());
  }
}

void LoopbackTransport::receive(const WirePart& part, cudaStream_t st) {
  const auto peer = size_t(part.peer);
  wait_flag(flags_ + part.flag, st); // the sender's stream has reached its send: the bytes are in place
  if (part.bytes > 0)
    BK_CUDA_CHECK(cudaMemcpyAsync(base_ + part.offset_bytes, peer_base_[peer] + part.peer_offset_bytes, size_t(part.bytes),
                                  cudaMemcpyDeviceToDevice, st));
  write_flag(peer_flags_[peer] + part.peer_flag, st); // consumed: the sender's buffer is free again
}

void LoopbackTransport::post(const WirePosting& p, cudaStream_t st) {
  std::vector<const WirePart*> recvs;
  for (const WirePart& part : p.parts) {
    if (part.send)
      write_flag(peer_flags_[size_t(part.peer)] + part.peer_flag, st); // ready, before anything of the group waits
    else
      recvs.push_back(&part);
  }
  // NCCL progresses a group's receives together: one waiting in line behind another could deadlock where NCCL
  // would not (a peer that sends only once another receive of this group has completed), so each gets a side stream
  Fanout* f = nullptr;
  if (recvs.size() == 1) {
    receive(*recvs[0], st);
  } else if (recvs.size() > 1) {
    f = &fanouts_.at(p.stream); // attach() made one side stream per receive
    BK_CUDA_CHECK(cudaEventRecord(f->fork, st));
    for (size_t i = 0; i < recvs.size(); ++i) {
      BK_CUDA_CHECK(cudaStreamWaitEvent(f->streams[i], f->fork));
      receive(*recvs[i], f->streams[i]);
      BK_CUDA_CHECK(cudaEventRecord(f->joins[i], f->streams[i]));
    }
  }
  for (const WirePart& part : p.parts)
    if (part.send)
      wait_flag(flags_ + part.flag, st); // the send completes once its bytes have left (the receiver copied them)
  if (f)
    for (size_t i = 0; i < recvs.size(); ++i)
      BK_CUDA_CHECK(cudaStreamWaitEvent(st, f->joins[i]));
}

std::string LoopbackTransport::describe() const {
  return "loopback on GPU " + std::to_string(device_) + ", " + (memops_ ? "stream memory operations" : "spin kernels");
}

} // namespace cpsim::backend
