// cpsim_kernel_bench: times the attention kernels over block-sparse layouts (issue 3's matrix:
// H=16, D=128, bf16, S in {4k,16k,32k}, density in {1,0.5,0.25,0.1,0.05}, 128x128 blocks, forward
// and backward, causal and not) and reports TFLOP/s counting only unmasked cells (forward 4*cells*H*D,
// backward 2.5x). Writes bench.json and bench.md to --out, and each layout as layouts/S_d_c.bin
// (uint8 n x n, row-major) so that scripts/gpu/bench_peers.py times its peers on the same masks.
#include "cpsim/kernels/attention.hpp"
#include "cpsim/model/errors.hpp"
#include "cpsim/model/json_reader.hpp"

#include <CLI/CLI.hpp>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace kn = cpsim::kernels;

namespace {

#define BENCH_CUDA(call)                                                                                     \
  do {                                                                                                       \
    cudaError_t e_ = (call);                                                                                 \
    if (e_ != cudaSuccess)                                                                                   \
      throw kn::KernelError(std::string(#call) + ": " + cudaGetErrorString(e_) + " at " + __FILE__ + ":" +   \
                            std::to_string(__LINE__));                                                       \
  } while (0)

struct DevMem {
  void* p = nullptr;
  explicit DevMem(size_t bytes) { BENCH_CUDA(cudaMalloc(&p, std::max<size_t>(bytes, 16))); }
  ~DevMem() { cudaFree(p); }
  DevMem(const DevMem&) = delete;
};

void fill_random_bf16(void* dst, size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<__nv_bfloat16> h(n);
  for (auto& x : h)
    x = __float2bfloat16(d(rng));
  BENCH_CUDA(cudaMemcpy(dst, h.data(), n * 2, cudaMemcpyHostToDevice));
}

/** Unmasked cells (per head) of block lists under the causal/window rule for partial blocks. */
int64_t count_cells(const kn::BlockLists& b, const kn::MaskDesc& m) {
  int64_t cells = 0;
  for (size_t s = 0; s < b.seq_lens.size(); ++s) {
    const int64_t len = b.seq_lens[s];
    for (int64_t qb = 0; qb < b.blocks(int(s)); ++qb) {
      const size_t li = size_t(b.index(int(s), 0, qb));
      const int64_t q0 = qb * b.block, q1 = std::min(len, q0 + b.block);
      for (int32_t kb : b.full[li])
        cells += (q1 - q0) * (std::min(len, int64_t(kb + 1) * b.block) - int64_t(kb) * b.block);
      for (int32_t kb : b.partial[li])
        for (int64_t i = q0; i < q1; ++i)
          for (int64_t j = int64_t(kb) * b.block; j < std::min(len, int64_t(kb + 1) * b.block); ++j)
            cells += m.visible(int(s), i, j) ? 1 : 0;
    }
  }
  return cells;
}

/** Median seconds of `f` over reps (after warmup), capped to about `budget_s` of measuring. */
template <class F> double time_it(F&& f, int warmup, int reps, double budget_s, cudaStream_t st, int* done) {
  cudaEvent_t a, b;
  BENCH_CUDA(cudaEventCreate(&a));
  BENCH_CUDA(cudaEventCreate(&b));
  for (int i = 0; i < warmup; ++i)
    f();
  std::vector<double> ts;
  double spent = 0;
  for (int i = 0; i < reps && (i == 0 || spent < budget_s); ++i) {
    BENCH_CUDA(cudaEventRecord(a, st));
    f();
    BENCH_CUDA(cudaEventRecord(b, st));
    BENCH_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, a, b));
    ts.push_back(ms * 1e-3);
    spent += ms * 1e-3;
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ts.begin(), ts.end());
  *done = int(ts.size());
  return ts[ts.size() / 2];
}

std::string density_tag(double d) {
  std::ostringstream o;
  o << d;
  return o.str();
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"cpsim_kernel_bench: TFLOP/s of the block-sparse attention kernels (unmasked cells only)"};
  std::string out = ".";
  std::vector<int64_t> seqs = {4096, 16384, 32768};
  std::vector<double> densities = {1.0, 0.5, 0.25, 0.1, 0.05};
  int heads = 16, dim = 128, warmup = 3, reps = 10;
  double budget_s = 2.0;
  uint64_t seed = 1;
  std::string impl_name = "fast", which = "fwd,bwd";
  app.add_option("--out", out, "Directory for bench.json, bench.md and layouts/");
  app.add_option("--seqs", seqs, "Sequence lengths")->delimiter(',');
  app.add_option("--densities", densities, "Block densities")->delimiter(',');
  app.add_option("--heads", heads, "Query heads (= KV heads)")->check(CLI::PositiveNumber);
  app.add_option("--dim", dim, "Head dimension (64 or 128)");
  app.add_option("--warmup", warmup, "Untimed launches first")->check(CLI::NonNegativeNumber);
  app.add_option("--reps", reps, "Timed launches (median reported)")->check(CLI::PositiveNumber);
  app.add_option("--budget-s", budget_s, "Stop repeating a case after this much measured time");
  app.add_option("--seed", seed, "Layout and input seed");
  app.add_option("--impl", impl_name, "fast (wgmma on Hopper, else mma), wgmma, mma (mma.sync) or reference (scalar)")
      ->check(CLI::IsMember({"fast", "wgmma", "mma", "reference"}));
  app.add_option("--passes", which, "fwd, bwd or fwd,bwd");
  CLI11_PARSE(app, argc, argv);
  try {
    std::string why;
    if (!kn::gpu_available(&why)) {
      std::fprintf(stderr, "cpsim_kernel_bench: no usable GPU (%s)\n", why.c_str());
      return 77;
    }
    if (dim != 64 && dim != 128)
      throw cpsim::UserError("--dim " + std::to_string(dim) + ": must be 64 or 128");
    for (double d : densities)
      if (!(d > 0 && d <= 1))
        throw cpsim::UserError("--densities: " + std::to_string(d) + " is not in (0, 1]");
    const bool do_fwd = which.find("fwd") != std::string::npos, do_bwd = which.find("bwd") != std::string::npos;
    const kn::Impl impl = impl_name == "wgmma" ? kn::Impl::WGMMA
                          : impl_name == "mma"   ? kn::Impl::MMA
                          : impl_name == "fast"  ? kn::fast_impl()
                                                 : kn::Impl::REFERENCE;
    if (std::string why; !kn::impl_available(impl, &why))
      throw cpsim::UserError("--impl " + impl_name + ": " + why);
    impl_name = kn::to_string(impl); // the rows name the kernels that ran
    std::filesystem::create_directories(std::filesystem::path(out) / "layouts");
    cudaDeviceProp prop{};
    BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
    cudaStream_t st;
    BENCH_CUDA(cudaStreamCreate(&st));
    cpsim::Json rows = cpsim::Json::array();
    std::ostringstream md;
    md << "| S | causal | density | pass | cells (per head) | time ms | TFLOP/s |\n|---|---|---|---|---|---|---|\n";
    for (int64_t S : seqs) {
      const size_t n = size_t(S) * size_t(heads) * size_t(dim);
      DevMem q(n * 2), k(n * 2), v(n * 2), o(n * 2), lse(size_t(S) * size_t(heads) * 4), dout(n * 2), dq(n * 2), dk(n * 2),
          dv(n * 2);
      fill_random_bf16(q.p, n, seed);
      fill_random_bf16(k.p, n, seed + 1);
      fill_random_bf16(v.p, n, seed + 2);
      fill_random_bf16(dout.p, n, seed + 3);
      for (bool causal : {false, true})
        for (double density : densities) {
          kn::MaskDesc m;
          m.causal = causal;
          const int64_t nb = (S + 127) / 128;
          if (density < 1.0) {
            m.layout_block = 128;
            m.layouts.push_back(kn::random_layout(nb, density, seed + uint64_t(S), causal));
            m.layout_n_blocks.push_back(nb);
          }
          const kn::BlockLists lists = kn::block_lists_from_mask(m, {S}, 128);
          {
            std::vector<uint8_t> bits(size_t(nb * nb), 0);
            for (int64_t qb = 0; qb < nb; ++qb) {
              for (int32_t kb : lists.full[size_t(qb)])
                bits[size_t(qb * nb + kb)] = 1;
              for (int32_t kb : lists.partial[size_t(qb)])
                bits[size_t(qb * nb + kb)] = 1;
            }
            std::ofstream f(std::filesystem::path(out) / "layouts" /
                                (std::to_string(S) + "_" + density_tag(density) + "_" + (causal ? "c" : "n") + ".bin"),
                            std::ios::binary);
            f.write(reinterpret_cast<const char*>(bits.data()), std::streamsize(bits.size()));
          }
          const kn::KernelPlan kplan = kn::plan_block_lists(lists, m);
          const kn::DevicePlan plan(kplan, m, st);
          const int64_t cells = count_cells(lists, m);
          kn::AttnArgs a;
          a.head_dim = dim;
          a.head_begin = 0;
          a.head_end = heads;
          a.heads_per_kv = 1;
          a.stream = st;
          const int64_t rs = int64_t(heads) * dim;
          a.q = {q.p, rs, 0, kn::DType::BF16};
          a.k = {k.p, rs, 0, kn::DType::BF16};
          a.v = {v.p, rs, 0, kn::DType::BF16};
          a.o = {o.p, rs, 0, kn::DType::BF16};
          a.lse = {lse.p, heads, 0, kn::DType::FP32};
          a.out = a.o;
          a.lse_in = a.lse;
          a.dout = {dout.p, rs, 0, kn::DType::BF16};
          a.dq = {dq.p, rs, 0, kn::DType::BF16};
          a.dk = {dk.p, rs, 0, kn::DType::BF16};
          a.dv = {dv.p, rs, 0, kn::DType::BF16};
          const double fwd_flop = 4.0 * double(cells) * heads * dim;
          for (int pass = 0; pass < 2; ++pass) {
            if ((pass == 0 && !do_fwd) || (pass == 1 && !do_bwd))
              continue;
            int done = 0;
            // the backward needs O and LSE: one forward first
            attention_forward(a, plan, impl);
            const double t = pass == 0 ? time_it([&] { kn::attention_forward(a, plan, impl); }, warmup, reps, budget_s, st, &done)
                                       : time_it([&] { kn::attention_backward(a, plan, impl); }, warmup, reps, budget_s, st, &done);
            const double flop = pass == 0 ? fwd_flop : 2.5 * fwd_flop;
            const double tflops = flop / t * 1e-12;
            rows.push_back({{"S", S}, {"causal", causal}, {"density", density}, {"pass", pass == 0 ? "fwd" : "bwd"},
                            {"impl", impl_name}, {"cells_per_head", cells},
                            {"full_tile_pairs", kplan.full_pairs()}, {"partial_tile_pairs", kplan.partial_pairs()},
                            {"time_s", t}, {"reps", done}, {"tflops", tflops}});
            md << "| " << S << " | " << (causal ? "yes" : "no") << " | " << density << " | " << (pass == 0 ? "fwd" : "bwd")
               << " | " << cells << " | " << t * 1e3 << " | " << tflops << " |\n";
            std::printf("S=%lld causal=%d density=%g %s: %.3f ms, %.1f TFLOP/s\n", static_cast<long long>(S), int(causal), density,
                        pass == 0 ? "fwd" : "bwd", t * 1e3, tflops);
            std::fflush(stdout);
          }
        }
    }
    cpsim::Json j = {{"tool", "cpsim_kernel_bench"},
                     {"gpu", prop.name},
                     {"sm_count", prop.multiProcessorCount},
                     {"command", [&] {
                        std::string c;
                        for (int i = 0; i < argc; ++i)
                          c += (i ? " " : "") + std::string(argv[i]);
                        return c;
                      }()},
                     {"heads", heads},
                     {"head_dim", dim},
                     {"dtype", "bf16"},
                     {"block", 128},
                     {"flop_convention", "fwd 4*cells*H*D over unmasked cells; bwd 2.5x fwd"},
                     {"rows", rows}};
    cpsim::save_json_file((std::filesystem::path(out) / "bench.json").string(), j, 2);
    std::ofstream((std::filesystem::path(out) / "bench.md")) << "# cpsim kernels on " << prop.name << "\n\n" << md.str();
    cudaStreamDestroy(st);
  } catch (const cpsim::UserError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cpsim_kernel_bench failed: %s\n", e.what());
    return 1;
  }
  return 0;
}
