// Entry points of each implementation, called by the dispatch in attention_dispatch.cu after the
// common checks.
#pragma once

#include "cpsim/kernels/attention.hpp"

namespace cpsim::kernels::detail {

void forward_reference(const AttnArgs& a, const DevicePlan& plan);
void backward_reference(const AttnArgs& a, const DevicePlan& plan);
void forward_mma(const AttnArgs& a, const DevicePlan& plan);
/** Why the fast path cannot take these arguments (alignment), or empty. */
std::string mma_unsupported(const AttnArgs& a);

} // namespace cpsim::kernels::detail
