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
