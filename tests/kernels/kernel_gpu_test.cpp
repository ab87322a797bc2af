// GPU correctness of the attention kernels against the fp64 oracle: fresh random inputs each run
// (the seed is printed), outputs poisoned with NaN before every launch, every planned output
// element checked (finite, relative error <= 1e-2), rows without visible keys exactly LSE -inf and
// O = 0; dQ (overwrite and accumulate), dK, dV; every mask kind, ragged sizes, GQA, head ranges,
// per-head block lists; the LSE merge and the gathers. Exits 77 (skipped) without a GPU.
#define CATCH_CONFIG_RUNNER
#include "attention_oracle.hpp"

#include "cpsim/kernels/attention.hpp"
#include "cpsim/kernels/merge_gather.hpp"

#include <catch2/catch.hpp>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <limits>
#include <memory>
#include <optional>
#include <random>

using namespace cpsim::kernels;
using cpsim::kernels::test::OracleProblem;

namespace {

std::mt19937_64 g_rng;
constexpr double kInf = std::numeric_limits<double>::infinity();

#define CK(call) REQUIRE((call) == cudaSuccess)

/** Every implementation the device runs: the reference, mma.sync, and wgmma on Hopper. */
std::vector<Impl> implementations() {
  std::vector<Impl> v{Impl::REFERENCE, Impl::MMA};
  if (impl_available(Impl::WGMMA))
    v.push_back(Impl::WGMMA);
  return v;
}

/** Device buffer of n elements of `dt`, with host-side conversion to and from double. */
struct DevBuf {
  DType dt = DType::BF16;
  size_t n = 0;
  void* p = nullptr;
  DevBuf(DType d, size_t count) : dt(d), n(count) { CK(cudaMalloc(&p, std::max<size_t>(n * size_t(dtype_bytes(d)), 16))); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  void poison() { CK(cudaMemset(p, 0xFF, n * size_t(dtype_bytes(dt)))); } // NaN in bf16, fp16 and fp32
  /** Uploads x rounded to the buffer's type and returns the rounded values. */
  std::vector<double> put(const std::vector<double>& x) {
    std::vector<char> raw(n * size_t(dtype_bytes(dt)));
    std::vector<double> r(n);
    for (size_t i = 0; i < n; ++i) {
      if (dt == DType::BF16) {
        __nv_bfloat16 b = __float2bfloat16(float(x[i]));
        std::memcpy(&raw[i * 2], &b, 2);
        r[i] = double(__bfloat162float(b));
      } else if (dt == DType::FP16) {
        __half b = __float2half(float(x[i]));
        std::memcpy(&raw[i * 2], &b, 2);
        r[i] = double(__half2float(b));
      } else {
        float f = float(x[i]);
        std::memcpy(&raw[i * 4], &f, 4);
        r[i] = double(f);
      }
    }
    CK(cudaMemcpy(p, raw.data(), raw.size(), cudaMemcpyHostToDevice));
    return r;
  }
  std::vector<double> get() const {
    std::vector<char> raw(n * size_t(dtype_bytes(dt)));
    CK(cudaMemcpy(raw.data(), p, raw.size(), cudaMemcpyDeviceToHost));
    std::vector<double> r(n);
    for (size_t i = 0; i < n; ++i) {
      if (dt == DType::BF16) {
        __nv_bfloat16 b;
        std::memcpy(&b, &raw[i * 2], 2);
        r[i] = double(__bfloat162float(b));
      } else if (dt == DType::FP16) {
        __half b;
        std::memcpy(&b, &raw[i * 2], 2);
        r[i] = double(__half2float(b));
      } else {
        float f;
        std::memcpy(&f, &raw[i * 4], 4);
        r[i] = double(f);
      }
    }
    return r;
  }
  HeadTensor tensor(int64_t row_stride) const { return {p, row_stride, 0, dt}; }
};

std::vector<double> randn(size_t n, double sd = 1.0) {
  std::normal_distribution<double> d(0.0, sd);
  std::vector<double> x(n);
  for (auto& v : x)
    v = d(g_rng);
  return x;
}

struct Case {
  std::string name;
  DType dtype = DType::BF16;
  int heads = 4, kv_heads = 2, head_dim = 64, head_begin = 0, head_end = 4;
  int64_t q_rows = 0, k_rows = 0;
  std::vector<PlanSegment> segs;
  MaskDesc mask;
  std::optional<BlockLists> lists; // self-attention over a packed batch from explicit block lists
  bool dq_accumulate = false;
};

/** The visible key rows per (slot, q row), from the segments and the mask or from the block lists. */
OracleProblem truth(const Case& c) {
  OracleProblem p;
  p.q_rows = c.q_rows;
  p.k_rows = c.k_rows;
  p.heads = c.heads;
  p.kv_heads = c.kv_heads;
  p.head_dim = c.head_dim;
  p.scale = 1.0 / std::sqrt(double(c.head_dim));
  p.keys.assign(size_t(c.heads), std::vector<std::vector<int64_t>>(size_t(c.q_rows)));
  for (int h = c.head_begin; h < c.head_end; ++h) {
    auto& keys = p.keys[size_t(h)];
    if (!c.lists) {
      for (const auto& s : c.segs)
        for (int64_t i = 0; i < s.q_n; ++i)
          for (int64_t j = 0; j < s.k_n; ++j)
            if (c.mask.visible(s.seq, s.q_pos0 + i * s.q_stride, s.k_pos0 + j * s.k_stride))
              keys[size_t(s.q_row0 + i)].push_back(s.k_row0 + j);
      continue;
    }
    const BlockLists& b = *c.lists;
    const int slot = b.head_slots == 1 ? 0 : h - c.head_begin;
    int64_t base = 0;
    for (size_t s = 0; s < b.seq_lens.size(); ++s) {
      const int64_t len = b.seq_lens[s];
      for (int64_t qb = 0; qb < b.blocks(int(s)); ++qb) {
        const size_t li = size_t(b.index(int(s), slot, qb));
        auto add = [&](int64_t kb, bool full) {
          for (int64_t i = qb * b.block; i < std::min(len, (qb + 1) * b.block); ++i)
            for (int64_t j = kb * b.block; j < std::min(len, (kb + 1) * b.block); ++j) {
              MaskDesc rule = c.mask;
              rule.layout_block = 0;
              if (full || rule.visible(int(s), i, j))
                keys[size_t(base + i)].push_back(base + j);
            }
        };
        for (int32_t kb : b.full[li])
          add(kb, true);
        for (int32_t kb : b.partial[li])
          add(kb, false);
      }
      base += len;
    }
  }
  for (auto& per_head : p.keys)
    for (auto& k : per_head)
      std::sort(k.begin(), k.end());
  return p;
}

/** max |got - want| / max |want| over the selected elements, all of which must be finite. */
double rel_error(const std::vector<double>& got, const std::vector<double>& want, const std::vector<bool>& sel) {
  double err = 0, scale = 1e-6;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!sel[i])
      continue;
    if (!std::isfinite(got[i]))
      FAIL("element " << i << " was not written (or is not finite): " << got[i] << ", want " << want[i]);
    err = std::max(err, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return err / scale;
}

void run_case(const Case& c) {
  INFO("case " << c.name);
  const KernelPlan plan = c.lists ? plan_block_lists(*c.lists, c.mask) : plan_segments(c.segs, c.mask);
  const DevicePlan dplan(plan, c.mask, nullptr);
  OracleProblem p = truth(c);
  const int D = c.head_dim, H = c.heads, G = c.kv_heads;
  DevBuf q(c.dtype, size_t(c.q_rows * H * D)), k(c.dtype, size_t(c.k_rows * G * D)), v(c.dtype, size_t(c.k_rows * G * D));
  p.q = q.put(randn(q.n));
  p.k = k.put(randn(k.n));
  p.v = v.put(randn(v.n));
  const auto ref = oracle_forward(p);

  // which outputs the call must write: planned query rows and key rows, heads of the call
  std::vector<bool> q_row(size_t(c.q_rows), false), k_row(size_t(c.k_rows), false);
  for (const auto& t : plan.q_tiles)
    for (int i = 0; i < t.n; ++i)
      q_row[size_t(t.row0 + i)] = true;
  for (const auto& t : plan.k_tiles)
    for (int i = 0; i < t.n; ++i)
      k_row[size_t(t.row0 + i)] = true;
  std::vector<bool> sel_o(q.n), sel_lse(size_t(c.q_rows * H)), sel_k(k.n);
  for (int64_t r = 0; r < c.q_rows; ++r)
    for (int h = c.head_begin; h < c.head_end; ++h) {
      sel_lse[size_t(r * H + h)] = q_row[size_t(r)];
      for (int d = 0; d < D; ++d)
        sel_o[size_t((r * H + h) * D + d)] = q_row[size_t(r)];
    }
  const int g0 = c.head_begin / (H / G), g1 = (c.head_end - 1) / (H / G) + 1;
  for (int64_t r = 0; r < c.k_rows; ++r)
    for (int g = g0; g < g1; ++g)
      for (int d = 0; d < D; ++d)
        sel_k[size_t((r * G + g) * D + d)] = k_row[size_t(r)];

  AttnArgs a;
  a.head_dim = D;
  a.head_begin = c.head_begin;
  a.head_end = c.head_end;
  a.heads_per_kv = H / G;
  a.dtype = c.dtype;
  a.q = q.tensor(H * D);
  a.k = k.tensor(G * D);
  a.v = v.tensor(G * D);
  DevBuf o(c.dtype, q.n), lse(DType::FP32, size_t(c.q_rows * H));
  a.o = o.tensor(H * D);
  a.lse = lse.tensor(H);
  for (Impl impl : implementations()) {
    INFO(to_string(impl) << " forward");
    o.poison();
    lse.poison();
    attention_forward(a, dplan, impl);
    CK(cudaDeviceSynchronize());
    const auto got_o = o.get(), got_lse = lse.get();
    REQUIRE(rel_error(got_o, ref.o, sel_o) <= 1e-2);
    for (size_t i = 0; i < got_lse.size(); ++i) {
      if (!sel_lse[i])
        continue;
      INFO("lse element " << i << " got " << got_lse[i] << " want " << ref.lse[i]);
      if (std::isinf(ref.lse[i])) { // no visible key: LSE -inf and O exactly 0
        REQUIRE(got_lse[i] == -kInf);
        for (int d = 0; d < D; ++d)
          REQUIRE(got_o[i * size_t(D) + size_t(d)] == 0.0);
      } else {
        REQUIRE(std::abs(got_lse[i] - ref.lse[i]) <= 1e-2 * std::max(1.0, std::abs(ref.lse[i])));
      }
    }
  }

  // backward from the oracle's O and LSE (what the GPU would hold after a forward)
  DevBuf out(c.dtype, q.n), lse_in(DType::FP32, size_t(c.q_rows * H)), dout(c.dtype, q.n);
  const auto o_r = out.put(ref.o);
  lse_in.put(ref.lse);
  const auto do_r = dout.put(randn(q.n));
  const auto bref = oracle_backward(p, o_r, ref.lse, do_r);
  DevBuf dq(c.dq_accumulate ? DType::FP32 : c.dtype, q.n), dk(c.dtype, k.n), dv(c.dtype, k.n);
  a.out = out.tensor(H * D);
  a.lse_in = lse_in.tensor(H);
  a.dout = dout.tensor(H * D);
  a.dq = dq.tensor(H * D);
  a.dq_accumulate = c.dq_accumulate;
  a.dk = dk.tensor(G * D);
  a.dv = dv.tensor(G * D);
  for (Impl impl : implementations()) {
    INFO(to_string(impl) << " backward");
    std::vector<double> dq0(q.n, 0.0);
    if (c.dq_accumulate)
      dq0 = dq.put(randn(q.n, 0.1)); // dq += must keep what was there
    else
      dq.poison();
    dk.poison();
    dv.poison();
    attention_backward(a, dplan, impl);
    CK(cudaDeviceSynchronize());
    std::vector<double> want_dq = bref.dq;
    for (size_t i = 0; i < want_dq.size(); ++i)
      want_dq[i] += dq0[i];
    REQUIRE(rel_error(dq.get(), want_dq, sel_o) <= 1e-2);
    REQUIRE(rel_error(dk.get(), bref.dk, sel_k) <= 1e-2);
    REQUIRE(rel_error(dv.get(), bref.dv, sel_k) <= 1e-2);
  }
}

PlanSegment square(int64_t n) { return {0, 0, 0, 1, n, 0, 0, 1, n}; }

MaskDesc causal() {
  MaskDesc m;
  m.causal = true;
  return m;
}

void add_layout(MaskDesc& m, int64_t len, int64_t block, double density, bool causal) {
  m.layout_block = block;
  const int64_t nb = (len + block - 1) / block;
  m.layouts.push_back(random_layout(nb, density, g_rng(), causal));
  m.layout_n_blocks.push_back(nb);
}

} // namespace

TEST_CASE("attention forward and backward match the fp64 oracle for every mask kind") {
  std::vector<Case> cases;
  {
    Case c{"full, ragged 150 rows, bf16, d64"};
    c.q_rows = c.k_rows = 150;
    c.segs = {square(150)};
    cases.push_back(c);
  }
  {
    Case c{"causal top-left, 200 rows, fp16, d128"};
    c.dtype = DType::FP16;
    c.head_dim = 128;
    c.q_rows = c.k_rows = 200;
    c.segs = {square(200)};
    c.mask = causal();
    cases.push_back(c);
  }
  {
    Case c{"causal bottom-right, 70 queries over 200 keys, bf16, d128"};
    c.head_dim = 128;
    c.q_rows = 70;
    c.k_rows = 200;
    c.segs = {{0, 0, 130, 1, 70, 0, 0, 1, 200}};
    c.mask = causal();
    cases.push_back(c);
  }
  {
    Case c{"sliding window 50, 260 rows, bf16, d64, GQA 4:1"};
    c.q_rows = c.k_rows = 260;
    c.kv_heads = 1;
    c.segs = {square(260)};
    c.mask = causal();
    c.mask.window = 50;
    cases.push_back(c);
  }
  {
    Case c{"explicit key ranges per query range (DCP pieces), dq accumulated, bf16, d128"};
    c.head_dim = 128;
    c.q_rows = 130;
    c.k_rows = 380;
    c.segs = {{0, 0, 600, 1, 100, 0, 0, 1, 40}, {0, 0, 600, 1, 100, 300, 500, 1, 80}, {0, 100, 700, 1, 30, 300, 500, 1, 80}};
    c.mask = causal();
    c.dq_accumulate = true;
    cases.push_back(c);
  }
  {
    Case c{"stripe: strided positions, strictly lower, first row sees no key, bf16, d64"};
    c.q_rows = c.k_rows = 90;
    c.segs = {{0, 0, 0, 4, 90, 0, 1, 4, 90}};
    c.mask = causal();
    cases.push_back(c);
  }
  {
    Case c{"block-sparse 128 layout, causal, varlen {300, 77} from block lists, fp16, d128"};
    c.dtype = DType::FP16;
    c.head_dim = 128;
    c.q_rows = c.k_rows = 377;
    c.mask = causal();
    add_layout(c.mask, 300, 128, 0.5, true);
    add_layout(c.mask, 77, 128, 0.5, true);
    c.lists = block_lists_from_mask(c.mask, {300, 77}, 128);
    cases.push_back(c);
  }
  {
    Case c{"block-sparse 64, a different layout per head, varlen {200, 130}, bf16, d64"};
    c.q_rows = c.k_rows = 330;
    BlockLists all;
    for (int h = 0; h < c.heads; ++h) {
      MaskDesc m;
      add_layout(m, 200, 64, 0.4, false);
      add_layout(m, 130, 64, 0.4, false);
      BlockLists one = block_lists_from_mask(m, {200, 130}, 64);
      if (h == 0) {
        all = one;
        all.head_slots = c.heads;
        all.full.assign(one.full.size() * size_t(c.heads), {});
        all.partial.assign(one.partial.size() * size_t(c.heads), {});
      }
      for (size_t i = 0; i < one.full.size(); ++i) {
        all.full[i * size_t(c.heads) + size_t(h)] = one.full[i];
        all.partial[i * size_t(c.heads) + size_t(h)] = one.partial[i];
      }
    }
    c.lists = all;
    cases.push_back(c);
  }
  {
    Case c{"head range [1, 3) of 4, GQA 2:1 (a KV head half in range), causal, bf16, d128"};
    c.head_dim = 128;
    c.head_begin = 1;
    c.head_end = 3;
    c.q_rows = c.k_rows = 100;
    c.segs = {square(100)};
    c.mask = causal();
    cases.push_back(c);
  }
  {
    Case c{"layout looked up per element: stride-2 positions over a 64-block layout, fp16, d64"};
    c.dtype = DType::FP16;
    c.q_rows = c.k_rows = 150;
    c.segs = {{0, 0, 1, 2, 150, 0, 0, 2, 150}};
    c.mask = causal();
    add_layout(c.mask, 300, 64, 0.5, true);
    cases.push_back(c);
  }
  {
    // DCP's range masks: a lambda row (sink + band, two intervals) for sequence 0, a shared-question row (question
    // + the row's own answer) for sequence 1; some rows of the band's start see one interval only
    Case c{"per-row key intervals (lambda, shared question), varlen {260, 150} packed, bf16, d128, GQA 2:1"};
    c.head_dim = 128;
    c.kv_heads = c.heads / 2;
    c.q_rows = c.k_rows = 410;
    c.segs = {square(260), {1, 260, 0, 1, 150, 260, 0, 1, 150}};
    std::vector<int32_t> lam, sq;
    for (int32_t i = 0; i < 260; ++i) {
      const int32_t lo = std::max(0, i - 99), s = std::min(30, lo);
      lam.insert(lam.end(), {0, s, std::max(lo, s), i + 1});
    }
    for (int32_t i = 0; i < 150; ++i) // question [0, 40), answers [40, 95), [95, 150), causal within each
      sq.insert(sq.end(), i < 40 ? std::initializer_list<int32_t>{0, i + 1, 0, 0}
                                 : std::initializer_list<int32_t>{0, 40, i < 95 ? 40 : 95, i + 1});
    c.mask.row_ranges = {lam, sq};
    cases.push_back(c);
  }
  {
    Case c{"per-row key intervals from block lists of 128, causal, fp16, d64"};
    c.dtype = DType::FP16;
    c.q_rows = c.k_rows = 333;
    c.mask = causal();
    std::vector<int32_t> r;
    for (int32_t i = 0; i < 333; ++i) // causal blockwise: block 0 and the band of the last 128 keys
      r.insert(r.end(), {0, std::min(i + 1, 64), std::max(64, i - 127), i + 1});
    c.mask.row_ranges = {r};
    c.lists = block_lists_from_mask(c.mask, {333}, 128);
    cases.push_back(c);
  }
  for (const Case& c : cases)
    run_case(c);
}

TEST_CASE("n-way LSE merge equals attention over the union of the key sets") {
  const int rows = 37, H = 3, D = 64, n = 3;
  std::vector<std::unique_ptr<DevBuf>> os, ls;
  std::vector<std::vector<double>> ov, lv;
  MergeArgs m;
  m.rows = rows;
  m.head_begin = 0;
  m.head_end = H;
  m.head_dim = D;
  for (int i = 0; i < n; ++i) {
    os.push_back(std::make_unique<DevBuf>(i == 0 ? DType::FP32 : DType::BF16, size_t(rows * H * D)));
    ls.push_back(std::make_unique<DevBuf>(DType::FP32, size_t(rows * H)));
    ov.push_back(os.back()->put(randn(os.back()->n)));
    auto l = randn(ls.back()->n, 3.0);
    for (int r = 0; r < rows; ++r) // row 0: no partial has keys; row 1: only the last one
      for (int h = 0; h < H; ++h)
        if (r == 0 || (r == 1 && i < n - 1))
          l[size_t(r * H + h)] = -kInf;
    lv.push_back(ls.back()->put(l));
    m.o_in.push_back(os.back()->tensor(H * D));
    m.lse_in.push_back(ls.back()->tensor(H));
  }
  DevBuf o(DType::BF16, size_t(rows * H * D)), lse(DType::FP32, size_t(rows * H));
  o.poison();
  lse.poison();
  m.o_out = o.tensor(H * D);
  m.lse_out = lse.tensor(H);
  merge_lse(m);
  CK(cudaDeviceSynchronize());
  const auto go = o.get(), gl = lse.get();
  for (int r = 0; r < rows; ++r)
    for (int h = 0; h < H; ++h) {
      const size_t li = size_t(r * H + h);
      double mx = -kInf;
      for (int i = 0; i < n; ++i)
        mx = std::max(mx, lv[size_t(i)][li]);
      if (mx == -kInf) {
        REQUIRE(gl[li] == -kInf);
        for (int d = 0; d < D; ++d)
          REQUIRE(go[li * D + size_t(d)] == 0.0);
        continue;
      }
      double s = 0;
      for (int i = 0; i < n; ++i)
        s += std::exp(lv[size_t(i)][li] - mx);
      const double L = mx + std::log(s);
      REQUIRE(std::abs(gl[li] - L) <= 1e-5 * std::max(1.0, std::abs(L)));
      for (int d = 0; d < D; ++d) {
        double want = 0;
        for (int i = 0; i < n; ++i)
          want += std::exp(lv[size_t(i)][li] - L) * ov[size_t(i)][li * D + size_t(d)];
        REQUIRE(std::abs(go[li * D + size_t(d)] - want) <= 1e-2 * std::max(1.0, std::abs(want)));
      }
    }
  // in place: the fp32 accumulator is also the output (how the backend's merge uses it)
  m.o_out = m.o_in[0];
  m.lse_out = m.lse_in[0];
  merge_lse(m);
  CK(cudaDeviceSynchronize());
  const auto io = os[0]->get(), il = ls[0]->get();
  for (size_t i = 0; i < gl.size(); ++i) {
    REQUIRE((std::isinf(gl[i]) ? il[i] == gl[i] : std::abs(il[i] - gl[i]) <= 1e-5 * std::max(1.0, std::abs(gl[i]))));
    for (int d = 0; d < D; ++d)
      REQUIRE(std::abs(io[i * D + size_t(d)] - go[i * D + size_t(d)]) <= 1e-2 * std::max(1.0, std::abs(go[i * D + size_t(d)])));
  }
}

TEST_CASE("gathers copy rows and blocks by index, zero-filling past the end") {
  const int64_t rows = 300, width = 40; // 80-byte rows: the byte path; blocks use 16-byte rows
  DevBuf src(DType::BF16, size_t(rows * width));
  const auto sv = src.put(randn(src.n));
  std::vector<int64_t> idx = {5, 299, 0, 5, 123};
  int64_t* didx = nullptr;
  CK(cudaMalloc(&didx, idx.size() * 8));
  CK(cudaMemcpy(didx, idx.data(), idx.size() * 8, cudaMemcpyHostToDevice));
  DevBuf dst(DType::BF16, idx.size() * size_t(width));
  dst.poison();
  gather_rows(dst.p, width * 2, src.p, width * 2, width * 2, didx, int64_t(idx.size()), nullptr);
  CK(cudaDeviceSynchronize());
  auto dv = dst.get();
  for (size_t r = 0; r < idx.size(); ++r)
    for (int64_t c = 0; c < width; ++c)
      REQUIRE(dv[r * size_t(width) + size_t(c)] == sv[size_t(idx[r] * width + c)]);
  // blocks of 64 rows of 8 elements (16 bytes): block 4 runs past row 300 and is zero-filled there
  const int64_t w = 8, br = 64;
  DevBuf s2(DType::BF16, size_t(rows * w));
  const auto s2v = s2.put(randn(s2.n));
  std::vector<int64_t> bidx = {4, 1};
  CK(cudaMemcpy(didx, bidx.data(), bidx.size() * 8, cudaMemcpyHostToDevice));
  DevBuf d2(DType::BF16, size_t(2 * br * w));
  d2.poison();
  gather_blocks(d2.p, s2.p, w * 2, br, rows, didx, 2, nullptr);
  CK(cudaDeviceSynchronize());
  auto d2v = d2.get();
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t r = 0; r < br; ++r)
      for (int64_t c = 0; c < w; ++c) {
        const int64_t srow = bidx[size_t(b)] * br + r;
        REQUIRE(d2v[size_t((b * br + r) * w + c)] == (srow < rows ? s2v[size_t(srow * w + c)] : 0.0));
      }
  cudaFree(didx);
}

int main(int argc, char** argv) {
  std::string why;
  if (!gpu_available(&why)) {
    std::printf("SKIP: the kernel GPU tests need a CUDA GPU (%s)\n", why.c_str());
    return 77;
  }
  const uint64_t seed = std::random_device{}();
  std::printf("kernel GPU tests: random seed %llu\n", static_cast<unsigned long long>(seed));
  g_rng.seed(seed);
  return Catch::Session().run(argc, argv);
}
