// Argument checks and the choice of implementation. Arguments no implementation can run are
// KernelErrors naming the argument, its value and the reason; the fast path additionally needs
// 16-byte aligned rows and says so instead of silently running the slow one.
#include "cuda_check.hpp"
#include "launchers.hpp"

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

} // namespace

void attention_forward(const AttnArgs& a, const DevicePlan& plan, Impl impl) {
  check_common(a, plan, false);
  if (impl == Impl::FAST) {
    const std::string why = detail::mma_unsupported(a);
    need(why.empty(), "the fast path cannot run: " + why);
    detail::forward_mma(a, plan);
  } else {
    detail::forward_reference(a, plan);
  }
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
  if (impl == Impl::FAST) {
    const std::string why = detail::mma_backward_unsupported(a);
    need(why.empty(), "the fast backward cannot run: " + why);
    detail::backward_mma(a, plan);
  } else {
    detail::backward_reference(a, plan);
  }
}

} // namespace cpsim::kernels
