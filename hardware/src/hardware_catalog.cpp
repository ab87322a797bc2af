// Lookup of the embedded hardware descriptions, with the "name:N" node-count suffix.
#include "cpsim/hardware/hardware_catalog.hpp"

#include "cpsim/model/errors.hpp"

namespace cpsim {

std::vector<std::string> builtin_hardware_names() {
  std::vector<std::string> n;
  for (const auto& [name, text] : builtin_hardware_sources())
    n.push_back(name);
  return n;
}

Json builtin_hardware(const std::string& full) {
  std::string name = full;
  int64_t nodes = -1;
  if (auto colon = full.find(':'); colon != std::string::npos) {
    name = full.substr(0, colon);
    std::string n = full.substr(colon + 1);
    try {
      size_t used = 0;
      nodes = std::stoll(n, &used);
      if (used != n.size() || nodes < 1 || nodes > (1 << 20))
        throw std::invalid_argument(n);
    } catch (const std::exception&) {
      throw UserError("'hardware' = \"" + full + "\": the node count after ':' must be an integer in [1, 1048576]");
    }
  }
  for (const auto& [known, text] : builtin_hardware_sources())
    if (known == name) {
      Json j = Json::parse(text);
      if (nodes > 0) {
        j["nodes"] = nodes;
        j["name"] = full;
      }
      return j;
    }
  std::string list;
  for (const auto& n : builtin_hardware_names())
    list += (list.empty() ? "" : ", ") + n;
  throw UserError("'hardware' = \"" + full + "\": no built-in description of that name; known: " + list);
}

} // namespace cpsim
