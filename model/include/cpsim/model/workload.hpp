// The attention problem: a packed variable-length batch of sequences, heads (with GQA), head
// dimension, dtype and the mask. Token positions in the whole project are positions within their
// own sequence; attention never crosses sequences.
#pragma once

#include "cpsim/model/json_reader.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace cpsim {

enum class Dtype { BF16, FP16 };
enum class MaskKind { FULL, CAUSAL, SLIDING_WINDOW, BLOCK_SPARSE, LAMBDA, SHARED_QUESTION, CAUSAL_BLOCKWISE };
/** The DCP range masks (per-row key intervals, range_masks.hpp). */
bool is_range_mask(MaskKind k);

int dtype_bytes(Dtype d);
std::string to_string(Dtype d);
std::string to_string(MaskKind k);

struct MaskSpec {
  MaskKind kind = MaskKind::CAUSAL;
  int64_t window = 0;        // sliding_window: key j visible from query i iff i - window < j <= i
  int64_t block = 128;       // block_sparse: layout block size in tokens
  double density = 1.0;      // block_sparse: fraction of blocks kept (diagonal blocks always kept)
  uint64_t seed = 0;         // block_sparse: layout generator seed
  bool causal = false;       // block_sparse: also apply the causal mask inside the layout
  std::string layout_file;   // block_sparse: explicit layout instead of density/seed
  // DCP range masks (schedules.md 5.1). lambda reuses `window`; causal_blockwise reuses `block`.
  int64_t sink = 64;               // lambda: the first `sink` keys stay visible to every query
  double question_fraction = 0.2;  // shared_question: leading fraction of the sequence that is the question
  int64_t answers = 4;             // shared_question: answers that follow it (equal lengths, remainder to the last)
  int64_t local_blocks = 2;        // causal_blockwise: band of i - local_blocks*block keys besides block 0
  // block_sparse, per-head masks (DSV: heads differ strongly in sparsity): one density per query
  // head instead of `density`, each head's layout drawn from `seed` and the head index.
  std::vector<double> head_densities;
};

struct Workload {
  std::vector<int64_t> seq_lens;
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  Dtype dtype = Dtype::BF16;
  MaskSpec mask;

  int64_t total_tokens() const;
  int elem_bytes() const { return dtype_bytes(dtype); }
};

/** Parses and validates the "workload" object. `base_dir` resolves a relative layout file. */
Workload workload_from_json(const Json& j, const std::string& path, const std::string& base_dir);
Json workload_to_json(const Workload& w);

} // namespace cpsim
