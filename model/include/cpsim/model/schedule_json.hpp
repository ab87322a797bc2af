// The IR as JSON: what `cpsim plan` writes and what `cpsim simulate plan.json` and the real-GPU
// backend read back. Reading is strict, because a plan may be edited by hand.
#pragma once

#include "cpsim/model/json_reader.hpp"
#include "cpsim/model/schedule.hpp"

namespace cpsim {

Json schedule_to_json(const Schedule& s);
/** Parses and validates (validate_schedule) a schedule; UserError on any problem. */
Schedule schedule_from_json(const Json& j, const std::string& path);

} // namespace cpsim
