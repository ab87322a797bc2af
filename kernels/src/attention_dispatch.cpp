// Argument checks and the choice of implementation. Arguments no implementation can run are
// KernelErrors naming the argument, its value and the reason; the tensor-core paths additionally need
// 16-byte aligned rows and say so instead of silently running the slow one. Impl::FAST resolves to the
// mma.sync kernels unless CPSIM_KERNEL_IMPL says otherwise (see fast_impl).
#include "cuda_check.hpp"
#include "launchers.hpp"

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

namespace cpsim::kernels {

namespace {

void need(bool ok, const std::string& what) {
  if (!ok)
    throw KernelError("attention kernels: " + what);
}

void check_tensor(const HeadTensor& t, const char* name, DType want) {
  need(t.data != nullptr, std::string(name) + " is null");
  need(t.dtype == want, std::string(name) + " has the wrong element type");
  need(t.row_stride > 0, std::string(name) + ".row_stride " + std::to_string(t.row_stride) + " must be positive");
}

void check_common(const AttnArgs& a, const DevicePlan& plan, bool backward) {
  need(a.head_dim == 64 || a.head_dim == 128, "head_dim " + std::to_string(a.head_dim) + " is not supported (64 or 128)");
  need(a.dtype == DType::BF16 || a.dtype == DType::FP16, "dtype must be bf16 or fp16");
  need(a.head_begin >= 0 && a.head_end > a.head_begin,
       "head range [" + std::to_string(a.head_begin) + ", " + std::to_string(a.head_end) + ") is empty");
  need(a.heads_per_kv >= 1, "heads_per_kv " + std::to_string(a.heads_per_kv) + " must be at least 1");
  need(plan.head_slots() == 1 || plan.head_slots() == a.head_end - a.head_begin,
       "the plan has " + std::to_string(plan.head_slots()) + " head slots but the call computes " +
           std::to_string(a.head_end - a.head_begin) + " heads");
  check_tensor(a.q, "q", a.dtype);
  check_tensor(a.k, "k", a.dtype);
  check_tensor(a.v, "v", a.dtype);
  if (!backward) {
    check_tensor(a.o, "o", a.dtype);
    check_tensor(a.lse, "lse", DType::FP32);
    return;
  }
  check_tensor(a.out, "out", a.dtype);
  check_tensor(a.lse_in, "lse_in", DType::FP32);
  check_tensor(a.dout, "dout", a.dtype);
  check_tensor(a.dq, "dq", a.dq_accumulate ? DType::FP32 : a.dtype);
  check_tensor(a.dk, "dk", a.dtype);
  check_tensor(a.dv, "dv", a.dtype);
}

/** Compute capability major of the current device, cached per device (the query is not free). */
int device_major() {
  int dev = 0;
  KN_CUDA_CHECK(cudaGetDevice(&dev));
  static std::mutex mu;
  static std::map<int, int> major;
  std::lock_guard<std::mutex> lock(mu);
  auto it = major.find(dev);
  if (it == major.end()) {
    int m = 0;
    KN_CUDA_CHECK(cudaDeviceGetAttribute(&m, cudaDevAttrComputeCapabilityMajor, dev));
    it = major.emplace(dev, m).first;
  }
  return it->second;
}

Impl resolve(Impl impl) {
  if (impl == Impl::FAST)
    return fast_impl();
  std::string why;
  need(impl_available(impl, &why), "the " + to_string(impl) + " path cannot run here: " + why);
  return impl;
}

} // namespace

std::string to_string(Impl impl) {
  switch (impl) {
  case Impl::REFERENCE: return "reference";
  case Impl::MMA: return "mma";
  case Impl::WGMMA: return "wgmma";
  case Impl::FAST: return "fast";
  }
  return "?";
}

bool impl_available(Impl impl, std::string* why) {
  if (impl != Impl::WGMMA)
    return true;
  const int major = device_major();
  if (major == 9)
    return true;
  if (why)
    *why = "wgmma needs a compute capability 9.0 device (H100, H200); this one is " + std::to_string(major) + ".x";
  return false;
}

// The wgmma kernels were written and compiled on 2026-12-07 while no GPU could be lent; until the GPU tests
// (cpsim_wgmma_layout_tests, cpsim_kernel_gpu_tests) have passed on an H100/H200, the default stays on the
// verified mma.sync kernels. CPSIM_KERNEL_IMPL=wgmma (or mma) chooses for every caller of Impl::FAST - the
// backend, calibration, the benchmark's default - so a GPU session can verify, time and calibrate the wgmma
// kernels without a rebuild.
Impl fast_impl() {
  static const Impl chosen = [] {
    const char* env = std::getenv("CPSIM_KERNEL_IMPL");
    const std::string v = env ? env : "";
    if (v.empty() || v == "mma")
      return Impl::MMA;
    if (v == "wgmma")
      return Impl::WGMMA;
    throw KernelError("CPSIM_KERNEL_IMPL='" + v + "': must be mma or wgmma");
  }();
  std::string why;
  need(impl_available(chosen, &why), "CPSIM_KERNEL_IMPL=" + to_string(chosen) + ": " + why);
  return chosen;
}

void attention_forward(const AttnArgs& a, const DevicePlan& plan, Impl impl) {
  check_common(a, plan, false);
  impl = resolve(impl);
  if (impl == Impl::REFERENCE)
    return detail::forward_reference(a, plan);
  const std::string why = detail::mma_unsupported(a);
  need(why.empty(), "the " + to_string(impl) + " path cannot run: " + why);
  impl == Impl::WGMMA ? detail::forward_wgmma(a, plan) : detail::forward_mma(a, plan);
}

bool fast_path_supported(const AttnArgs& a, std::string* why) {
  std::string w = a.o.data ? detail::mma_unsupported(a) : std::string();
  if (w.empty() && a.dq.data)
    w = detail::mma_backward_unsupported(a);
  if (why)
    *why = w;
  return w.empty();
}

void attention_backward(const AttnArgs& a, const DevicePlan& plan, Impl impl) {
  check_common(a, plan, true);
  impl = resolve(impl);
  if (impl == Impl::REFERENCE)
    return detail::backward_reference(a, plan);
  const std::string why = detail::mma_backward_unsupported(a);
  need(why.empty(), "the " + to_string(impl) + " backward cannot run: " + why);
  impl == Impl::WGMMA ? detail::backward_wgmma(a, plan) : detail::backward_mma(a, plan);
}

} // namespace cpsim::kernels
