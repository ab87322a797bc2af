// Desk check of the wgmma operand layouts on the GPU, before any attention kernel depends on them:
// one warpgroup multiplies random bf16 tiles staged exactly as the Hopper kernels stage them (SW128
// panels, kernels/src/wgmma_helpers.cuh) and the products are compared with the CPU:
//   S = Q K^T   A and B K-major from shared memory, D = 64 and 128 (one and two panels): m64n64k16;
//   O = P V     A from registers in the accumulator-fragment order, B N-major, N = 64 and 128: m64nNk16.
// When the N-major product is wrong, the swapped leading/stride offsets are tried and reported, so a
// failure says which descriptor field is off. Exits 77 (skipped) without an sm_90 GPU.
#include "wgmma_helpers.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

using namespace cpsim::kernels;
using namespace cpsim::kernels::detail;

namespace {

#define CK(call)                                                                                          \
  do {                                                                                                    \
    cudaError_t e_ = (call);                                                                              \
    if (e_ != cudaSuccess) {                                                                              \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__);               \
      std::exit(1);                                                                                       \
    }                                                                                                     \
  } while (0)

/** C[64][64] = A[64][D] B[64][D]^T with both operands staged K-major. */
template <int D> __global__ void qk_probe(const __nv_bfloat16* a, const __nv_bfloat16* b, float* c) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint4 smem[];
  const uint32_t sA = align1024(smem_addr(smem)), sB = sA + kTileRows * D * 2;
  const TileRange tr{0, 0, 1, kTileRows, 0};
  const HeadTensor ta{const_cast<__nv_bfloat16*>(a), D, 0, DType::BF16}, tb{const_cast<__nv_bfloat16*>(b), D, 0, DType::BF16};
  load_tile_sw128<__nv_bfloat16, D>(sA, ta, tr, 0, threadIdx.x);
  load_tile_sw128<__nv_bfloat16, D>(sB, tb, tr, 0, threadIdx.x);
  cp_async_commit();
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();
  float d[32];
  wg_fence();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    wgmma_ss_n64<__nv_bfloat16>(d, kmajor_desc(sA, kk), kmajor_desc(sB, kk), kk > 0);
  wg_commit();
  wg_wait<0>();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int i = 0; i < 32; ++i) {
    const int row = warp * 16 + (lane >> 2) + 8 * ((i >> 1) & 1), col = (i >> 2) * 8 + (lane & 3) * 2 + (i & 1);
    c[row * 64 + col] = d[i];
  }
#endif
}

/** C[64][N] = P[64][64] V[64][N]: P from registers, V staged N-major; lbo/sbo override the descriptor. */
template <int N> __global__ void pv_probe(const __nv_bfloat16* p, const __nv_bfloat16* vv, float* c, uint32_t lbo, uint32_t sbo) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint4 smem[];
  const uint32_t sV = align1024(smem_addr(smem));
  const TileRange tr{0, 0, 1, kTileRows, 0};
  const HeadTensor tv{const_cast<__nv_bfloat16*>(vv), N, 0, DType::BF16};
  load_tile_sw128<__nv_bfloat16, N>(sV, tv, tr, 0, threadIdx.x);
  cp_async_commit();
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, r = warp * 16 + (lane >> 2);
  auto pair = [&](int row, int col) {
    __nv_bfloat162 x{p[row * 64 + col], p[row * 64 + col + 1]};
    return *reinterpret_cast<uint32_t*>(&x);
  };
  float d[N / 2];
  for (int i = 0; i < N / 2; ++i)
    d[i] = 0.f;
  wg_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const int c0 = kk * 16 + (lane & 3) * 2;
    const uint32_t f[4] = {pair(r, c0), pair(r + 8, c0), pair(r, c0 + 8), pair(r + 8, c0 + 8)};
    const uint64_t desc = sw128_desc(sV + uint32_t(kk * 16 * 128), lbo, sbo);
    if constexpr (N == 128)
      wgmma_rs_n128_tb<__nv_bfloat16>(d, f, desc, 1);
    else
      wgmma_rs_n64_tb<__nv_bfloat16>(d, f, desc, 1);
  }
  wg_commit();
  wg_wait<0>();
  for (int i = 0; i < N / 2; ++i) {
    const int row = r + 8 * ((i >> 1) & 1), col = (i >> 2) * 8 + (lane & 3) * 2 + (i & 1);
    c[row * N + col] = d[i];
  }
#endif
}

std::mt19937 rng(std::random_device{}());

std::vector<__nv_bfloat16> random_bf16(size_t n, std::vector<double>& exact) {
  std::normal_distribution<float> nd;
  std::vector<__nv_bfloat16> h(n);
  exact.resize(n);
  for (size_t i = 0; i < n; ++i) {
    h[i] = __float2bfloat16(nd(rng));
    exact[i] = double(__bfloat162float(h[i]));
  }
  return h;
}

template <class T> T* upload(const std::vector<T>& h) {
  T* d = nullptr;
  CK(cudaMalloc(&d, h.size() * sizeof(T)));
  CK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

double rel_err(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::isfinite(num) ? std::sqrt(num / den) : INFINITY;
}

template <int D> bool check_qk() {
  std::vector<double> a, b;
  auto ha = random_bf16(64 * D, a), hb = random_bf16(64 * D, b);
  auto* da = upload(ha);
  auto* db = upload(hb);
  float* dc = nullptr;
  CK(cudaMalloc(&dc, 64 * 64 * 4));
  CK(cudaMemset(dc, 0xFF, 64 * 64 * 4));
  const int smem = 2 * 64 * D * 2 + 1024;
  CK(cudaFuncSetAttribute(qk_probe<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  qk_probe<D><<<1, 128, smem>>>(da, db, dc);
  CK(cudaGetLastError());
  std::vector<float> c(64 * 64);
  CK(cudaMemcpy(c.data(), dc, c.size() * 4, cudaMemcpyDeviceToHost));
  std::vector<double> want(64 * 64, 0.0);
  for (int i = 0; i < 64; ++i)
    for (int j = 0; j < 64; ++j)
      for (int k = 0; k < D; ++k)
        want[i * 64 + j] += a[i * D + k] * b[j * D + k];
  const double e = rel_err(c, want);
  std::printf("Q K^T  K-major x K-major, D = %3d (m64n64k16 x %d): rel. error %.2e %s\n", D, D / 16, e, e < 1e-5 ? "ok" : "WRONG");
  cudaFree(da), cudaFree(db), cudaFree(dc);
  return e < 1e-5;
}

template <int N> double run_pv(uint32_t lbo, uint32_t sbo) {
  std::vector<double> p, v;
  auto hp = random_bf16(64 * 64, p), hv = random_bf16(64 * N, v);
  auto* dp = upload(hp);
  auto* dv = upload(hv);
  float* dc = nullptr;
  CK(cudaMalloc(&dc, 64 * N * 4));
  CK(cudaMemset(dc, 0xFF, 64 * N * 4));
  const int smem = 64 * N * 2 + 1024;
  CK(cudaFuncSetAttribute(pv_probe<N>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  pv_probe<N><<<1, 128, smem>>>(dp, dv, dc, lbo, sbo);
  CK(cudaGetLastError());
  std::vector<float> c(64 * N);
  CK(cudaMemcpy(c.data(), dc, c.size() * 4, cudaMemcpyDeviceToHost));
  std::vector<double> want(64 * N, 0.0);
  for (int i = 0; i < 64; ++i)
    for (int k = 0; k < 64; ++k)
      for (int j = 0; j < N; ++j)
        want[i * N + j] += p[i * 64 + k] * v[k * N + j];
  cudaFree(dp), cudaFree(dv), cudaFree(dc);
  return rel_err(c, want);
}

template <int N> bool check_pv() {
  const double e = run_pv<N>(kPanelBytes, kSwizzleAtomBytes);
  std::printf("P V    registers x N-major, N = %3d (m64n%dk16 x 4): rel. error %.2e %s\n", N, N, e, e < 1e-5 ? "ok" : "WRONG");
  if (e >= 1e-5) {
    const double swapped = run_pv<N>(kSwizzleAtomBytes, kPanelBytes);
    std::printf("       with leading/stride byte offsets swapped (%u, %u): rel. error %.2e\n", kSwizzleAtomBytes,
                unsigned(kPanelBytes), swapped);
  }
  return e < 1e-5;
}

} // namespace

int main() {
  int n = 0, major = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("skipped: no CUDA device\n");
    return 77;
  }
  CK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
  if (major != 9) {
    std::printf("skipped: wgmma needs compute capability 9.0, this device is %d.x\n", major);
    return 77;
  }
  bool ok = check_qk<64>() & check_qk<128>() & check_pv<64>() & check_pv<128>();
  CK(cudaDeviceSynchronize());
  std::printf(ok ? "all wgmma layouts ok\n" : "FAILED\n");
  return ok ? 0 : 1;
}
