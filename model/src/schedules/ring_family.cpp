// Ring attention (contiguous chunks) and zigzag ring, forward and backward, after zhuzilin's
// ring-flash-attention (schedules.md 3.2, 3.3). Both are the shared ring program (ring_program.cpp)
// over the whole world; only the token layout differs. Attention pieces are the (query chunk x key
// chunk) rectangles with visible cells, so any mask works and causal steps with no visible work are
// skipped as the reference code skips them.
#include "ring_program.hpp"

#include "cpsim/model/schedule_generator.hpp"

namespace cpsim {

Schedule generate_ring(const Scenario& sc, const MaskGeometry& mask) {
  check_scheme_options(sc, {});
  require_seq_divisible(sc, sc.parallel.cp, "scheme 'ring' with cp = " + std::to_string(sc.parallel.cp));
  return ring::generate_world_ring(sc, mask, "ring", ring::contiguous_layout(sc.workload, sc.parallel.cp));
}

Schedule generate_zigzag(const Scenario& sc, const MaskGeometry& mask) {
  check_scheme_options(sc, {});
  require_seq_divisible(sc, 2 * int64_t(sc.parallel.cp), "scheme 'zigzag' with cp = " + std::to_string(sc.parallel.cp));
  return ring::generate_world_ring(sc, mask, "zigzag", ring::zigzag_layout(sc.workload, sc.parallel.cp));
}

} // namespace cpsim
