// Internal to exec_plan: how attention, gather, merge, copy and region send/receive ops map onto buffer
// rows and heads. Each planner reads only the IR (and the workload's mask, to check what it may drop)
// and fills its part of a RankExecPlan; the executor replays the result.
#pragma once

#include "cpsim/hardware/backend/exec_plan.hpp"
#include "cpsim/model/mask_geometry.hpp"

#include <string>

namespace cpsim::backend {

std::string op_where(int rank, const Op& op);

/** Fills rp.launches: heads split into runs that sit side by side in every buffer, rectangles in buffer rows. */
void plan_launches(const RankProgram& p, const Workload& w, const MaskGeometry& mask, RankExecPlan& rp);

/** Fills rp.gathers for GATHER/SCATTER ops (PIT): micro-tiles per head slot and query tile, checked against the IR's bytes. */
void plan_gathers(const Schedule& s, const RankProgram& p, const Workload& w, const MaskGeometry& mask, RankExecPlan& rp);

/** Fills rp.predictors (DSV's LOWRANK_QK and TOPK ops), checking the IR's sizes and FLOPs against what runs. */
void plan_predictors(const RankProgram& p, const Workload& w, RankExecPlan& rp);

/** Fills rp.forward_merges; refuses forward merges of no known form, and n-way merges whose rows differ from the IR's. */
void plan_forward_merges(const RankProgram& p, RankExecPlan& rp);

/** Fills rp.messages for sends and receives with regions and appends their staging (per stream: the largest slot). */
void plan_messages(const RankProgram& p, RankExecPlan& rp);

} // namespace cpsim::backend
