// The overlap slowdown around the analytic engine: an attention op beside a transfer is slowed by
// the profile's factor in proportion to how much of it the transfer covers (closed forms for full
// and partial cover), and nothing changes without a profile or without overlap.
#include "cpsim/calibrate/predict.hpp"
#include "cpsim/model/schedule_builder.hpp"
#include "profile_factory.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

#include <cmath>

using namespace cpsim;
using namespace cpsim::calib;

namespace {
/** Two ranks; each runs one attention op and, at the same time on a comm stream, sends `bytes` to the other. */
struct Beside {
  Scenario sc = test::make_scenario(test::scenario_json("ring", 2, {4096}, {{"kind", "full"}}, "fwd", 4, 4, 64));
  MaskGeometry mask{sc.workload};
  Schedule s;
  explicit Beside(int64_t bytes) {
    ScheduleBuilder b(sc, mask, "test", 2);
    int compute = b.add_stream("compute", StreamKind::COMPUTE);
    int comm = b.add_stream("comm", StreamKind::COMM);
    for (int r = 0; r < 2; ++r) {
      for (const char* n : {"tx", "rx"}) {
        Buffer x;
        x.name = n;
        x.tensor = "k";
        x.bytes = bytes;
        b.add_buffer(r, x);
      }
      b.attention(r, compute, {}, Direction::FORWARD, 0, 4, {{0, {0, 4096}, {0, 4096}}}, "attn", {}, {});
      int g = b.next_group(r);
      b.send(r, comm, {}, 1 - r, bytes, 1, g, "send", "tx");
      b.recv(r, comm, {}, 1 - r, bytes, 1, g, "recv", "rx");
    }
    s = b.finish();
  }
  CostModels models(const Profile& p) {
    CostModels m;
    m.profile = std::make_unique<Profile>(p);
    m.notes = std::make_unique<RangeNotes>();
    m.kernels = std::make_unique<CalibratedKernelModel>(*m.profile, sc.cluster.gpu, sc.workload, 128, 128, *m.notes);
    m.comm = std::make_unique<CalibratedCommModel>(*m.profile, sc.cluster, s.placement, *m.notes);
    return m;
  }
  double attn_s(const SimResult& r) const {
    for (const auto& rec : r.records)
      if (rec.rank == 0 && s.ranks[0].ops[size_t(rec.op)].kind == OpKind::ATTENTION)
        return rec.end_s - rec.start_s;
    return -1;
  }
};
} // namespace

TEST_CASE("calibrate::predict: an attention op wholly beside a transfer is slowed by the profile's factor") {
  Beside t(int64_t(1) << 30); // the transfer (~3.6 ms) outlasts the attention op
  Profile p = test::test_profile();
  p.overlap = {1.2, 1.1, 1};
  p.has_overlap = false;
  CostModels plain = t.models(p);
  const double alone = t.attn_s(predict(t.s, t.sc.workload, plain));
  p.has_overlap = true;
  CostModels slowed = t.models(p);
  SimResult r = predict(t.s, t.sc.workload, slowed);
  CHECK(t.attn_s(r) == Approx(1.2 * alone));
  bool noted = false;
  for (const auto& l : slowed.notes->lines())
    noted |= l.find("overlap: 2 attention ops run beside communication, slowed by up to 20.0 %") != std::string::npos;
  CHECK(noted);
}

TEST_CASE("calibrate::predict: partial cover settles at d = A (1 + 0.2 C / d)") {
  Beside t(int64_t(1) << 16); // a short transfer: covers only part of the attention op
  Profile p = test::test_profile();
  p.overlap = {1.2, 1.0, 1};
  p.has_overlap = false;
  CostModels plain = t.models(p);
  SimResult base = predict(t.s, t.sc.workload, plain);
  const double a = t.attn_s(base);
  double c = 0;
  for (const auto& rec : base.records)
    if (rec.rank == 0 && t.s.ranks[0].ops[size_t(rec.op)].kind == OpKind::SEND)
      c = rec.end_s - rec.start_s;
  REQUIRE(c < a);
  p.has_overlap = true;
  CostModels slowed = t.models(p);
  const double d = t.attn_s(predict(t.s, t.sc.workload, slowed));
  CHECK(d == Approx((a + std::sqrt(a * a + 0.8 * a * c)) / 2).epsilon(1e-5));
}
