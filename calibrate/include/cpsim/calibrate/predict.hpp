// One prediction path for simulate, compare and validate: the analytic engine with the cost models
// (roofline or profile), plus the profile's overlap slowdown. The analytic engine has no notion of
// what runs beside what, so the slowdown is applied by re-running it: an attention op that overlaps
// communication on its rank for a fraction f of its time is slowed by 1 + (compute_slowdown - 1) x f,
// until the step time settles (a few passes). Communication slowed by compute is not applied (the
// communication model is not told which op it prices); the profile still records that factor.
#pragma once

#include "cpsim/calibrate/calibrated_models.hpp"
#include "cpsim/model/timeline.hpp"

namespace cpsim::calib {

SimResult predict(const Schedule& s, const Workload& w, const CostModels& m);

} // namespace cpsim::calib
