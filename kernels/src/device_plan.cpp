// Uploads a KernelPlan and its mask into one device allocation (one cudaMalloc, one copy).
#include "device_plan.hpp"

#include "cuda_check.hpp"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

namespace cpsim::kernels {

int dtype_bytes(DType d) { return d == DType::FP32 ? 4 : 2; }

namespace {

/** Appends arrays to a host image, each 16-byte aligned, remembering their offsets. */
struct Image {
  std::vector<char> bytes;
  template <class T> size_t add(const std::vector<T>& v) {
    size_t off = (bytes.size() + 15) / 16 * 16;
    bytes.resize(off + v.size() * sizeof(T));
    if (!v.empty())
      std::memcpy(bytes.data() + off, v.data(), v.size() * sizeof(T));
    return off;
  }
};

} // namespace

DevicePlan::DevicePlan(const KernelPlan& p, const MaskDesc& m, cudaStream_t stream) {
  Image img;
  const size_t qt = img.add(p.q_tiles), kt = img.add(p.k_tiles);
  const size_t fo = img.add(p.fwd.offsets), fn = img.add(p.fwd.n_full), fi = img.add(p.fwd.idx);
  const size_t bo = img.add(p.bwd.offsets), bn = img.add(p.bwd.n_full), bi = img.add(p.bwd.idx);
  const size_t qo = img.add(p.q_order), ko = img.add(p.k_order);
  std::vector<uint8_t> bits;
  std::vector<int64_t> bits_off;
  for (const auto& l : m.layouts) {
    bits_off.push_back(int64_t(bits.size()));
    bits.insert(bits.end(), l.begin(), l.end());
  }
  const size_t lb = img.add(bits), lo = img.add(bits_off), ln = img.add(m.layout_n_blocks);
  std::vector<int32_t> ranges;
  std::vector<int64_t> ranges_off;
  for (const auto& r : m.row_ranges) {
    ranges_off.push_back(r.empty() ? -1 : int64_t(ranges.size()));
    ranges.insert(ranges.end(), r.begin(), r.end());
  }
  const size_t ra = img.add(ranges), ro = img.add(ranges_off);
  KN_CUDA_CHECK(cudaMalloc(&mem_, std::max<size_t>(img.bytes.size(), 16)));
  KN_CUDA_CHECK(cudaMemcpyAsync(mem_, img.bytes.data(), img.bytes.size(), cudaMemcpyHostToDevice, stream));
  KN_CUDA_CHECK(cudaStreamSynchronize(stream)); // the host image dies here
  char* b = static_cast<char*>(mem_);
  view_ = new View;
  view_->q_tiles = reinterpret_cast<const TileRange*>(b + qt);
  view_->k_tiles = reinterpret_cast<const TileRange*>(b + kt);
  view_->fwd_off = reinterpret_cast<const int32_t*>(b + fo);
  view_->fwd_nfull = reinterpret_cast<const int32_t*>(b + fn);
  view_->fwd_idx = reinterpret_cast<const int32_t*>(b + fi);
  view_->bwd_off = reinterpret_cast<const int32_t*>(b + bo);
  view_->bwd_nfull = reinterpret_cast<const int32_t*>(b + bn);
  view_->bwd_idx = reinterpret_cast<const int32_t*>(b + bi);
  view_->q_order = reinterpret_cast<const int32_t*>(b + qo);
  view_->k_order = reinterpret_cast<const int32_t*>(b + ko);
  view_->n_q = int32_t(p.q_tiles.size());
  view_->n_k = int32_t(p.k_tiles.size());
  view_->head_slots = p.head_slots;
  view_->causal = m.causal ? 1 : 0;
  view_->window = m.window;
  view_->layout_block = m.layout_block;
  view_->bits = reinterpret_cast<const uint8_t*>(b + lb);
  view_->bits_off = reinterpret_cast<const int64_t*>(b + lo);
  view_->n_blocks = reinterpret_cast<const int64_t*>(b + ln);
  view_->ranges = reinterpret_cast<const int32_t*>(b + ra);
  view_->ranges_off = reinterpret_cast<const int64_t*>(b + ro);
  view_->n_range_seqs = int32_t(ranges_off.size());
  n_q_tiles_ = view_->n_q;
  n_k_tiles_ = view_->n_k;
  head_slots_ = p.head_slots;
}

void DevicePlan::release() {
  if (mem_)
    cudaFree(mem_); // a destructor must not throw; a failure here leaks at worst
  delete view_;
  mem_ = nullptr;
  view_ = nullptr;
}

DevicePlan::~DevicePlan() { release(); }

DevicePlan::DevicePlan(DevicePlan&& o) noexcept { *this = std::move(o); }

DevicePlan& DevicePlan::operator=(DevicePlan&& o) noexcept {
  if (this != &o) {
    release();
    mem_ = o.mem_;
    view_ = o.view_;
    n_q_tiles_ = o.n_q_tiles_;
    n_k_tiles_ = o.n_k_tiles_;
    head_slots_ = o.head_slots_;
    o.mem_ = nullptr;
    o.view_ = nullptr;
  }
  return *this;
}

bool gpu_available(std::string* why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    if (why)
      *why = e != cudaSuccess ? std::string(cudaGetErrorString(e)) : "no CUDA device";
    cudaGetLastError();
    return false;
  }
  return true;
}

} // namespace cpsim::kernels
