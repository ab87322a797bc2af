// The scheme registry: the one place that maps a scheme name to its generator.
#include "cpsim/model/schedule_generator.hpp"

#include "cpsim/model/errors.hpp"

namespace cpsim {

const std::vector<SchemeInfo>& scheme_registry() {
  static const std::vector<SchemeInfo> registry = {
      {"ring", "ring attention over contiguous chunks (zhuzilin ring_flash_attn)", generate_ring},
      {"zigzag", "load-balanced ring: rank r holds chunks r and 2W-1-r", generate_zigzag},
      {"ulysses", "DeepSpeed-Ulysses: all-to-all from sequence to head sharding", generate_ulysses},
      {"stripe", "causal ring over a stride-W interleave: rank r holds tokens r, r+W, ... (zhuzilin)", generate_stripe},
      {"te_p2p", "TransformerEngine/Megatron KV P2P ring: DualChunkSwap, deferred merge, bf16 dKV with KV",
       generate_te_p2p},
      {"te_allgather", "TransformerEngine all-gather (Llama 3): exposed KV all-gather, two chunk calls, dKV reduce-scatter",
       generate_te_allgather},
      {"te_a2a", "TransformerEngine a2a: Ulysses inside TE (H and KV heads divisible by cp)", generate_te_a2a},
      {"usp", "USP (yunchang): Ulysses over contiguous groups x ring over strided groups", generate_usp, usp_variants},
      {"loongtrain", "LoongTrain 2D attention: head all-to-all x zigzag double ring (inner windows, outer ring)",
       generate_loongtrain, loongtrain_variants},
      {"cqs", "CQS-Attention: cyclic-quorum cell ownership, no worker-to-worker traffic, LSE merge at owners", generate_cqs},
      {"dcp", "DCP: METIS-placed token/work blocks (bytes moved under compute balance), staged fetches, delayed LSE merge", generate_dcp, dcp_variants},
      {"pit", "PIT: sparse layout gathered in micro-tiles of `granularity` key columns into dense tiles", generate_pit, pit_variants},
      {"dsv", "DSV sparsity-aware CP: hcp x scp mesh, LPT head placement, critical-KV gather, low-rank predictor",
       generate_dsv, dsv_variants},
  };
  return registry;
}

Schedule generate_schedule(const Scenario& sc) {
  MaskGeometry mask(sc.workload);
  return generate_schedule(sc, mask);
}

Schedule generate_schedule(const Scenario& sc, const MaskGeometry& mask) {
  for (const auto& s : scheme_registry())
    if (s.name == sc.parallel.scheme)
      return s.generate(sc, mask);
  std::string names;
  for (const auto& s : scheme_registry())
    names += (names.empty() ? "" : ", ") + s.name;
  throw UserError("'parallel.scheme' = \"" + sc.parallel.scheme + "\": unknown scheme; known: " + names);
}

void check_scheme_options(const Scenario& sc, const std::vector<std::string>& allowed) {
  for (auto it = sc.parallel.options.begin(); it != sc.parallel.options.end(); ++it) {
    bool ok = false;
    for (const auto& a : allowed)
      ok |= a == it.key();
    if (!ok)
      throw UserError("'parallel." + it.key() + "' is not a known key for scheme '" + sc.parallel.scheme + "'");
  }
}

void require_seq_divisible(const Scenario& sc, int64_t divisor, const std::string& why) {
  const auto& lens = sc.workload.seq_lens;
  for (size_t i = 0; i < lens.size(); ++i)
    if (lens[i] % divisor != 0)
      throw UserError("'workload.seq_lens[" + std::to_string(i) + "]' = " + std::to_string(lens[i]) + ": " + why +
                      " needs every sequence length divisible by " + std::to_string(divisor));
}

} // namespace cpsim
