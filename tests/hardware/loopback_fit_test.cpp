// The memory check of a --loopback run, decided before any rank allocates: every rank's arena and staging,
// --check's whole-workload reference per rank, an allowance per rank process; and the one-line message that
// names every size when they do not fit together.
#include "cpsim/hardware/backend/exec_plan.hpp"
#include "cpsim/hardware/backend/loopback_fit.hpp"
#include "cpsim/model/schedule_generator.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

using namespace cpsim;
using namespace cpsim::backend;

TEST_CASE("loopback fit: every rank's buffers, --check's references and an allowance per rank, named when they do not fit") {
  const Scenario sc = test::make_scenario(test::scenario_json("ring", 4, {4096}, Json{{"kind", "causal"}}, "fwd_bwd", 8, 2, 128));
  const ExecPlan plan = make_exec_plan(generate_schedule(sc), sc.workload);
  const LoopbackNeed plain = loopback_need(plan, sc.workload, false, true);
  REQUIRE(plain.rank_bytes.size() == 4);
  int64_t buffers = 0;
  for (size_t r = 0; r < 4; ++r) {
    CHECK(plain.rank_bytes[r] == plan.ranks[r].arena_bytes + plan.ranks[r].staging_bytes);
    buffers += plain.rank_bytes[r];
  }
  CHECK(plain.check_bytes_per_rank == 0);
  CHECK(plain.total_bytes() == buffers + 4 * plain.allowance_per_rank_bytes);
  // --check: bf16 q, k, v, o and fp32 lse forward; backward adds bf16 dO, fp32 dQ, bf16 dK, dV
  const int64_t q = 4096 * 8 * 128 * 2, kv = 4096 * 2 * 128 * 2, lse = 4096 * 8 * 4;
  CHECK(loopback_need(plan, sc.workload, true, false).check_bytes_per_rank == 2 * q + 2 * kv + lse);
  const LoopbackNeed checked = loopback_need(plan, sc.workload, true, true);
  CHECK(checked.check_bytes_per_rank == 5 * q + 4 * kv + lse);
  CHECK(loopback_fit_error(checked, checked.total_bytes(), 0).empty());
  const std::string err = loopback_fit_error(checked, checked.total_bytes() - 1, 0);
  CHECK_THAT(err, Catch::StartsWith("--loopback: the 4 ranks need") && Catch::Contains("on GPU 0") &&
                      Catch::Contains("--check's reference 4 x") && Catch::Contains("are free"));
  CHECK(err.find('\n') == std::string::npos);
}
