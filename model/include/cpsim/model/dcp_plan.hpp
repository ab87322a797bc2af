// DCP's block-level plan (schedules.md 5.2-5.4) before it becomes IR: token blocks of B tokens
// (data), attention work blocks (one per visible (query block, key block, head block)), the device
// of every block from a METIS partition that minimises bytes moved under a compute-balance bound
// (machines first, then GPUs), and the stage of every work block. The dcp generator emits it as IR;
// tests and `cpsim plan` read the plan's own numbers from it.
#pragma once

#include "cpsim/model/scenario.hpp"

#include <cstdint>
#include <vector>

namespace cpsim {

class MaskGeometry;

/** Most (query block, key block, head block) triples a plan may have to consider (bounds time and memory). */
constexpr int64_t kDcpMaxWorkBlocks = int64_t(1) << 21;
/** Most communication stages after the local stage 0. */
constexpr int kDcpMaxStages = 64;

struct DcpOptions {
  int64_t block = 0;        // tokens per block; 0: DCP's heuristic (_block_size_heuristic)
  int head_block = 0;       // query heads per work block; 0: all heads
  int stages = 4;           // communication stages T after the local stage 0
  double eps_comp = 0.1;    // compute imbalance bound between devices of a node
  double eps_mem = 0.2;     // token-memory imbalance bound (and the block heuristic's)
  double inter_node_factor = 4.0; // node-level compute bound is eps_comp * factor
};

/** Reads and checks the `parallel` keys of scheme dcp (UserError naming key, value and reason). */
DcpOptions dcp_options_from(const Scenario& sc);

struct DcpDataBlock {
  int seq = 0;
  int64_t begin = 0, end = 0; // tokens of the sequence
  int device = -1;            // owner: holds its Q, K, V and the final O, LSE
  int64_t tokens() const { return end - begin; }
};

struct DcpWork {
  int q_block = 0;  // index into blocks
  int kv_block = 0; // index into blocks (same sequence)
  int head_block = 0;
  int64_t cells = 0; // visible cells per head
  int device = -1;
  int stage = 0;     // 0: every input local; 1..T: inputs fetched by that stage
};

struct DcpPlan {
  DcpOptions options;
  int64_t block = 0;
  int head_block = 0; // heads per head block
  int head_blocks = 0;
  int devices = 0;
  int nodes = 1; // of the partition's first level
  std::vector<DcpDataBlock> blocks;
  std::vector<DcpWork> work;
};

/** DCP's block-size heuristic: next power of two of the longest sequence, halved while the LPT
 *  token balance over `devices` is worse than 1 + eps_mem (not below 256). */
int64_t dcp_block_heuristic(const std::vector<int64_t>& seq_lens, int devices, double eps_mem);

DcpPlan plan_dcp(const Scenario& sc, const MaskGeometry& mask, const DcpOptions& o);

} // namespace cpsim
