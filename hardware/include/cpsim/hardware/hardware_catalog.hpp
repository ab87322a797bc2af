// Built-in hardware descriptions, looked up by name. "name:N" asks for N nodes of a multi-node
// description (e.g. "dgx-h100:16"); the same JSON shape may be given inline in a scenario.
#pragma once

#include "cpsim/model/json_reader.hpp"

#include <string>
#include <utility>
#include <vector>

namespace cpsim {

/** (name, JSON text) of every description in hardware/descriptions, embedded at build time. */
const std::vector<std::pair<std::string, std::string>>& builtin_hardware_sources();
std::vector<std::string> builtin_hardware_names();
/** The description's JSON; UserError naming the known names when `name` is unknown. */
Json builtin_hardware(const std::string& name);

} // namespace cpsim
