// METIS k-way partitioning behind partition_graph (graph_partition.hpp): builds the CSR arrays,
// scales 64-bit weights into METIS's idx_t range and maps METIS errors to internal errors.
#include "cpsim/model/graph_partition.hpp"

#include "cpsim/model/errors.hpp"

#include <metis.h>

#include <algorithm>
#include <numeric>

namespace cpsim {

namespace {

// METIS sums weights in idx_t (32 bits): a constraint's total past 2^31 wraps negative, coarsening
// then matches nothing and the partition ignores the balance bounds (DCP's 256-token blocks did).
// Half the range leaves room for the part bounds METIS derives from a total (total x imbalance / parts).
constexpr int64_t kMaxWeightTotal = int64_t(1) << 30;

/** Divisor that brings the largest weight to at most `cap` and the sum of all to at most kMaxWeightTotal. */
int64_t scale_for(int64_t max_weight, int64_t cap, int64_t total) {
  auto ceil_div = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  return std::max({int64_t(1), ceil_div(max_weight, cap), ceil_div(total, kMaxWeightTotal)});
}

/** Adjacency in CSR form: neighbours ascending, parallel edges summed, self loops (no cut) dropped. */
struct Adjacency {
  std::vector<size_t> start; // vertices + 1
  std::vector<int> neighbour;
  std::vector<int64_t> weight;
};

Adjacency merged_adjacency(const WeightedGraph& g) {
  const int n = g.vertices();
  std::vector<size_t> start(size_t(n) + 1, 0);
  for (const GraphEdge& e : g.edges) {
    CPSIM_ASSERT(e.u >= 0 && e.u < n && e.v >= 0 && e.v < n, "graph edge names a missing vertex");
    CPSIM_ASSERT(e.weight >= 0, "graph edge weights are never negative");
    if (e.u != e.v) {
      ++start[size_t(e.u) + 1];
      ++start[size_t(e.v) + 1];
    }
  }
  std::partial_sum(start.begin(), start.end(), start.begin());
  std::vector<std::pair<int, int64_t>> half(start.back()); // both directions of every edge, by source
  std::vector<size_t> next(start.begin(), start.end() - 1);
  for (const GraphEdge& e : g.edges)
    if (e.u != e.v) {
      half[next[size_t(e.u)]++] = {e.v, e.weight};
      half[next[size_t(e.v)]++] = {e.u, e.weight};
    }
  Adjacency a;
  a.start.reserve(size_t(n) + 1);
  a.start.push_back(0);
  for (int u = 0; u < n; ++u) {
    auto first = half.begin() + std::ptrdiff_t(start[size_t(u)]), last = half.begin() + std::ptrdiff_t(start[size_t(u) + 1]);
    std::sort(first, last, [](const auto& x, const auto& y) { return x.first < y.first; });
    for (auto it = first; it != last; ++it)
      if (it != first && it->first == a.neighbour.back())
        a.weight.back() += it->second;
      else {
        a.neighbour.push_back(it->first);
        a.weight.push_back(it->second);
      }
    a.start.push_back(a.neighbour.size());
  }
  return a;
}

} // namespace

std::vector<int> partition_graph(const WeightedGraph& g, int parts, const std::vector<double>& imbalance) {
  const int n = g.vertices();
  CPSIM_ASSERT(parts >= 1, "partition_graph needs at least one part");
  CPSIM_ASSERT(int(imbalance.size()) == g.ncon, "one imbalance bound per weight component");
  if (parts == 1 || n == 0)
    return std::vector<int>(static_cast<size_t>(n), 0);
  if (n <= parts) { // nothing to balance: one vertex per part
    std::vector<int> p(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i)
      p[size_t(i)] = i;
    return p;
  }
  const Adjacency adj = merged_adjacency(g);
  int64_t max_edge = 1, edge_total = 0; // edge_total: both directions, as METIS sums them
  for (int64_t w : adj.weight) {
    max_edge = std::max(max_edge, w);
    edge_total += w;
  }
  if (adj.neighbour.empty()) {
    // No edge to cut: largest total weight first onto the lightest part (METIS wants edges).
    std::vector<int> order(static_cast<size_t>(n)), p(static_cast<size_t>(n));
    auto total = [&](int u) {
      int64_t t = 0;
      for (int c = 0; c < g.ncon; ++c)
        t += g.vertex_weight[size_t(u * g.ncon + c)];
      return t;
    };
    for (int i = 0; i < n; ++i)
      order[size_t(i)] = i;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return total(a) > total(b); });
    std::vector<int64_t> load(static_cast<size_t>(parts), 0);
    for (int u : order) {
      auto k = size_t(std::min_element(load.begin(), load.end()) - load.begin());
      p[size_t(u)] = int(k);
      load[k] += total(u);
    }
    return p;
  }
  const int64_t edge_div = scale_for(max_edge, 1000, edge_total);
  std::vector<idx_t> xadj(adj.start.begin(), adj.start.end()), adjncy(adj.neighbour.begin(), adj.neighbour.end());
  std::vector<idx_t> adjwgt(adj.weight.size());
  for (size_t k = 0; k < adj.weight.size(); ++k)
    adjwgt[k] = idx_t(std::max<int64_t>(1, adj.weight[k] / edge_div));
  std::vector<idx_t> vwgt(g.vertex_weight.size());
  for (int c = 0; c < g.ncon; ++c) {
    int64_t mx = 1, total = 0;
    for (int u = 0; u < n; ++u) {
      mx = std::max(mx, g.vertex_weight[size_t(u * g.ncon + c)]);
      total += g.vertex_weight[size_t(u * g.ncon + c)];
    }
    const int64_t div = scale_for(mx, 100000, total);
    for (int u = 0; u < n; ++u)
      vwgt[size_t(u * g.ncon + c)] = idx_t(g.vertex_weight[size_t(u * g.ncon + c)] / div);
  }
  idx_t nv = n, ncon = g.ncon, np = parts, objval = 0;
  std::vector<real_t> ub;
  for (double b : imbalance)
    ub.push_back(real_t(b));
  idx_t options[METIS_NOPTIONS];
  METIS_SetDefaultOptions(options);
  options[METIS_OPTION_SEED] = 1;
  options[METIS_OPTION_NUMBERING] = 0;
  std::vector<idx_t> part(static_cast<size_t>(n), 0);
  int rc = METIS_PartGraphKway(&nv, &ncon, xadj.data(), adjncy.data(), vwgt.data(), nullptr, adjwgt.data(), &np,
                               nullptr, ub.data(), options, &objval, part.data());
  CPSIM_ASSERT(rc == METIS_OK, "METIS_PartGraphKway failed with status " + std::to_string(rc));
  return std::vector<int>(part.begin(), part.end());
}

} // namespace cpsim
