// Stripe attention (schedules.md 3.4, zhuzilin stripe_flash_attn): rank r holds tokens
// {r + kW}, so every ring step of a causal mask is the causal (key offset <= query offset) or the
// strictly-lower triangle of the packed tensors, balanced to within c/2 cells per step. The
// program is the zhuzilin ring; only the layout is strided, which the IR states with strides.
#include "ring_program.hpp"

#include "cpsim/model/errors.hpp"
#include "cpsim/model/schedule_generator.hpp"

namespace cpsim {

void ring::require_stripe_mask(const Scenario& sc, const std::string& who) {
  if (sc.workload.mask.kind != MaskKind::CAUSAL)
    throw UserError("'workload.mask.kind' = \"" + to_string(sc.workload.mask.kind) + "\": " + who +
                    " needs the causal mask (zhuzilin's stripe_flash_attn asserts causal; it expresses each step as "
                    "CAUSAL or SHIFT on the packed tensors)");
}

Schedule generate_stripe(const Scenario& sc, const MaskGeometry& mask) {
  check_scheme_options(sc, {});
  const int W = sc.parallel.cp;
  ring::require_stripe_mask(sc, "scheme 'stripe'");
  require_seq_divisible(sc, W, "scheme 'stripe' with cp = " + std::to_string(W));
  return ring::generate_world_ring(sc, mask, "stripe", ring::stripe_layout(sc.workload, W));
}

} // namespace cpsim
