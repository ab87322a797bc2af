// Scenario shrinking; see scenario_shrink.hpp.
#include "cpsim/model/scenario_shrink.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>

namespace cpsim {

namespace {
void divide_int(Json& obj, const char* key, int64_t factor) {
  if (obj.contains(key) && obj.at(key).is_number_integer())
    obj[key] = std::max<int64_t>(1, obj.at(key).get<int64_t>() / factor);
}
} // namespace

Json shrink_scenario_json(const Json& scenario, int64_t factor) {
  if (factor < 1)
    throw UserError("shrink factor " + std::to_string(factor) + ": must be at least 1");
  Json j = scenario;
  if (factor == 1)
    return j;
  if (!j.is_object() || !j.contains("workload") || !j["workload"].is_object())
    throw UserError("shrinking needs a scenario with a 'workload' object");
  Json& w = j["workload"];
  Json& lens = w["seq_lens"];
  if (lens.is_array()) {
    for (size_t i = 0; i < lens.size(); ++i) {
      if (!lens[i].is_number_integer())
        continue; // the scenario reader names it
      const int64_t n = lens[i].get<int64_t>();
      if (n % factor != 0)
        throw UserError("'workload.seq_lens[" + std::to_string(i) + "]' = " + std::to_string(n) +
                        ": not divisible by the shrink factor " + std::to_string(factor));
      lens[i] = n / factor;
    }
  } else if (lens.is_object()) { // a length distribution: fewer tokens, each sequence shorter by the factor
    divide_int(lens, "total_tokens", factor);
    lens["scale"] = (lens.contains("scale") && lens["scale"].is_number() ? lens["scale"].get<double>() : 1.0) / double(factor);
    lens["max_len"] = std::max<int64_t>(
        1, (lens.contains("max_len") && lens["max_len"].is_number_integer() ? lens["max_len"].get<int64_t>() : 131072) / factor);
  }
  if (w.contains("mask") && w["mask"].is_object()) {
    Json& m = w["mask"];
    if (m.contains("layout_file"))
      throw UserError("'workload.mask.layout_file': a layout file fixes the sequence lengths; it cannot be shrunk");
    divide_int(m, "window", factor);
    divide_int(m, "sink", factor);
    if (m.value("kind", "") == "causal_blockwise")
      divide_int(m, "block", factor);
  }
  if (j.contains("parallel") && j["parallel"].is_object() && j["parallel"].value("scheme", "") == "dcp")
    divide_int(j["parallel"], "block", factor);
  return j;
}

} // namespace cpsim
