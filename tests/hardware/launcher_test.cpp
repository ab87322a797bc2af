// The launcher with ordinary programs as ranks: success, a rank that fails, a rank killed by a
// signal, and a run that outlives its timeout; siblings must be stopped within the grace time.
#include "cpsim/hardware/backend/launcher.hpp"
#include "cpsim/hardware/backend/rendezvous.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>

using namespace cpsim::backend;

namespace {
std::vector<std::string> sh(const std::string& cmd) { return {"/bin/sh", "-c", cmd}; }
auto no_env = [](int) { return std::vector<std::string>{}; };
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
} // namespace

TEST_CASE("all ranks succeed; each sees its own environment") {
  auto rep = launch_local(
      3, [](int r) { return sh("test \"$CPSIM_RANK\" = " + std::to_string(r)); },
      [](int r) { return std::vector<std::string>{"CPSIM_RANK=" + std::to_string(r)}; }, 20);
  CHECK(rep.ok);
  CHECK(rep.failed_rank == -1);
}

TEST_CASE("a failing rank is named and its siblings are stopped at once") {
  auto t0 = std::chrono::steady_clock::now();
  auto rep = launch_local(3, [](int r) { return sh(r == 1 ? "sleep 0.2; exit 3" : "sleep 30"); }, no_env, 60, 1);
  CHECK_FALSE(rep.ok);
  CHECK(rep.failed_rank == 1);
  CHECK(rep.exit_code == 3);
  CHECK(rep.cause == "rank 1 exited with code 3");
  CHECK(rep.outcomes[0].killed_by_launcher);
  CHECK(seconds_since(t0) < 10);
}

TEST_CASE("a rank killed by a signal is reported with the signal") {
  auto rep = launch_local(2, [](int r) { return sh(r == 0 ? "kill -9 $$" : "sleep 30"); }, no_env, 60, 1);
  CHECK(rep.failed_rank == 0);
  CHECK(rep.cause.find("signal 9") != std::string::npos);
  CHECK(rep.exit_code != 0);
}

TEST_CASE("a run that never finishes ends at the timeout") {
  auto t0 = std::chrono::steady_clock::now();
  auto rep = launch_local(2, [](int) { return sh("sleep 30"); }, no_env, 0.5, 0.5);
  CHECK_FALSE(rep.ok);
  CHECK(rep.exit_code == 3);
  CHECK(rep.cause.find("did not finish") != std::string::npos);
  CHECK(seconds_since(t0) < 10);
}

TEST_CASE("rendezvous files appear whole and waits are bounded") {
  std::string dir = make_run_dir();
  publish_file(dir, "id", std::string("\0abc", 4));
  CHECK(wait_for_file(dir, "id", 1, "the id").size() == 4);
  CHECK_THROWS_WITH(wait_for_file(dir, "missing", 0.1, "rank 3's report"), Catch::Contains("rank 3's report"));
  std::filesystem::remove_all(dir);
}
