// Where a calibrated prediction left the ground its profile covers: a quantity outside the ranges
// the sweeps measured, a model family the profile lacks (roofline used instead), a GPU that differs.
// Collected while an engine runs, then printed under the table and written into the result JSON.
#pragma once

#include "cpsim/calibrate/profile.hpp"
#include "cpsim/model/json_reader.hpp"

#include <map>
#include <string>
#include <vector>

namespace cpsim::calib {

class RangeNotes {
public:
  /** Records `value` of `quantity` for `subject` if it lies outside `covered`. */
  void check(const std::string& subject, const std::string& quantity, double value, const Range& covered);
  /** A note with no range (a fallback, a mismatch); repeated notes count once per call. */
  void note(const std::string& text);

  bool empty() const { return ranges_.empty() && notes_.empty(); }
  /** One line per note, sorted, e.g. "fwd attention (head_dim 128): tiles 5e+06..9e+06 outside the calibrated [1e+02,
   * 4e+06] (7 ops)". */
  std::vector<std::string> lines() const;
  Json to_json() const;

private:
  struct Seen {
    Range covered;
    Range seen = Range::none();
    int count = 0;
  };
  std::map<std::pair<std::string, std::string>, Seen> ranges_;
  std::map<std::string, int> notes_;
};

} // namespace cpsim::calib
