// Out-of-range bookkeeping (see range_notes.hpp).
#include "cpsim/calibrate/range_notes.hpp"

#include <cstdio>

namespace cpsim::calib {

void RangeNotes::check(const std::string& subject, const std::string& quantity, double value, const Range& covered) {
  if (covered.contains(value))
    return;
  Seen& s = ranges_[{subject, quantity}];
  s.covered = covered;
  s.seen.extend(value);
  ++s.count;
}

void RangeNotes::note(const std::string& text) {
  ++notes_[text];
}

std::vector<std::string> RangeNotes::lines() const {
  std::vector<std::string> out;
  char buf[512];
  for (const auto& [key, s] : ranges_) {
    std::snprintf(buf, sizeof buf, "%s: %s %.4g..%.4g outside the calibrated [%.4g, %.4g] (%d ops)", key.first.c_str(),
                  key.second.c_str(), s.seen.min, s.seen.max, s.covered.min, s.covered.max, s.count);
    out.push_back(buf);
  }
  for (const auto& [text, n] : notes_)
    out.push_back(text + (n > 1 ? " (" + std::to_string(n) + " ops)" : std::string()));
  return out;
}

Json RangeNotes::to_json() const {
  Json a = Json::array();
  for (const auto& [key, s] : ranges_)
    a.push_back({{"subject", key.first},
                 {"quantity", key.second},
                 {"seen", {s.seen.min, s.seen.max}},
                 {"calibrated", {s.covered.min, s.covered.max}},
                 {"ops", s.count}});
  for (const auto& [text, n] : notes_)
    a.push_back({{"note", text}, {"ops", n}});
  return a;
}

} // namespace cpsim::calib
