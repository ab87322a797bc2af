// GPU correctness of the backend's own kernels for the sparse schedules, against CPU arithmetic: DSV's projection,
// threshold and top-k passes (what --check cannot see: the predictor does not steer the attention), PIT's index build,
// micro-tile gather (K, V; one head's Q and LSE), scatter-merge of packed partials and gradient scatter, and TE p2p's fp64 LSE fold and output correction. Exits 77 (skipped) without
// a GPU.
#define CATCH_CONFIG_RUNNER
#include "../../hardware/src/backend/gather_kernels.hpp"
#include "../../hardware/src/backend/merge_kernels.hpp"
#include "../../hardware/src/backend/predictor_kernels.hpp"

#include <catch2/catch.hpp>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

using namespace cpsim::backend;

namespace {

std::mt19937_64 g_rng;

template <class T> T* dev(const std::vector<T>& v) {
  void* p = nullptr;
  REQUIRE(cudaMalloc(&p, std::max<size_t>(v.size() * sizeof(T), 16)) == cudaSuccess);
  if (!v.empty())
    REQUIRE(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  return static_cast<T*>(p);
}
template <class T> std::vector<T> host(const T* p, size_t n) {
  std::vector<T> v(n);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  REQUIRE(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
  return v;
}

std::vector<__nv_bfloat16> random_bf16(size_t n) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<__nv_bfloat16> v(n);
  for (auto& x : v)
    x = __float2bfloat16(u(g_rng));
  return v;
}

uint32_t bin_of(float s) {
  uint32_t u;
  std::memcpy(&u, &s, 4);
  return ((u & 0x80000000u) ? ~u : (u | 0x80000000u)) >> 21;
}

} // namespace

TEST_CASE("DSV predictor: projections, then each proxy's k keys at or above its k-th largest estimate's bin") {
  const int rank = 8, heads = 2, dim = 64;
  const int64_t queries = 200, keys = 1000, qg = 4, proxies = (queries + qg - 1) / qg;
  const std::vector<int64_t> keep = {100, 37};
  // projections: q [queries][heads][dim] -> q_lr [queries][heads][rank]; k [keys][1][dim] -> k_lr
  auto q = random_bf16(size_t(queries * heads * dim)), k = random_bf16(size_t(keys * dim));
  auto wq = random_bf16(size_t(dim * rank)), wk = random_bf16(size_t(dim * rank));
  auto *dq = dev(q), *dk = dev(k), *dwq = dev(wq), *dwk = dev(wk);
  auto *dql = dev(std::vector<__nv_bfloat16>(size_t(queries * heads * rank))), *dkl = dev(std::vector<__nv_bfloat16>(size_t(keys * rank)));
  project_rows(dql, dq, dwq, queries * heads, dim, rank, nullptr);
  project_rows(dkl, dk, dwk, keys, dim, rank, nullptr);
  const auto ql = host(dql, size_t(queries * heads * rank)), kl = host(dkl, size_t(keys * rank));
  for (int64_t m = 0; m < queries * heads; ++m)
    for (int j = 0; j < rank; ++j) {
      double want = 0;
      for (int d = 0; d < dim; ++d)
        want += double(__bfloat162float(q[size_t(m * dim + d)])) * __bfloat162float(wq[size_t(d * rank + j)]);
      REQUIRE(__bfloat162float(ql[size_t(m * rank + j)]) == Approx(want).margin(0.05 + 0.01 * std::fabs(want)));
    }
  // the two passes
  std::vector<int64_t> bseq, bhead, bproxy;
  for (int h = 0; h < heads; ++h)
    for (int64_t p = 0; p < proxies; p += kPredictorProxies) {
      bseq.push_back(0);
      bhead.push_back(h);
      bproxy.push_back(p);
    }
  const std::vector<int64_t> index_offset = {0, proxies * keep[0]};
  PredictorArgs a;
  a.q_lr = dql;
  a.k_lr = dkl;
  a.q_row_elems = heads * rank;
  a.k_row_elems = rank;
  a.rank = rank;
  a.heads = heads;
  a.query_group = qg;
  a.block_seq = dev(bseq);
  a.block_head = dev(bhead);
  a.block_proxy = dev(bproxy);
  a.blocks = int64_t(bseq.size());
  a.seq_q_row = dev(std::vector<int64_t>{0});
  a.seq_queries = dev(std::vector<int64_t>{queries});
  a.seq_first_proxy = dev(std::vector<int64_t>{0});
  a.seq_k_row = dev(std::vector<int64_t>{0});
  a.seq_keys = dev(std::vector<int64_t>{keys});
  a.kv_pos = dev(std::vector<int32_t>{0, 0});
  a.keep = dev(keep);
  a.index_offset = dev(index_offset);
  a.threshold = dev(std::vector<uint32_t>(size_t(2 * proxies * heads), 0));
  a.index = dev(std::vector<int32_t>(size_t(proxies * (keep[0] + keep[1])), -1));
  predictor_thresholds(a, nullptr);
  predictor_topk(a, nullptr);
  const auto thr = host(a.threshold, size_t(2 * proxies * heads));
  const auto idx = host(a.index, size_t(proxies * (keep[0] + keep[1])));
  for (int h = 0; h < heads; ++h)
    for (int64_t p = 0; p < proxies; ++p) {
      std::vector<uint32_t> bins(static_cast<size_t>(keys));
      for (int64_t j = 0; j < keys; ++j) {
        float s = 0.f; // the kernel's order of operations, so the bins agree exactly
        for (int d = 0; d < rank; ++d)
          s = std::fma(__bfloat162float(ql[size_t((p * qg * heads + h) * rank + d)]), __bfloat162float(kl[size_t(j * rank + d)]), s);
        bins[size_t(j)] = bin_of(s);
      }
      std::vector<uint32_t> sorted = bins;
      std::sort(sorted.begin(), sorted.end(), std::greater<>());
      const uint32_t tbin = sorted[size_t(keep[size_t(h)] - 1)];
      const uint32_t above = uint32_t(std::count_if(bins.begin(), bins.end(), [&](uint32_t b) { return b > tbin; }));
      INFO("head " << h << " proxy " << p);
      CHECK(thr[size_t(2 * (p * heads + h))] == tbin);
      CHECK(thr[size_t(2 * (p * heads + h) + 1)] == above);
      std::vector<int32_t> got(idx.begin() + index_offset[size_t(h)] + p * keep[size_t(h)],
                               idx.begin() + index_offset[size_t(h)] + (p + 1) * keep[size_t(h)]);
      std::sort(got.begin(), got.end());
      CHECK(std::adjacent_find(got.begin(), got.end()) == got.end()); // distinct keys
      CHECK(got.front() >= 0);
      uint32_t taken_above = 0;
      for (int32_t j : got) {
        REQUIRE(j < keys);
        CHECK(bins[size_t(j)] >= tbin);
        taken_above += bins[size_t(j)] > tbin;
      }
      CHECK(taken_above == above); // every key above the bin is taken
    }
}

TEST_CASE("PIT gather: the index built from the flags, the indexed rows packed; the scatter sums copies home") {
  // two query tiles of one sequence of 100 keys, micro-tiles of 16: tile 0 flags {1, 3, 6} (the last is 4 keys long),
  // tile 1 flags {0, 3}; rows of 2 KV heads x 16 elements, K then V
  const int64_t keys = 100, g = 16, row = 2 * 16;
  const std::vector<uint8_t> flags = {0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0};
  auto src = random_bf16(size_t(2 * keys * row));
  int32_t* index = dev(std::vector<int32_t>(5, -1));
  build_microtile_index(index, dev(flags), dev(std::vector<int64_t>{0, 7}), dev(std::vector<int32_t>{7, 7}),
                        dev(std::vector<int64_t>{0, 0}), dev(std::vector<int64_t>{0, 3}), 2, nullptr);
  CHECK(host(index, 5) == std::vector<int32_t>{1, 3, 6, 0, 3});
  const std::vector<int64_t> dst_row = {0, 16, 32, 36, 52}; // packed: 16 + 16 + 4, then 16 + 16 rows
  const int64_t packed = 68;
  auto* dsrc = dev(src);
  auto* dpacked = dev(std::vector<__nv_bfloat16>(size_t(2 * packed * row)));
  MicrotileGather m;
  for (int plane = 0; plane < 2; ++plane) // K and V
    m.planes[m.n_planes++] = {reinterpret_cast<const char*>(dsrc) + plane * keys * row * 2, row * 2, 16 * 2,
                              reinterpret_cast<char*>(dpacked) + plane * packed * row * 2, row * 2};
  m.granularity = g;
  m.index = index;
  m.entry_src_row0 = dev(std::vector<int64_t>(5, 0));
  m.entry_head = dev(std::vector<int32_t>(5, 0));
  m.entry_dst_row = dev(dst_row);
  m.entry_lo = dev(std::vector<int64_t>(5, 0));
  m.entry_hi = dev(std::vector<int64_t>(5, keys));
  m.entries = 5;
  gather_microtiles(m, nullptr);
  const auto out = host(dpacked, size_t(2 * packed * row));
  const std::vector<int64_t> first = {16, 48, 96, 0, 48};
  for (int plane = 0; plane < 2; ++plane)
    for (size_t e = 0; e < 5; ++e)
      for (int64_t x = 0; x < std::min<int64_t>(g, keys - first[e]); ++x)
        for (int64_t c = 0; c < row; ++c)
          REQUIRE(std::memcmp(&out[size_t((plane * packed + dst_row[e] + x) * row + c)],
                              &src[size_t((plane * keys + first[e] + x) * row + c)], 2) == 0);
  // scatter: packed rows summed into their 100 home rows, every home row written (zero where no copy)
  std::vector<int64_t> unit_dst, begin = {0}, copy_src;
  for (int64_t h = 0; h < keys; ++h) {
    unit_dst.push_back(h * row * 2);
    for (size_t e = 0; e < 5; ++e)
      if (h >= first[e] && h < std::min(first[e] + g, keys))
        copy_src.push_back((dst_row[e] + h - first[e]) * row * 2);
    begin.push_back(int64_t(copy_src.size()));
  }
  auto* dhome = dev(std::vector<__nv_bfloat16>(size_t(2 * keys * row), __float2bfloat16(7.f)));
  GradientScatter s;
  s.src = reinterpret_cast<const char*>(dpacked);
  s.src_plane_bytes = packed * row * 2;
  s.dst = reinterpret_cast<char*>(dhome);
  s.dst_plane_bytes = keys * row * 2;
  s.unit_elems = row;
  s.unit_dst = dev(unit_dst);
  s.copy_begin = dev(begin);
  s.copy_src = dev(copy_src);
  s.units = keys;
  scatter_gradients(s, nullptr);
  const auto home = host(dhome, size_t(2 * keys * row));
  for (int plane = 0; plane < 2; ++plane)
    for (int64_t h = 0; h < keys; ++h)
      for (int64_t c = 0; c < row; ++c) {
        float want = 0;
        for (int64_t i = begin[size_t(h)]; i < begin[size_t(h) + 1]; ++i)
          want += __bfloat162float(out[size_t(plane * packed * row + copy_src[size_t(i)] / 2 + c)]);
        REQUIRE(__bfloat162float(home[size_t((plane * keys + h) * row + c)]) == Approx(want).margin(0.02));
      }
}

TEST_CASE("PIT along rows: one head's Q and fp32 LSE rows gathered by index, partials merged home by LSE, dQ summed") {
  // 3 heads of 8 elements per row, 40 query rows; per-head slot of head 1: micro-tiles 1 and 3 of 8 positions,
  // clipped to the rectangle's span [10, 30); the source rows offset by 5 (position p is row p + 5)
  const int heads = 3, dim = 8, g = 8;
  const int64_t rows = 40, packed = 16;
  auto q = random_bf16(size_t(rows * heads * dim));
  std::vector<float> lse(size_t(rows * heads));
  std::uniform_real_distribution<float> u(-3.f, 3.f);
  for (auto& x : lse)
    x = u(g_rng);
  auto* dq_src = dev(q);
  auto* dlse_src = dev(lse);
  auto* dq_packed = dev(std::vector<__nv_bfloat16>(size_t(packed * dim)));
  auto* dlse_packed = dev(std::vector<float>(size_t(packed), 0.f));
  MicrotileGather m;
  m.planes[m.n_planes++] = {reinterpret_cast<const char*>(dq_src), heads * dim * 2, dim * 2, reinterpret_cast<char*>(dq_packed), dim * 2};
  m.planes[m.n_planes++] = {reinterpret_cast<const char*>(dlse_src), heads * 4, 4, reinterpret_cast<char*>(dlse_packed), 4};
  m.granularity = g;
  m.index = dev(std::vector<int32_t>{1, 3}); // micro-tiles 1 and 3: positions 8.. and 24..
  m.entry_src_row0 = dev(std::vector<int64_t>{5, 5});
  m.entry_head = dev(std::vector<int32_t>{1, 1});
  m.entry_dst_row = dev(std::vector<int64_t>{0, 8});
  m.entry_lo = dev(std::vector<int64_t>{10, 10}); // clipped: micro-tile 1 starts at position 10, not 8
  m.entry_hi = dev(std::vector<int64_t>{30, 30});  // micro-tile 3 ends at 30, not 32
  m.entries = 2;
  gather_microtiles(m, nullptr);
  const auto pq = host(dq_packed, size_t(packed * dim));
  const auto pl = host(dlse_packed, size_t(packed));
  for (int64_t r = 0; r < packed; ++r) {
    const bool copied = r < 6 || (r >= 8 && r < 14); // 6 rows each: [10, 16) and [24, 30)
    const int64_t src_row = 5 + (r < 8 ? 10 + r : 24 + r - 8);
    INFO("packed row " << r);
    if (!copied) {
      CHECK(pl[size_t(r)] == 0.f);
      continue;
    }
    CHECK(pl[size_t(r)] == lse[size_t(src_row * heads + 1)]);
    for (int d = 0; d < dim; ++d)
      REQUIRE(std::memcmp(&pq[size_t(r * dim + d)], &q[size_t((src_row * heads + 1) * dim + d)], 2) == 0);
  }
  // merge: 4 output units of one head; unit 0 from packed rows {0, 3, 9}, unit 1 from {5}, unit 2 from none, unit 3
  // from {2, 7} where row 7's LSE is -inf (a row that saw no key of its key tile)
  std::vector<float> part_lse = pl;
  part_lse[7] = -INFINITY;
  const std::vector<int64_t> begin = {0, 3, 4, 4, 6}, src = {0, 3, 9, 5, 2, 7};
  const std::vector<int64_t> unit_o = {0, 2 * dim, 5 * dim, 7 * dim}, unit_lse = {0, 2, 5, 7};
  auto* dout = dev(std::vector<__nv_bfloat16>(size_t(8 * dim), __float2bfloat16(9.f)));
  auto* dlse = dev(std::vector<float>(8, 9.f));
  PackedPartialMerge pm;
  pm.o_part = reinterpret_cast<const char*>(dq_packed);
  pm.lse_part = dev(part_lse);
  pm.o = reinterpret_cast<char*>(dout);
  pm.lse = dlse;
  pm.head_dim = dim;
  pm.unit_heads = 1;
  pm.unit_o = dev(unit_o);
  pm.unit_lse = dev(unit_lse);
  pm.copy_begin = dev(begin);
  pm.copy_src = dev(src);
  pm.units = 4;
  merge_packed_partials(pm, nullptr);
  const auto mo = host(dout, size_t(8 * dim));
  const auto ml = host(dlse, 8);
  for (size_t un = 0; un < 4; ++un) {
    double mx = -INFINITY;
    for (int64_t c = begin[un]; c < begin[un + 1]; ++c)
      mx = std::max<double>(mx, part_lse[size_t(src[size_t(c)])]);
    double sum = 0;
    for (int64_t c = begin[un]; c < begin[un + 1]; ++c)
      sum += std::isfinite(mx) ? std::exp(double(part_lse[size_t(src[size_t(c)])]) - mx) : 0.0;
    const double L = std::isfinite(mx) ? mx + std::log(sum) : -INFINITY;
    INFO("unit " << un);
    if (std::isfinite(L))
      CHECK(ml[size_t(unit_lse[un])] == Approx(L).epsilon(1e-5));
    else
      CHECK(ml[size_t(unit_lse[un])] == -INFINITY);
    for (int d = 0; d < dim; ++d) {
      double want = 0;
      for (int64_t c = begin[un]; std::isfinite(L) && c < begin[un + 1]; ++c)
        want += std::exp(double(part_lse[size_t(src[size_t(c)])]) - L) * __bfloat162float(pq[size_t(src[size_t(c)] * dim + d)]);
      CHECK(__bfloat162float(mo[size_t(unit_o[un] + d)]) == Approx(want).margin(0.02));
    }
  }
  CHECK(__bfloat162float(mo[size_t(1 * dim)]) == 9.f); // rows no unit names stay untouched
  // dQ scatter of one plane: packed rows home, summed (unit 0 of head 1 in a 3-head row)
  auto* dhome = dev(std::vector<__nv_bfloat16>(size_t(2 * heads * dim), __float2bfloat16(7.f)));
  GradientScatter sc;
  sc.planes = 1;
  sc.src = reinterpret_cast<const char*>(dq_packed);
  sc.src_plane_bytes = packed * dim * 2;
  sc.dst = reinterpret_cast<char*>(dhome);
  sc.dst_plane_bytes = 2 * heads * dim * 2;
  sc.unit_elems = dim;
  sc.unit_dst = dev(std::vector<int64_t>{1 * dim * 2, (heads + 1) * dim * 2});
  sc.copy_begin = dev(std::vector<int64_t>{0, 2, 2});
  sc.copy_src = dev(std::vector<int64_t>{1 * dim * 2, 4 * dim * 2});
  sc.units = 2;
  scatter_gradients(sc, nullptr);
  const auto home = host(dhome, size_t(2 * heads * dim));
  for (int d = 0; d < dim; ++d) {
    CHECK(__bfloat162float(home[size_t(dim + d)]) ==
          Approx(__bfloat162float(pq[size_t(dim + d)]) + __bfloat162float(pq[size_t(4 * dim + d)])).margin(0.02));
    CHECK(__bfloat162float(home[size_t((heads + 1) * dim + d)]) == 0.f); // a unit without copies is zeroed
    CHECK(__bfloat162float(home[size_t(d)]) == 7.f);                     // other heads untouched
  }
}

TEST_CASE("TE p2p correction: fp64 LSE fold over a partial's rows, then o += exp(L_step - L) O_step") {
  const int heads = 3, dim = 8;
  const int64_t rows = 10, part_rows = 4; // the partial holds rows 6..9 (a second half)
  std::uniform_real_distribution<float> u(-2.f, 2.f);
  std::vector<double> acc(size_t(rows * heads));
  std::vector<float> part(size_t(part_rows * heads));
  for (auto& x : acc)
    x = u(g_rng);
  for (auto& x : part)
    x = u(g_rng);
  part[1] = -INFINITY; // a row without keys adds nothing
  double* dacc = dev(acc);
  float* dpart = dev(part);
  lse_fold(dacc, 8, dpart, 0, 1, 6, 1, part_rows, heads, nullptr);
  const auto folded = host(dacc, acc.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int h = 0; h < heads; ++h) {
      double want = acc[size_t(r * heads + h)];
      if (r >= 6 && std::isfinite(part[size_t((r - 6) * heads + h)]))
        want = std::log(std::exp(want) + std::exp(double(part[size_t((r - 6) * heads + h)])));
      CHECK(folded[size_t(r * heads + h)] == Approx(want).epsilon(1e-12));
    }
  auto o_part = random_bf16(size_t(part_rows * heads * dim));
  std::vector<float> out(size_t(rows * heads * dim), 0.5f);
  float* dout = dev(out);
  out_correction(dout, 4, dev(o_part), 2, dpart, dacc, 8, 0, 1, 6, 1, part_rows, heads, dim, nullptr);
  const auto corrected = host(dout, out.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int h = 0; h < heads; ++h)
      for (int d = 0; d < dim; ++d) {
        double want = 0.5;
        if (r >= 6 && std::isfinite(part[size_t((r - 6) * heads + h)]))
          want += std::exp(double(part[size_t((r - 6) * heads + h)]) - folded[size_t(r * heads + h)]) *
                  __bfloat162float(o_part[size_t(((r - 6) * heads + h) * dim + d)]);
        CHECK(corrected[size_t((r * heads + h) * dim + d)] == Approx(want).epsilon(1e-5));
      }
}

int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("SKIP: the backend's sparse kernels need a CUDA GPU\n");
    return 77;
  }
  const uint64_t seed = std::random_device{}();
  std::printf("sparse kernel GPU tests: random seed %llu\n", static_cast<unsigned long long>(seed));
  g_rng.seed(seed);
  return Catch::Session().run(argc, argv);
}
