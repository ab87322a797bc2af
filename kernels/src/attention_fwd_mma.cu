// The fast forward path (FlashAttention-2 structure on tensor cores, sm_80 and sm_90): a CTA of 4
// warps owns 64 query rows of one head; each warp holds 16 rows of Q as mma fragments, walks the
// plan's key tiles (K/V double-buffered in shared memory by cp.async), computes S = QK^T with
// mma.sync m16n8k16 (fp32 accumulation), masks only the partial tiles, updates the online softmax
// in registers and accumulates O += PV with P kept in registers. Shared-memory rows are XOR
// swizzled in 16-byte chunks so that ldmatrix reads hit 8 different bank groups.
#include "cuda_check.hpp"
#include "kernel_common.cuh"
#include "launchers.hpp"
#include "mma_helpers.cuh"

namespace cpsim::kernels::detail {

namespace {

template <class T, int D> __global__ void __launch_bounds__(kThreads) fwd_mma_kernel(AttnArgs a, DevicePlan::View v, float scale_log2) {
  extern __shared__ uint4 smem[];
  constexpr int kTileBytes = kTileRows * D * 2;
  const int n_heads = a.head_end - a.head_begin; // 1-D grid: (tile in launch order) x head, heaviest tiles first
  const int qt = v.q_order[blockIdx.x / n_heads], hi = int(blockIdx.x % n_heads), h = a.head_begin + hi, g = h / a.heads_per_kv;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const TileRange tq = v.q_tiles[qt];
  const int item = (v.head_slots == 1 ? 0 : hi) * v.n_q + qt;
  const int e0 = v.fwd_off[item], e1 = v.fwd_off[item + 1], n_full = v.fwd_nfull[item];
  const uint32_t sQ = smem_addr(smem);
  auto sK = [&](int st) { return sQ + uint32_t(kTileBytes * (1 + st)); };
  auto sV = [&](int st) { return sQ + uint32_t(kTileBytes * (3 + st)); };

  load_tile<T, D>(sQ, a.q, tq, h);
  if (e0 < e1) {
    const TileRange tk = v.k_tiles[v.fwd_idx[e0]];
    load_tile<T, D>(sK(0), a.k, tk, g);
    load_tile<T, D>(sV(0), a.v, tk, g);
  }
  cp_async_commit();

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i)
    o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  uint32_t qf[D / 16][4];
  const int r_lo = warp * 16 + (lane >> 2); // this thread's two rows: r_lo and r_lo + 8
  const int64_t qpos[2] = {tq.pos0 + int64_t(r_lo) * tq.pos_stride, tq.pos0 + int64_t(r_lo + 8) * tq.pos_stride};

  for (int e = e0; e < e1; ++e) {
    const int st = (e - e0) & 1;
    if (e + 1 < e1) {
      const TileRange tn = v.k_tiles[v.fwd_idx[e + 1]];
      load_tile<T, D>(sK(st ^ 1), a.k, tn, g);
      load_tile<T, D>(sV(st ^ 1), a.v, tn, g);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (e == e0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        ldsm_x4(sQ + swz<D>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4)), qf[kk]);
    }
    // S = Q K^T: 16 rows x 64 keys per warp, 8 n-tiles of 8 keys
    float s[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i)
      s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t b[4];
        ldsm_x4(sK(st) + swz<D>(np * 16 + ((lane >> 4) << 3) + (lane & 7), kk * 2 + ((lane >> 3) & 1)), b);
        mma16816<T>(s[2 * np], qf[kk], b[0], b[1]);
        mma16816<T>(s[2 * np + 1], qf[kk], b[2], b[3]);
      }
    if (e - e0 >= n_full) { // partial tile: mask per element on the original positions
      const TileRange tk = v.k_tiles[v.fwd_idx[e]];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int key = nt * 8 + (lane & 3) * 2 + (c & 1);
          if (key >= tk.n || r_lo + 8 * (c >> 1) >= tq.n || !plan_visible(v, tq.seq, qpos[c >> 1], tk.pos0 + int64_t(key) * tk.pos_stride))
            s[nt][c] = -INFINITY;
        }
    }
    // online softmax, rows r_lo (c = 0, 1) and r_lo + 8 (c = 2, 3); a quad of lanes shares a row
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
        mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[r], mx * scale_log2);
      const float base = m_new == -INFINITY ? 0.f : m_new; // a row with nothing visible yet stays at 0
      const float corr = exp2f(m[r] - base);
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int c = 2 * r; c < 2 * r + 2; ++c) {
          s[nt][c] = exp2f(fmaf(s[nt][c], scale_log2, -base));
          sum += s[nt][c];
        }
      l[r] = l[r] * corr + sum;
      m[r] = m_new;
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        o[dn][2 * r] *= corr;
        o[dn][2 * r + 1] *= corr;
      }
    }
    // O += P V: P (16 x 64) as four 16x16 A fragments straight from the S accumulators
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint32_t pa[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                              pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t b[4];
        ldsm_x4_trans(sV(st) + swz<D>(kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7), dp * 2 + (lane >> 4)), b);
        mma16816<T>(o[2 * dp], pa, b[0], b[1]);
        mma16816<T>(o[2 * dp + 1], pa, b[2], b[3]);
      }
    }
    __syncthreads(); // the next iteration's prefetch overwrites this stage
  }
  cp_async_wait<0>();

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    const int row = r_lo + 8 * r;
    if (row >= tq.n)
      continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
    T* op = at<T>(a.o, tq.row0 + row, h, D) + (lane & 3) * 2;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn)
      *reinterpret_cast<uint32_t*>(op + dn * 8) = pack2<T>(o[dn][2 * r] * inv, o[dn][2 * r + 1] * inv);
    if ((lane & 3) == 0)
      *at<float>(a.lse, tq.row0 + row, h, 1) = l[r] > 0.f ? (m[r] + log2f(l[r])) * kLn2 : -INFINITY;
  }
}

template <class T, int D> void launch(const AttnArgs& a, const DevicePlan& p) {
  constexpr int kSmemBytes = 5 * kTileRows * D * 2; // Q, K x2, V x2
  static bool attribute_set = false; // once per process and instantiation
  if (!attribute_set) {
    KN_CUDA_CHECK(cudaFuncSetAttribute(fwd_mma_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
    attribute_set = true;
  }
  const unsigned grid = unsigned(p.q_tiles() * (a.head_end - a.head_begin));
  fwd_mma_kernel<T, D><<<grid, kThreads, kSmemBytes, a.stream>>>(a, p.view(), scale_of(a) * kLog2e);
  KN_LAUNCH_CHECK(fwd_mma_kernel);
}

bool aligned16(const HeadTensor& t) {
  return reinterpret_cast<uintptr_t>(t.data) % 16 == 0 && t.row_stride % 8 == 0;
}

} // namespace

std::string mma_unsupported(const AttnArgs& a) {
  if (!aligned16(a.q) || !aligned16(a.k) || !aligned16(a.v) || !aligned16(a.o))
    return "q, k, v and o need 16-byte aligned rows (data aligned, row_stride a multiple of 8 elements)";
  return {};
}

void forward_mma(const AttnArgs& a, const DevicePlan& p) {
  if (p.q_tiles() == 0)
    return;
  const bool bf = a.dtype == DType::BF16;
  if (a.head_dim == 64)
    bf ? launch<__nv_bfloat16, 64>(a, p) : launch<__half, 64>(a, p);
  else
    bf ? launch<__nv_bfloat16, 128>(a, p) : launch<__half, 128>(a, p);
}

} // namespace cpsim::kernels::detail
