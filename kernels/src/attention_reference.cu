// The reference path: one thread per query row (forward, dQ) or key row (dK, dV), scalar fp32, the
// textbook online softmax and the five backward products of schedules.md 1.4. Slow on purpose and
// short enough to read in one sitting; the fast path is tested against the same CPU oracle.
#include "cuda_check.hpp"
#include "kernel_common.cuh"
#include "launchers.hpp"

namespace cpsim::kernels::detail {

namespace {

/** Slot of a query head's lists: one shared slot, or one per head of the call. */
__device__ __forceinline__ int slot_of(const DevicePlan::View& v, int head, int head_begin) {
  return v.head_slots == 1 ? 0 : head - head_begin;
}

template <class T, int D> __global__ void fwd_ref_kernel(AttnArgs a, DevicePlan::View v, float scale_log2) {
  const int qt = blockIdx.x, h = a.head_begin + int(blockIdx.y), r = threadIdx.x;
  const TileRange tq = v.q_tiles[qt];
  if (r >= tq.n)
    return;
  const int g = h / a.heads_per_kv;
  const int64_t row = tq.row0 + r, qpos = tq.pos0 + r * tq.pos_stride;
  float q[D], acc[D];
  const T* qp = at<T>(a.q, row, h, D);
  for (int d = 0; d < D; ++d) {
    q[d] = to_f(qp[d]) * scale_log2;
    acc[d] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  const int item = slot_of(v, h, a.head_begin) * v.n_q + qt;
  for (int e = v.fwd_off[item]; e < v.fwd_off[item + 1]; ++e) {
    const TileRange tk = v.k_tiles[v.fwd_idx[e]];
    const bool full = e - v.fwd_off[item] < v.fwd_nfull[item];
    for (int j = 0; j < tk.n; ++j) {
      if (!full && !plan_visible(v, tq.seq, qpos, tk.pos0 + j * tk.pos_stride))
        continue;
      const T* kp = at<T>(a.k, tk.row0 + j, g, D);
      const T* vp = at<T>(a.v, tk.row0 + j, g, D);
      float s = 0.f;
      for (int d = 0; d < D; ++d)
        s += q[d] * to_f(kp[d]);
      const float m_new = fmaxf(m, s);
      const float corr = exp2f(m - m_new), p = exp2f(s - m_new);
      l = l * corr + p;
      for (int d = 0; d < D; ++d)
        acc[d] = acc[d] * corr + p * to_f(vp[d]);
      m = m_new;
    }
  }
  T* op = at<T>(a.o, row, h, D);
  const float inv = l > 0.f ? 1.f / l : 0.f;
  for (int d = 0; d < D; ++d)
    op[d] = from_f<T>(acc[d] * inv);
  *at<float>(a.lse, row, h, 1) = l > 0.f ? (m + log2f(l)) * kLn2 : -INFINITY;
}

/** delta[tile row][head] = rowsum(dO * O), the term every dS needs. */
template <class T, int D> __global__ void delta_kernel(AttnArgs a, DevicePlan::View v, float* delta) {
  const int qt = blockIdx.x, hi = blockIdx.y, r = threadIdx.x;
  const TileRange tq = v.q_tiles[qt];
  if (r >= tq.n)
    return;
  const int h = a.head_begin + hi;
  const T* o = at<T>(a.out, tq.row0 + r, h, D);
  const T* dout = at<T>(a.dout, tq.row0 + r, h, D);
  float s = 0.f;
  for (int d = 0; d < D; ++d)
    s += to_f(o[d]) * to_f(dout[d]);
  delta[(int64_t(qt) * kTileRows + r) * gridDim.y + hi] = s;
}

template <class T, int D> __global__ void dq_ref_kernel(AttnArgs a, DevicePlan::View v, const float* delta, float scale) {
  const int qt = blockIdx.x, hi = blockIdx.y, h = a.head_begin + hi, r = threadIdx.x;
  const TileRange tq = v.q_tiles[qt];
  if (r >= tq.n)
    return;
  const int g = h / a.heads_per_kv;
  const int64_t row = tq.row0 + r, qpos = tq.pos0 + r * tq.pos_stride;
  float q[D], dout[D], dq[D];
  for (int d = 0; d < D; ++d) {
    q[d] = to_f(at<T>(a.q, row, h, D)[d]);
    dout[d] = to_f(at<T>(a.dout, row, h, D)[d]);
    dq[d] = 0.f;
  }
  const float lse = *at<float>(a.lse_in, row, h, 1);
  const float dl = delta[(int64_t(qt) * kTileRows + r) * gridDim.y + hi];
  const int item = slot_of(v, h, a.head_begin) * v.n_q + qt;
  for (int e = v.fwd_off[item]; lse != -INFINITY && e < v.fwd_off[item + 1]; ++e) {
    const TileRange tk = v.k_tiles[v.fwd_idx[e]];
    const bool full = e - v.fwd_off[item] < v.fwd_nfull[item];
    for (int j = 0; j < tk.n; ++j) {
      if (!full && !plan_visible(v, tq.seq, qpos, tk.pos0 + j * tk.pos_stride))
        continue;
      const T* kp = at<T>(a.k, tk.row0 + j, g, D);
      const T* vp = at<T>(a.v, tk.row0 + j, g, D);
      float s = 0.f, dp = 0.f;
      for (int d = 0; d < D; ++d) {
        s += q[d] * to_f(kp[d]);
        dp += dout[d] * to_f(vp[d]);
      }
      const float p = expf(s * scale - lse);
      const float ds = p * (dp - dl);
      for (int d = 0; d < D; ++d)
        dq[d] += ds * scale * to_f(kp[d]);
    }
  }
  if (a.dq_accumulate) {
    float* dqp = at<float>(a.dq, row, h, D);
    for (int d = 0; d < D; ++d)
      dqp[d] += dq[d];
  } else {
    T* dqp = at<T>(a.dq, row, h, D);
    for (int d = 0; d < D; ++d)
      dqp[d] = from_f<T>(dq[d]);
  }
}

template <class T, int D>
__global__ void dkdv_ref_kernel(AttnArgs a, DevicePlan::View v, const float* delta, float scale, int g0, int n_heads) {
  const int kt = blockIdx.x, g = g0 + int(blockIdx.y), r = threadIdx.x;
  const TileRange tk = v.k_tiles[kt];
  if (r >= tk.n)
    return;
  const int64_t row = tk.row0 + r, kpos = tk.pos0 + r * tk.pos_stride;
  float k[D], vv[D], dk[D], dv[D];
  for (int d = 0; d < D; ++d) {
    k[d] = to_f(at<T>(a.k, row, g, D)[d]);
    vv[d] = to_f(at<T>(a.v, row, g, D)[d]);
    dk[d] = dv[d] = 0.f;
  }
  const int h_lo = max(a.head_begin, g * a.heads_per_kv), h_hi = min(a.head_end, (g + 1) * a.heads_per_kv);
  for (int h = h_lo; h < h_hi; ++h) {
    const int hi = h - a.head_begin;
    const int item = slot_of(v, h, a.head_begin) * v.n_k + kt;
    for (int e = v.bwd_off[item]; e < v.bwd_off[item + 1]; ++e) {
      const int qt = v.bwd_idx[e];
      const TileRange tq = v.q_tiles[qt];
      const bool full = e - v.bwd_off[item] < v.bwd_nfull[item];
      for (int i = 0; i < tq.n; ++i) {
        if (!full && !plan_visible(v, tk.seq, tq.pos0 + i * tq.pos_stride, kpos))
          continue;
        const float lse = *at<float>(a.lse_in, tq.row0 + i, h, 1);
        if (lse == -INFINITY)
          continue;
        const T* qp = at<T>(a.q, tq.row0 + i, h, D);
        const T* dop = at<T>(a.dout, tq.row0 + i, h, D);
        float s = 0.f, dp = 0.f;
        for (int d = 0; d < D; ++d) {
          s += to_f(qp[d]) * k[d];
          dp += to_f(dop[d]) * vv[d];
        }
        const float p = expf(s * scale - lse);
        const float ds = p * (dp - delta[(int64_t(qt) * kTileRows + i) * n_heads + hi]);
        for (int d = 0; d < D; ++d) {
          dv[d] += p * to_f(dop[d]);
          dk[d] += ds * scale * to_f(qp[d]);
        }
      }
    }
  }
  T* dkp = at<T>(a.dk, row, g, D);
  T* dvp = at<T>(a.dv, row, g, D);
  for (int d = 0; d < D; ++d) {
    dkp[d] = from_f<T>(dk[d]);
    dvp[d] = from_f<T>(dv[d]);
  }
}

template <class T, int D> void fwd_ref(const AttnArgs& a, const DevicePlan& p) {
  const dim3 grid(unsigned(p.q_tiles()), unsigned(a.head_end - a.head_begin));
  fwd_ref_kernel<T, D><<<grid, kTileRows, 0, a.stream>>>(a, p.view(), scale_of(a) * kLog2e);
  KN_LAUNCH_CHECK(fwd_ref_kernel);
}

template <class T, int D> void bwd_ref(const AttnArgs& a, const DevicePlan& p) {
  const int n_heads = a.head_end - a.head_begin;
  const size_t delta_bytes = size_t(p.q_tiles()) * kTileRows * size_t(n_heads) * sizeof(float);
  float* delta = nullptr;
  KN_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&delta), std::max<size_t>(delta_bytes, 16), a.stream));
  const dim3 qgrid(unsigned(p.q_tiles()), unsigned(n_heads));
  compute_delta(a, p, delta);
  if (p.q_tiles() > 0) {
    dq_ref_kernel<T, D><<<qgrid, kTileRows, 0, a.stream>>>(a, p.view(), delta, scale_of(a));
    KN_LAUNCH_CHECK(dq_ref_kernel);
  }
  const int g0 = a.head_begin / a.heads_per_kv, g1 = (a.head_end - 1) / a.heads_per_kv + 1;
  if (p.k_tiles() > 0) {
    dkdv_ref_kernel<T, D><<<dim3(unsigned(p.k_tiles()), unsigned(g1 - g0)), kTileRows, 0, a.stream>>>(
        a, p.view(), delta, scale_of(a), g0, n_heads);
    KN_LAUNCH_CHECK(dkdv_ref_kernel);
  }
  KN_CUDA_CHECK(cudaFreeAsync(delta, a.stream));
}

template <class F64, class F128> void by_dim(int d, F64 f64, F128 f128) {
  if (d == 64)
    f64();
  else
    f128();
}

} // namespace

void compute_delta(const AttnArgs& a, const DevicePlan& p, float* delta) {
  if (p.q_tiles() == 0)
    return;
  const dim3 grid(unsigned(p.q_tiles()), unsigned(a.head_end - a.head_begin));
  const bool bf = a.dtype == DType::BF16;
  if (a.head_dim == 64)
    bf ? delta_kernel<__nv_bfloat16, 64><<<grid, kTileRows, 0, a.stream>>>(a, p.view(), delta)
       : delta_kernel<__half, 64><<<grid, kTileRows, 0, a.stream>>>(a, p.view(), delta);
  else
    bf ? delta_kernel<__nv_bfloat16, 128><<<grid, kTileRows, 0, a.stream>>>(a, p.view(), delta)
       : delta_kernel<__half, 128><<<grid, kTileRows, 0, a.stream>>>(a, p.view(), delta);
  KN_LAUNCH_CHECK(delta_kernel);
}

void forward_reference(const AttnArgs& a, const DevicePlan& p) {
  if (p.q_tiles() == 0)
    return;
  if (a.dtype == DType::BF16)
    by_dim(a.head_dim, [&] { fwd_ref<__nv_bfloat16, 64>(a, p); }, [&] { fwd_ref<__nv_bfloat16, 128>(a, p); });
  else
    by_dim(a.head_dim, [&] { fwd_ref<__half, 64>(a, p); }, [&] { fwd_ref<__half, 128>(a, p); });
}

void backward_reference(const AttnArgs& a, const DevicePlan& p) {
  if (a.dtype == DType::BF16)
    by_dim(a.head_dim, [&] { bwd_ref<__nv_bfloat16, 64>(a, p); }, [&] { bwd_ref<__nv_bfloat16, 128>(a, p); });
  else
    by_dim(a.head_dim, [&] { bwd_ref<__half, 64>(a, p); }, [&] { bwd_ref<__half, 128>(a, p); });
}

} // namespace cpsim::kernels::detail
