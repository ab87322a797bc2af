// `cpsim run --check --loopback` on the one GPU a machine has: 2- and 4-rank plans (point-to-point rings,
// all-to-alls, a hybrid of both) must match single-GPU attention, which they can only do if every byte
// the ranks exchange arrived where it belongs; the output must say the times are not the plan's; the spin
// kernel signalling must work as well as the stream memory operations; a plan whose ranks do not fit and a
// rank that hangs must end in their errors (exit 3), never in a hang. Runs the cpsim binary (CPSIM_BIN, or
// the environment's CPSIM_BIN on a machine the tests were copied to). Exits 77 (skipped) without a GPU.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>

namespace fs = std::filesystem;

namespace {

std::string g_bin = CPSIM_BIN;
fs::path g_dir;

struct Run {
  int code = -1;
  std::string out;
  double wall_s = 0;
};

Run run_cpsim(const std::string& args) {
  const auto t0 = std::chrono::steady_clock::now();
  // a bound of its own, so that a hang fails this test instead of stalling the suite
  FILE* f = popen(("timeout -k 5 300 " + g_bin + " " + args + " 2>&1").c_str(), "r");
  REQUIRE(f != nullptr);
  Run r;
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), f))
    r.out.append(buf.data(), n);
  const int status = pclose(f);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

/** A small scenario file: 8192 tokens, 32 query heads over 8 KV heads of 128, bf16. */
std::string scenario(const std::string& name, const std::string& scheme, int cp, const std::string& mask,
                     const std::string& pass, const std::string& extra = "") {
  const std::string m = mask == "causal" ? R"({"kind": "causal"})"
                        : mask == "full" ? R"({"kind": "full"})"
                                         : R"({"kind": "block_sparse", "block": 128, "density": 0.3, "seed": 1, "causal": true})";
  const fs::path p = g_dir / (name + ".json");
  std::ofstream(p) << R"({"name": ")" << name << R"(", "hardware": "h100-sxm-8", "pass": ")" << pass
                   << R"(", "parallel": {"scheme": ")" << scheme << R"(", "cp": )" << cp << extra
                   << R"(}, "workload": {"seq_lens": [8192], "heads": 32, "kv_heads": 8, "head_dim": 128, "dtype": "bf16", "mask": )"
                   << m << "}}";
  return p.string();
}

const std::string kFast = " --reps 2 --warmup 1 --profile-reps 0 --timeout 60";

/** Passes when cpsim ran every rank's check and each said yes; prints the output otherwise. */
void require_checked(const Run& r, int ranks) {
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("LOOPBACK") != std::string::npos);
  const size_t table = r.out.find("check (vs single-GPU attention)");
  REQUIRE(table != std::string::npos);
  std::istringstream rows(r.out.substr(table));
  std::string row;
  std::getline(rows, row); // the header
  size_t yes = 0, no = 0;
  while (std::getline(rows, row)) { // "   rank  tensor  rel_l2  max_abs  yes|NO" or "... yes|NO: why"
    yes += row.find(" yes") != std::string::npos;
    no += row.find(" NO") != std::string::npos;
  }
  CHECK(no == 0);
  CHECK(yes >= size_t(ranks)); // o at least, on every rank
}

} // namespace

TEST_CASE("2 ranks on one GPU: ring and zigzag, forward and backward, match single-GPU attention") {
  for (const char* pass : {"fwd", "fwd_bwd"}) {
    const std::string json = (g_dir / (std::string("ring2_") + pass + ".out.json")).string();
    Run r = run_cpsim("run " + scenario(std::string("ring2_") + pass, "ring", 2, "causal", pass) + " --check --loopback" + kFast +
                      " --json " + json);
    require_checked(r, 2);
    std::ifstream in(json);
    std::stringstream ss;
    ss << in.rdbuf();
    CHECK(ss.str().find("\"loopback\"") != std::string::npos); // the result file says so as well
    CHECK(ss.str().find("\"check_ok\": true") != std::string::npos);
  }
  require_checked(run_cpsim("run " + scenario("zigzag2", "zigzag", 2, "sparse", "fwd_bwd") + " --check --loopback" + kFast), 2);
}

TEST_CASE("4 ranks on one GPU: ring, Ulysses' all-to-alls and USP's hybrid match single-GPU attention") {
  require_checked(run_cpsim("run " + scenario("ring4", "ring", 4, "full", "fwd_bwd") + " --check --loopback" + kFast), 4);
  require_checked(run_cpsim("run " + scenario("ulysses4", "ulysses", 4, "causal", "fwd_bwd") + " --check --loopback" + kFast), 4);
  require_checked(run_cpsim("run " + scenario("usp4", "usp", 4, "causal", "fwd_bwd", R"(, "ulysses_degree": 2, "ring_degree": 2)") +
                            " --check --loopback" + kFast),
                  4);
}

TEST_CASE("the spin-kernel signalling checks out like the stream memory operations") {
  Run r = run_cpsim("run " + scenario("zigzag4_spin", "zigzag", 4, "causal", "fwd_bwd") +
                    " --check --loopback --loopback-sync kernels" + kFast);
  require_checked(r, 4);
  CHECK(r.out.find("spin kernels") != std::string::npos);
}

TEST_CASE("ranks that do not fit on the GPU together are refused with the sizes, exit 3") {
  Run r = run_cpsim("run " + scenario("ring4_nofit", "ring", 4, "causal", "fwd") + " --loopback --memory-limit 1000000" + kFast);
  INFO(r.out);
  CHECK(r.code == 3);
  CHECK(r.out.find("--loopback: the 4 ranks need") != std::string::npos);
}

TEST_CASE("a rank that hangs ends the loopback run with the cause named, exit 3, within the timeouts") {
  Run r = run_cpsim("run " + scenario("ring2_hang", "ring", 2, "causal", "fwd") +
                    " --loopback --comm-only --reps 2 --warmup 1 --profile-reps 0 --timeout 5 --inject hang:1");
  INFO(r.out);
  CHECK(r.code == 3);
  CHECK(r.out.find("run failed: rank") != std::string::npos);
  CHECK(r.out.find("no progress for") != std::string::npos); // the in-loop deadline or the watchdog, naming the op
  CHECK(r.wall_s < 60);
}

int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::puts("no CUDA device: the loopback GPU tests are skipped");
    return 77;
  }
  if (const char* b = std::getenv("CPSIM_BIN"); b && *b)
    g_bin = b;
  std::string tmpl = (fs::temp_directory_path() / "cpsim-loopback-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) {
    std::perror("mkdtemp");
    return 1;
  }
  g_dir = tmpl;
  const int rc = Catch::Session().run(argc, argv);
  fs::remove_all(g_dir);
  return rc;
}
