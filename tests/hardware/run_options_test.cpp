// Argument checks of `cpsim run` and the rank -> device decision.
#include "cpsim/hardware/backend/run_options.hpp"
#include "cpsim/model/errors.hpp"

#include <catch2/catch.hpp>

using namespace cpsim;
using namespace cpsim::backend;

TEST_CASE("failure injection specs") {
  CHECK(parse_injection("").kind == InjectKind::NONE);
  auto d = parse_injection("die:1:7");
  CHECK(d.kind == InjectKind::DIE);
  CHECK(d.rank == 1);
  CHECK(d.op == 7);
  CHECK(parse_injection("hang:0").kind == InjectKind::HANG);
  CHECK(parse_injection("cuda:1").kind == InjectKind::CUDA_ERROR);
  CHECK_THROWS_AS(parse_injection("explode:1"), UserError);
  CHECK_THROWS_AS(parse_injection("die"), UserError);
  CHECK_THROWS_AS(parse_injection("hang:0:3"), UserError);
  CHECK_THROWS_AS(parse_injection("die:x"), UserError);
}

TEST_CASE("option ranges") {
  RunOptions o;
  CHECK_NOTHROW(check_run_options(o));
  o.reps = 0;
  CHECK_THROWS_WITH(check_run_options(o), Catch::Contains("--reps"));
  o = RunOptions{};
  o.timeout_s = 0;
  CHECK_THROWS_WITH(check_run_options(o), Catch::Contains("--timeout"));
}

TEST_CASE("device of a rank") {
  CHECK(device_for_rank({0, 1, 2, 3}, 2, -1, 8) == 2);
  CHECK(device_for_rank({0, 1, 8, 9}, 2, -1, 8) == 0); // second node's first GPU
  CHECK(device_for_rank({0, 1}, 1, 0, 2) == 0);        // mpirun's local rank decides
  CHECK_THROWS_AS(device_for_rank({0}, 0, -1, 0), UserError);
}

TEST_CASE("loopback options: --loopback-device and --loopback-sync only with --loopback, named values only") {
  RunOptions o;
  o.loopback_device = 0;
  CHECK_THROWS_WITH(check_run_options(o), Catch::Contains("--loopback-device") && Catch::Contains("add --loopback"));
  o = RunOptions{};
  o.loopback_sync = "kernels";
  CHECK_THROWS_WITH(check_run_options(o), Catch::Contains("--loopback-sync"));
  o.loopback = true;
  CHECK_NOTHROW(check_run_options(o));
  o.loopback_sync = "spin";
  CHECK_THROWS_WITH(check_run_options(o), Catch::Contains("memops") && Catch::Contains("kernels"));
  o.loopback_sync = "memops";
  o.loopback_device = -2;
  CHECK_THROWS_WITH(check_run_options(o), Catch::Contains("--loopback-device"));
}

TEST_CASE("loopback device: every rank on one device, 0 unless named, and it must exist") {
  RunOptions o;
  o.loopback = true;
  CHECK(loopback_device(o, 1) == 0);
  o.loopback_device = 1;
  CHECK(loopback_device(o, 2) == 1);
  CHECK_THROWS_WITH(loopback_device(o, 1), Catch::Contains("--loopback-device = 1") && Catch::Contains("1 CUDA device"));
  CHECK_THROWS_AS(loopback_device(o, 0), UserError);
}
