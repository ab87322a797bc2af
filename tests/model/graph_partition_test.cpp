// partition_graph (METIS behind DCP's planner): the balance bounds hold per weight component, also
// when the weights add up past METIS's 32-bit integers, and the same graph always gives the same parts.
#include "cpsim/model/graph_partition.hpp"

#include <catch2/catch.hpp>

#include <algorithm>

using namespace cpsim;

namespace {

/** DCP-shaped: `hubs` data vertices (memory only), each of `leaves` work vertices (compute only) reads two. */
WeightedGraph star_graph(int hubs, int leaves, int64_t leaf_weight) {
  WeightedGraph g;
  g.ncon = 2;
  for (int h = 0; h < hubs; ++h)
    g.vertex_weight.insert(g.vertex_weight.end(), {0, 256});
  for (int k = 0; k < leaves; ++k) {
    g.vertex_weight.insert(g.vertex_weight.end(), {leaf_weight, 0});
    g.edges.push_back({hubs + k, k % hubs, 1000});
    g.edges.push_back({hubs + k, (7 * k + 1) % hubs, 3000});
  }
  return g;
}

/** Largest part's share of component c over the average part. */
double imbalance(const WeightedGraph& g, const std::vector<int>& part, int parts, int c) {
  std::vector<double> load(static_cast<size_t>(parts), 0.0);
  double total = 0;
  for (int v = 0; v < g.vertices(); ++v) {
    load[size_t(part[size_t(v)])] += double(g.vertex_weight[size_t(v * g.ncon + c)]);
    total += double(g.vertex_weight[size_t(v * g.ncon + c)]);
  }
  return *std::max_element(load.begin(), load.end()) / (total / parts);
}

} // namespace

TEST_CASE("model::graph_partition: the bounds hold when the weights add up past 32 bits") {
  const int hubs = 64, leaves = 30000, parts = 8;
  const std::vector<double> bound{1.1, 1.2};
  for (int64_t leaf_weight : {int64_t(1000), int64_t(100000), int64_t(1) << 40}) { // totals 3e7, 3e9, 3e16
    INFO("leaf weight " << leaf_weight);
    const WeightedGraph g = star_graph(hubs, leaves, leaf_weight);
    const std::vector<int> part = partition_graph(g, parts, bound);
    REQUIRE(int(part.size()) == g.vertices());
    CHECK(std::all_of(part.begin(), part.end(), [&](int p) { return p >= 0 && p < parts; }));
    // one vertex of slack: a hub is 256 of the 2048 tokens a part should hold
    CHECK(imbalance(g, part, parts, 0) <= bound[0] + double(parts) / leaves);
    CHECK(imbalance(g, part, parts, 1) <= bound[1] + double(parts) / hubs);
    CHECK(part == partition_graph(g, parts, bound));
  }
}
