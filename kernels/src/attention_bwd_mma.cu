// The fast backward path on tensor cores (mma.sync m16n8k16, sm_80 and sm_90), deterministic and
// without atomics, as in kernels.md A4 step 5: one kernel owns a key tile of one KV head and walks
// the transposed lists of every query head of its group (dK, dV in registers); a second kernel owns
// a query tile of one head and walks the forward lists (dQ in registers), recomputing P from the LSE.
// Per 64x64 tile pair the products are those of schedules.md 1.4:
//   S = Q K^T, P = exp(S*scale - LSE), dV += P^T dO, dP = dO V^T, dS = P (dP - Delta),
//   dK += scale dS^T Q, dQ += scale dS K.
#include "cuda_check.hpp"
#include "launchers.hpp"
#include "mma_helpers.cuh"

namespace cpsim::kernels::detail {

namespace {

/** LSE in log2 units; rows without keys (-inf) and padding rows become +inf so that P = 0 there. */
__device__ __forceinline__ float lse_log2(float lse) { return lse == -INFINITY ? INFINITY : lse * kLog2e; }

template <class T, int D>
__global__ void __launch_bounds__(kThreads) dkdv_mma_kernel(AttnArgs a, DevicePlan::View v, const float* delta, float scale,
                                                            float scale_log2, int g0, int n_heads) {
  extern __shared__ uint4 smem[];
  constexpr int kTB = kTileRows * D * 2;
  const int n_kv = (a.head_end - 1) / a.heads_per_kv + 1 - g0; // 1-D grid: (tile in launch order) x KV head
  const int kt = v.k_order[blockIdx.x / n_kv], g = g0 + int(blockIdx.x % n_kv);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const TileRange tk = v.k_tiles[kt];
  const uint32_t sK = smem_addr(smem), sV = sK + kTB;
  auto sQ = [&](int st) { return sK + uint32_t(kTB * (2 + st)); };
  auto sO = [&](int st) { return sK + uint32_t(kTB * (4 + st)); }; // dO
  float* sL = reinterpret_cast<float*>(reinterpret_cast<char*>(smem) + 6 * kTB); // [2][64] LSE (log2)
  float* sDl = sL + 2 * kTileRows;                                                // [2][64] Delta
  load_tile<T, D>(sK, a.k, tk, g);
  load_tile<T, D>(sV, a.v, tk, g);
  cp_async_commit();

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i)
#pragma unroll
    for (int c = 0; c < 4; ++c)
      dk[i][c] = dv[i][c] = 0.f;
  const int k_lo = warp * 16 + (lane >> 2); // this thread's key rows: k_lo and k_lo + 8
  const int64_t kpos[2] = {tk.pos0 + int64_t(k_lo) * tk.pos_stride, tk.pos0 + int64_t(k_lo + 8) * tk.pos_stride};

  const int h_lo = max(a.head_begin, g * a.heads_per_kv), h_hi = min(a.head_end, (g + 1) * a.heads_per_kv);
  for (int h = h_lo; h < h_hi; ++h) {
    const int hi = h - a.head_begin;
    const int item = (v.head_slots == 1 ? 0 : hi) * v.n_k + kt;
    const int e0 = v.bwd_off[item], e1 = v.bwd_off[item + 1], n_full = v.bwd_nfull[item];
    auto load_q = [&](int st, int e) {
      const int qt = v.bwd_idx[e];
      const TileRange tq = v.q_tiles[qt];
      load_tile<T, D>(sQ(st), a.q, tq, h);
      load_tile<T, D>(sO(st), a.dout, tq, h);
      if (threadIdx.x < kTileRows) {
        const int r = threadIdx.x;
        sL[st * kTileRows + r] = r < tq.n ? lse_log2(*at<float>(a.lse_in, tq.row0 + r, h, 1)) : INFINITY;
        sDl[st * kTileRows + r] = r < tq.n ? delta[(int64_t(qt) * kTileRows + r) * n_heads + hi] : 0.f;
      }
    };
    if (e0 < e1) {
      load_q(0, e0);
      cp_async_commit();
    }
    for (int e = e0; e < e1; ++e) {
      const int st = (e - e0) & 1;
      if (e + 1 < e1) {
        load_q(st ^ 1, e + 1);
        cp_async_commit();
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      // S^T = K Q^T: this warp's 16 keys x 64 queries
      float p[8][4];
#pragma unroll
      for (int i = 0; i < 8; ++i)
        p[i][0] = p[i][1] = p[i][2] = p[i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t ka[4];
        ldsm_x4(sK + swz<D>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4)), ka);
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          uint32_t b[4];
          ldsm_x4(sQ(st) + swz<D>(np * 16 + ((lane >> 4) << 3) + (lane & 7), kk * 2 + ((lane >> 3) & 1)), b);
          mma16816<T>(p[2 * np], ka, b[0], b[1]);
          mma16816<T>(p[2 * np + 1], ka, b[2], b[3]);
        }
      }
      const bool partial = e - e0 >= n_full;
      const TileRange tq = v.q_tiles[v.bwd_idx[e]];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int col = nt * 8 + (lane & 3) * 2 + (c & 1);
          const bool vis = !partial || (col < tq.n && k_lo + 8 * (c >> 1) < tk.n && plan_visible(v, tk.seq, tq.pos0 + int64_t(col) * tq.pos_stride, kpos[c >> 1]));
          p[nt][c] = vis ? exp2f(fmaf(p[nt][c], scale_log2, -sL[st * kTileRows + col])) : 0.f;
        }
      // dV += P^T dO
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const uint32_t pa[4] = {pack2<T>(p[2 * kk][0], p[2 * kk][1]), pack2<T>(p[2 * kk][2], p[2 * kk][3]),
                                pack2<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]), pack2<T>(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t b[4];
          ldsm_x4_trans(sO(st) + swz<D>(kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7), dp * 2 + (lane >> 4)), b);
          mma16816<T>(dv[2 * dp], pa, b[0], b[1]);
          mma16816<T>(dv[2 * dp + 1], pa, b[2], b[3]);
        }
      }
      // dP^T = V dO^T, then dS^T = P^T (dP^T - Delta)
      float ds[8][4];
#pragma unroll
      for (int i = 0; i < 8; ++i)
        ds[i][0] = ds[i][1] = ds[i][2] = ds[i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t va[4];
        ldsm_x4(sV + swz<D>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4)), va);
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          uint32_t b[4];
          ldsm_x4(sO(st) + swz<D>(np * 16 + ((lane >> 4) << 3) + (lane & 7), kk * 2 + ((lane >> 3) & 1)), b);
          mma16816<T>(ds[2 * np], va, b[0], b[1]);
          mma16816<T>(ds[2 * np + 1], va, b[2], b[3]);
        }
      }
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c)
          ds[nt][c] = p[nt][c] * (ds[nt][c] - sDl[st * kTileRows + nt * 8 + (lane & 3) * 2 + (c & 1)]);
      // dK += dS^T Q (scaled at the end)
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const uint32_t da[4] = {pack2<T>(ds[2 * kk][0], ds[2 * kk][1]), pack2<T>(ds[2 * kk][2], ds[2 * kk][3]),
                                pack2<T>(ds[2 * kk + 1][0], ds[2 * kk + 1][1]), pack2<T>(ds[2 * kk + 1][2], ds[2 * kk + 1][3])};
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t b[4];
          ldsm_x4_trans(sQ(st) + swz<D>(kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7), dp * 2 + (lane >> 4)), b);
          mma16816<T>(dk[2 * dp], da, b[0], b[1]);
          mma16816<T>(dk[2 * dp + 1], da, b[2], b[3]);
        }
      }
      __syncthreads(); // the next prefetch overwrites this stage
    }
  }
  cp_async_wait<0>();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = k_lo + 8 * r;
    if (row >= tk.n)
      continue;
    T* dkp = at<T>(a.dk, tk.row0 + row, g, D) + (lane & 3) * 2;
    T* dvp = at<T>(a.dv, tk.row0 + row, g, D) + (lane & 3) * 2;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      *reinterpret_cast<uint32_t*>(dkp + dn * 8) = pack2<T>(dk[dn][2 * r] * scale, dk[dn][2 * r + 1] * scale);
      *reinterpret_cast<uint32_t*>(dvp + dn * 8) = pack2<T>(dv[dn][2 * r], dv[dn][2 * r + 1]);
    }
  }
}

template <class T, int D>
__global__ void __launch_bounds__(kThreads) dq_mma_kernel(AttnArgs a, DevicePlan::View v, const float* delta, float scale,
                                                          float scale_log2, int n_heads) {
  extern __shared__ uint4 smem[];
  constexpr int kTB = kTileRows * D * 2;
  const int qt = v.q_order[blockIdx.x / n_heads], hi = int(blockIdx.x % n_heads), h = a.head_begin + hi, g = h / a.heads_per_kv;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const TileRange tq = v.q_tiles[qt];
  const int item = (v.head_slots == 1 ? 0 : hi) * v.n_q + qt;
  const int e0 = v.fwd_off[item], e1 = v.fwd_off[item + 1], n_full = v.fwd_nfull[item];
  const uint32_t sQ = smem_addr(smem), sO = sQ + kTB; // Q, dO
  auto sK = [&](int st) { return sQ + uint32_t(kTB * (2 + st)); };
  auto sV = [&](int st) { return sQ + uint32_t(kTB * (4 + st)); };
  load_tile<T, D>(sQ, a.q, tq, h);
  load_tile<T, D>(sO, a.dout, tq, h);
  if (e0 < e1) {
    const TileRange tk = v.k_tiles[v.fwd_idx[e0]];
    load_tile<T, D>(sK(0), a.k, tk, g);
    load_tile<T, D>(sV(0), a.v, tk, g);
  }
  cp_async_commit();

  const int r_lo = warp * 16 + (lane >> 2);
  float lse[2], dl[2];
  int64_t qpos[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = r_lo + 8 * r;
    lse[r] = row < tq.n ? lse_log2(*at<float>(a.lse_in, tq.row0 + row, h, 1)) : INFINITY;
    dl[r] = row < tq.n ? delta[(int64_t(qt) * kTileRows + row) * n_heads + hi] : 0.f;
    qpos[r] = tq.pos0 + int64_t(row) * tq.pos_stride;
  }
  float dq[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i)
    dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;
  uint32_t qf[D / 16][4], of[D / 16][4];

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
      for (int kk = 0; kk < D / 16; ++kk) {
        ldsm_x4(sQ + swz<D>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4)), qf[kk]);
        ldsm_x4(sO + swz<D>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4)), of[kk]);
      }
    }
    float p[8][4], ds[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int c = 0; c < 4; ++c)
        p[i][c] = ds[i][c] = 0.f;
    // S = Q K^T and dP = dO V^T, 16 rows x 64 keys per warp
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t b[4];
        const int key = np * 16 + ((lane >> 4) << 3) + (lane & 7), ch = kk * 2 + ((lane >> 3) & 1);
        ldsm_x4(sK(st) + swz<D>(key, ch), b);
        mma16816<T>(p[2 * np], qf[kk], b[0], b[1]);
        mma16816<T>(p[2 * np + 1], qf[kk], b[2], b[3]);
        ldsm_x4(sV(st) + swz<D>(key, ch), b);
        mma16816<T>(ds[2 * np], of[kk], b[0], b[1]);
        mma16816<T>(ds[2 * np + 1], of[kk], b[2], b[3]);
      }
    const bool partial = e - e0 >= n_full;
    const TileRange tk = v.k_tiles[v.fwd_idx[e]];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int key = nt * 8 + (lane & 3) * 2 + (c & 1);
        const bool vis = !partial || (key < tk.n && r_lo + 8 * (c >> 1) < tq.n && plan_visible(v, tq.seq, qpos[c >> 1], tk.pos0 + int64_t(key) * tk.pos_stride));
        const float pr = vis ? exp2f(fmaf(p[nt][c], scale_log2, -lse[c >> 1])) : 0.f;
        ds[nt][c] = pr * (ds[nt][c] - dl[c >> 1]);
      }
    // dQ += dS K (scaled at the end)
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint32_t da[4] = {pack2<T>(ds[2 * kk][0], ds[2 * kk][1]), pack2<T>(ds[2 * kk][2], ds[2 * kk][3]),
                              pack2<T>(ds[2 * kk + 1][0], ds[2 * kk + 1][1]), pack2<T>(ds[2 * kk + 1][2], ds[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t b[4];
        ldsm_x4_trans(sK(st) + swz<D>(kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7), dp * 2 + (lane >> 4)), b);
        mma16816<T>(dq[2 * dp], da, b[0], b[1]);
        mma16816<T>(dq[2 * dp + 1], da, b[2], b[3]);
      }
    }
    __syncthreads();
  }
  cp_async_wait<0>();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = r_lo + 8 * r;
    if (row >= tq.n)
      continue;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      const int col = dn * 8 + (lane & 3) * 2;
      if (a.dq_accumulate) {
        float2* d = reinterpret_cast<float2*>(at<float>(a.dq, tq.row0 + row, h, D) + col);
        float2 x = *d;
        x.x += dq[dn][2 * r] * scale;
        x.y += dq[dn][2 * r + 1] * scale;
        *d = x;
      } else {
        *reinterpret_cast<uint32_t*>(at<T>(a.dq, tq.row0 + row, h, D) + col) = pack2<T>(dq[dn][2 * r] * scale, dq[dn][2 * r + 1] * scale);
      }
    }
  }
}

template <class T, int D> void launch(const AttnArgs& a, const DevicePlan& p) {
  constexpr int kTB = kTileRows * D * 2;
  constexpr int kDkdvSmem = 6 * kTB + 4 * kTileRows * int(sizeof(float));
  constexpr int kDqSmem = 6 * kTB;
  static bool attribute_set = false;
  if (!attribute_set) {
    KN_CUDA_CHECK(cudaFuncSetAttribute(dkdv_mma_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, kDkdvSmem));
    KN_CUDA_CHECK(cudaFuncSetAttribute(dq_mma_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, kDqSmem));
    attribute_set = true;
  }
  const int n_heads = a.head_end - a.head_begin;
  const float scale = scale_of(a);
  float* delta = nullptr;
  const size_t delta_bytes = size_t(p.q_tiles()) * kTileRows * size_t(n_heads) * sizeof(float);
  KN_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&delta), std::max<size_t>(delta_bytes, 16), a.stream));
  compute_delta(a, p, delta);
  if (p.k_tiles() > 0) {
    const int g0 = a.head_begin / a.heads_per_kv, g1 = (a.head_end - 1) / a.heads_per_kv + 1;
    dkdv_mma_kernel<T, D><<<unsigned(p.k_tiles() * (g1 - g0)), kThreads, kDkdvSmem, a.stream>>>(
        a, p.view(), delta, scale, scale * kLog2e, g0, n_heads);
    KN_LAUNCH_CHECK(dkdv_mma_kernel);
  }
  if (p.q_tiles() > 0) {
    dq_mma_kernel<T, D><<<unsigned(p.q_tiles() * n_heads), kThreads, kDqSmem, a.stream>>>(a, p.view(), delta, scale,
                                                                                                       scale * kLog2e, n_heads);
    KN_LAUNCH_CHECK(dq_mma_kernel);
  }
  KN_CUDA_CHECK(cudaFreeAsync(delta, a.stream));
}

bool aligned16(const HeadTensor& t) { return reinterpret_cast<uintptr_t>(t.data) % 16 == 0 && t.row_stride % 8 == 0; }

} // namespace

std::string mma_backward_unsupported(const AttnArgs& a) {
  if (!aligned16(a.q) || !aligned16(a.k) || !aligned16(a.v) || !aligned16(a.dout) || !aligned16(a.dk) || !aligned16(a.dv) ||
      !aligned16(a.dq))
    return "q, k, v, dout, dq, dk and dv need 16-byte aligned rows (data aligned, row_stride a multiple of 8 elements)";
  return {};
}

void backward_mma(const AttnArgs& a, const DevicePlan& p) {
  const bool bf = a.dtype == DType::BF16;
  if (a.head_dim == 64)
    bf ? launch<__nv_bfloat16, 64>(a, p) : launch<__half, 64>(a, p);
  else
    bf ? launch<__nv_bfloat16, 128>(a, p) : launch<__half, 128>(a, p);
}

} // namespace cpsim::kernels::detail
