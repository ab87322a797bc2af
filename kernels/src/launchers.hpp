// Entry points of each implementation, called by the dispatch in attention_dispatch.cpp after the
// common checks.
#pragma once

#include "cpsim/kernels/attention.hpp"

#include <string>

namespace cpsim::kernels::detail {

void forward_reference(const AttnArgs& a, const DevicePlan& plan);
void backward_reference(const AttnArgs& a, const DevicePlan& plan);
void forward_mma(const AttnArgs& a, const DevicePlan& plan);
void backward_mma(const AttnArgs& a, const DevicePlan& plan);
/** The Hopper (sm_90a) paths; their argument needs are those of the mma.sync paths. */
void forward_wgmma(const AttnArgs& a, const DevicePlan& plan);
void backward_wgmma(const AttnArgs& a, const DevicePlan& plan);
/** Why the fast forward / backward cannot take these arguments (alignment), or empty. */
std::string mma_unsupported(const AttnArgs& a);
std::string mma_backward_unsupported(const AttnArgs& a);
/** Delta[q tile row][head of the call] = rowsum(dO * O), fp32, for both backward paths. */
void compute_delta(const AttnArgs& a, const DevicePlan& plan, float* delta);

} // namespace cpsim::kernels::detail
