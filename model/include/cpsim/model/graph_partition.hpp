// A weighted undirected graph and its k-way partition by METIS (multi-constraint vertex weights,
// weighted edge cut). DCP's planner is the user; kept apart so the METIS calls live in one file.
#pragma once

#include <cstdint>
#include <vector>

namespace cpsim {

struct GraphEdge {
  int u = 0;
  int v = 0;
  int64_t weight = 1;
};

struct WeightedGraph {
  int ncon = 1;                       // vertex weight components (constraints)
  std::vector<int64_t> vertex_weight; // n * ncon, vertex-major
  std::vector<GraphEdge> edges;       // undirected; parallel edges are summed

  int vertices() const { return ncon > 0 ? static_cast<int>(vertex_weight.size()) / ncon : 0; }
};

/**
 * Part of every vertex in [0, parts), minimising the summed weight of cut edges while each weight
 * component of a part stays within imbalance[c] x its average (METIS_PartGraphKway, fixed seed,
 * so the same graph always gives the same parts). Weights are rescaled to METIS's 32-bit integers.
 */
std::vector<int> partition_graph(const WeightedGraph& g, int parts, const std::vector<double>& imbalance);

} // namespace cpsim
