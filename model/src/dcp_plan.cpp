// DCP's planner (schedules.md 5.2-5.4): blocks, the block graph, a two-level METIS partition and
// the staging of remote work. Differences from the DCP code, on purpose: METIS partitions a graph,
// not a hypergraph, so a data block read by several work blocks on one remote device counts once
// per reader in the objective (the IR then moves it once); vertex weights are two real constraints
// (compute, token memory) instead of one folded weight; stages balance compute per device and do not
// relay inter-node blocks through a second intra-node phase.
#include "cpsim/model/dcp_plan.hpp"

#include "cpsim/model/errors.hpp"
#include "cpsim/model/graph_partition.hpp"
#include "cpsim/model/mask_geometry.hpp"
#include "cpsim/model/schedule_generator.hpp"

#include <algorithm>
#include <numeric>

namespace cpsim {

DcpOptions dcp_options_from(const Scenario& sc) {
  check_scheme_options(sc, {"block", "head_block", "stages", "eps_comp", "eps_mem", "inter_node_factor"});
  JsonObjectReader r(sc.parallel.options, "parallel");
  DcpOptions o;
  const int H = sc.workload.heads, per_kv = H / sc.workload.kv_heads;
  o.block = r.get_int_or("block", 0, 1, int64_t(1) << 30);
  o.head_block = int(r.get_int_or("head_block", H, 1, H));
  if (H % o.head_block != 0)
    r.fail("head_block", "must divide workload.heads (" + std::to_string(H) + ")");
  if (o.head_block % per_kv != 0 && per_kv % o.head_block != 0)
    r.fail("head_block", "must divide or be a multiple of the " + std::to_string(per_kv) +
                             " query heads of one KV head (GQA), so that a head block reads whole KV heads");
  o.stages = int(r.get_int_or("stages", 4, 1, kDcpMaxStages));
  o.eps_comp = r.get_number_or("eps_comp", 0.1, 0.0, 10.0);
  o.eps_mem = r.get_number_or("eps_mem", 0.2, 0.0, 10.0);
  if (o.eps_comp <= 0.0)
    r.fail("eps_comp", "must be greater than 0");
  if (o.eps_mem <= 0.0)
    r.fail("eps_mem", "must be greater than 0");
  o.inter_node_factor = r.get_number_or("inter_node_factor", 4.0, 1.0, 100.0);
  return o;
}

int64_t dcp_block_heuristic(const std::vector<int64_t>& seq_lens, int devices, double eps_mem) {
  int64_t longest = *std::max_element(seq_lens.begin(), seq_lens.end()), B = 1;
  while (B < longest)
    B *= 2;
  const int64_t total = std::accumulate(seq_lens.begin(), seq_lens.end(), int64_t(0));
  for (; B > 256; B /= 2) {
    std::vector<int64_t> pieces;
    for (int64_t s : seq_lens)
      for (int64_t a = 0; a < s; a += B)
        pieces.push_back(std::min(B, s - a));
    std::sort(pieces.begin(), pieces.end(), std::greater<>());
    std::vector<int64_t> load(static_cast<size_t>(devices), 0);
    for (int64_t p : pieces)
      *std::min_element(load.begin(), load.end()) += p;
    const double mean = double(total) / devices;
    if (double(*std::max_element(load.begin(), load.end())) <= (1.0 + eps_mem) * mean)
      break;
  }
  return std::max<int64_t>(B, 256);
}

namespace {

/** The subgraph of each part (vertices in their order in `g`, edges between parts dropped) and its vertices. */
std::vector<std::pair<WeightedGraph, std::vector<int>>> split_by_part(const WeightedGraph& g, const std::vector<int>& part,
                                                                      int parts) {
  std::vector<std::pair<WeightedGraph, std::vector<int>>> out(static_cast<size_t>(parts));
  for (auto& sub : out)
    sub.first.ncon = g.ncon;
  std::vector<int> local(static_cast<size_t>(g.vertices()));
  for (int v = 0; v < g.vertices(); ++v) {
    auto& [s, members] = out[size_t(part[size_t(v)])];
    local[size_t(v)] = int(members.size());
    members.push_back(v);
    for (int c = 0; c < g.ncon; ++c)
      s.vertex_weight.push_back(g.vertex_weight[size_t(v * g.ncon + c)]);
  }
  for (const GraphEdge& e : g.edges)
    if (part[size_t(e.u)] == part[size_t(e.v)])
      out[size_t(part[size_t(e.u)])].first.edges.push_back({local[size_t(e.u)], local[size_t(e.v)], e.weight});
  return out;
}

/** The graph with vertex v merged into group[v]: weights and parallel edges summed, inner edges dropped. */
WeightedGraph contract(const WeightedGraph& g, const std::vector<int>& group, int groups) {
  WeightedGraph c;
  c.ncon = g.ncon;
  c.vertex_weight.assign(size_t(groups) * size_t(g.ncon), 0);
  for (int v = 0; v < g.vertices(); ++v)
    for (int k = 0; k < g.ncon; ++k)
      c.vertex_weight[size_t(group[size_t(v)] * g.ncon + k)] += g.vertex_weight[size_t(v * g.ncon + k)];
  for (const GraphEdge& e : g.edges)
    if (group[size_t(e.u)] != group[size_t(e.v)])
      c.edges.push_back({group[size_t(e.u)], group[size_t(e.v)], e.weight});
  return c;
}

} // namespace

DcpPlan plan_dcp(const Scenario& sc, const MaskGeometry& mask, const DcpOptions& o) {
  const Workload& w = sc.workload;
  const int W = sc.parallel.cp, H = w.heads, D = w.head_dim, e = w.elem_bytes();
  const int per_kv = H / w.kv_heads;
  DcpPlan p;
  p.options = o;
  p.devices = W;
  p.block = o.block > 0 ? o.block : dcp_block_heuristic(w.seq_lens, W, o.eps_mem);
  p.head_block = o.head_block > 0 ? o.head_block : H;
  p.head_blocks = H / p.head_block;
  const int kv_per_hb = std::max(1, p.head_block / per_kv);
  {
    // a block far below the sequence lengths would make millions of work blocks: refuse, do not hang
    double bound = 0;
    for (int64_t s : w.seq_lens) {
      const double n = double((s + p.block - 1) / p.block);
      bound += n * n * p.head_blocks;
    }
    if (bound > double(kDcpMaxWorkBlocks))
      throw UserError("'parallel.block' = " + std::to_string(p.block) + (o.block > 0 ? "" : " (DCP's heuristic)") +
                      ": up to " + std::to_string(int64_t(bound)) + " work blocks, more than the planner's limit of " +
                      std::to_string(kDcpMaxWorkBlocks) + "; use a larger block or head_block");
  }

  // ---- blocks and work (a work block exists only where the mask leaves a visible cell)
  std::vector<int> first_block;
  for (size_t s = 0; s < w.seq_lens.size(); ++s) {
    first_block.push_back(int(p.blocks.size()));
    for (int64_t a = 0; a < w.seq_lens[s]; a += p.block)
      p.blocks.push_back({int(s), a, std::min(a + p.block, w.seq_lens[s]), -1});
  }
  first_block.push_back(int(p.blocks.size()));
  for (size_t s = 0; s < w.seq_lens.size(); ++s)
    for (int i = first_block[s]; i < first_block[s + 1]; ++i)
      for (int j = first_block[s]; j < first_block[s + 1]; ++j) {
        const auto& qb = p.blocks[size_t(i)];
        const auto& kb = p.blocks[size_t(j)];
        const int64_t cells = mask.cells(int(s), {qb.begin, qb.end}, {kb.begin, kb.end});
        if (cells == 0)
          continue;
        for (int h = 0; h < p.head_blocks; ++h)
          p.work.push_back({i, j, h, cells, -1, 0});
      }

  // ---- graph: data vertices [0, nd) weigh token memory, work vertices weigh compute; edges weigh
  // the bytes that move if the two ends land on different devices
  const int nd = int(p.blocks.size());
  WeightedGraph g;
  g.ncon = 2;
  g.vertex_weight.reserve(2 * (size_t(nd) + p.work.size()));
  g.edges.reserve(2 * p.work.size());
  for (const auto& b : p.blocks) {
    g.vertex_weight.push_back(0);
    g.vertex_weight.push_back(b.tokens());
  }
  for (size_t k = 0; k < p.work.size(); ++k) {
    const DcpWork& wk = p.work[k];
    g.vertex_weight.push_back(std::max<int64_t>(1, wk.cells * p.head_block));
    g.vertex_weight.push_back(0);
    const int v = nd + int(k);
    const int64_t q_bytes = p.blocks[size_t(wk.q_block)].tokens() * p.head_block * (2 * D * e + 4); // Q in, O+LSE out
    const int64_t kv_bytes = p.blocks[size_t(wk.kv_block)].tokens() * kv_per_hb * 2 * D * e;
    g.edges.push_back({v, wk.q_block, q_bytes});
    g.edges.push_back({v, wk.kv_block, kv_bytes});
  }

  // ---- two levels: machines, then the GPUs of each machine
  const int gpn = sc.cluster.gpus_per_node;
  std::vector<int> device(static_cast<size_t>(g.vertices()), 0);
  if (W > gpn && W % gpn == 0) {
    p.nodes = W / gpn;
    // Machines first, on the graph with the head blocks of each (query block, key block) merged:
    // head_blocks times fewer work vertices keep the first level fast; the GPUs of a node then
    // split the head blocks again.
    std::vector<int> pair_of(static_cast<size_t>(g.vertices()));
    int groups = nd;
    for (int b = 0; b < nd; ++b)
      pair_of[size_t(b)] = b;
    for (size_t k = 0; k < p.work.size(); ++k) {
      if (p.work[k].head_block == 0)
        ++groups;
      pair_of[size_t(nd) + k] = groups - 1; // head blocks of one pair are consecutive, head block 0 first
    }
    const std::vector<int> pair_node =
        partition_graph(contract(g, pair_of, groups), p.nodes, {1.0 + o.eps_comp * o.inter_node_factor, 1.0 + o.eps_mem});
    std::vector<int> node(static_cast<size_t>(g.vertices()));
    for (int v = 0; v < g.vertices(); ++v)
      node[size_t(v)] = pair_node[size_t(pair_of[size_t(v)])];
    const auto node_graphs = split_by_part(g, node, p.nodes);
    for (int n = 0; n < p.nodes; ++n) {
      const auto& [sub, members] = node_graphs[size_t(n)];
      const std::vector<int> local = partition_graph(sub, gpn, {1.0 + o.eps_comp, 1.0 + o.eps_mem});
      for (size_t k = 0; k < members.size(); ++k)
        device[size_t(members[k])] = n * gpn + local[k];
    }
  } else {
    device = partition_graph(g, W, {1.0 + o.eps_comp, 1.0 + o.eps_mem});
  }
  for (int b = 0; b < nd; ++b)
    p.blocks[size_t(b)].device = device[size_t(b)];
  for (size_t k = 0; k < p.work.size(); ++k)
    p.work[k].device = device[size_t(nd) + k];

  // ---- stages: local work first; remote work spread over stages 1..T by compute (LPT per device)
  std::vector<std::vector<int>> remote(static_cast<size_t>(W));
  for (size_t k = 0; k < p.work.size(); ++k) {
    DcpWork& wk = p.work[k];
    const bool local = p.blocks[size_t(wk.q_block)].device == wk.device && p.blocks[size_t(wk.kv_block)].device == wk.device;
    if (!local)
      remote[size_t(wk.device)].push_back(int(k));
  }
  for (auto& list : remote) {
    std::stable_sort(list.begin(), list.end(), [&](int a, int b) { return p.work[size_t(a)].cells > p.work[size_t(b)].cells; });
    std::vector<int64_t> load(static_cast<size_t>(o.stages), 0);
    for (int k : list) {
      auto t = size_t(std::min_element(load.begin(), load.end()) - load.begin());
      p.work[size_t(k)].stage = int(t) + 1;
      load[t] += p.work[size_t(k)].cells;
    }
  }
  return p;
}

} // namespace cpsim
