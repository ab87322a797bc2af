// Union-find over replicas through the links their routes share, then a canonical signature per
// component (links numbered in order of first use) to find components that behave identically.
#include "cpsim/simulator/replica_collapse.hpp"

#include <bit>
#include <map>
#include <numeric>
#include <unordered_map>

namespace cpsim {

int64_t replica_gpu(const Schedule &s, int replica, int rank) {
  return int64_t(s.placement[size_t(rank)]) + int64_t(replica) * s.replica_stride;
}

namespace {
int find_root(std::vector<int> &parent, int x) {
  while (parent[size_t(x)] != x) {
    parent[size_t(x)] = parent[size_t(parent[size_t(x)])];
    x = parent[size_t(x)];
  }
  return x;
}
} // namespace

ReplicaCollapse collapse_replicas(const Schedule &s, const Fabric &f, const std::vector<RankPair> &pairs) {
  const int R = std::max(1, s.replicas);
  std::vector<int> parent(static_cast<size_t>(R));
  std::iota(parent.begin(), parent.end(), 0);
  std::unordered_map<int64_t, int> owner; // link -> a replica crossing it
  std::vector<int64_t> route;
  for (int k = 0; k < R; ++k)
    for (const RankPair &p : pairs) {
      f.route(replica_gpu(s, k, p.src), replica_gpu(s, k, p.dst), route);
      for (int64_t l : route) {
        auto [it, fresh] = owner.emplace(l, k);
        if (!fresh) {
          int a = find_root(parent, it->second), b = find_root(parent, k);
          if (a != b)
            parent[size_t(std::max(a, b))] = std::min(a, b);
        }
      }
    }
  std::map<int, std::vector<int>> components; // root -> members, ascending
  for (int k = 0; k < R; ++k)
    components[find_root(parent, k)].push_back(k);

  ReplicaCollapse out;
  out.components = static_cast<int>(components.size());
  std::map<std::vector<int64_t>, int> classes; // signature -> representative root
  for (const auto &[root, members] : components) {
    std::vector<int64_t> sig;
    std::unordered_map<int64_t, int64_t> local;
    std::vector<int64_t> order;
    for (int k : members) {
      for (const RankPair &p : pairs) {
        f.route(replica_gpu(s, k, p.src), replica_gpu(s, k, p.dst), route);
        for (int64_t l : route) {
          auto [it, fresh] = local.emplace(l, int64_t(order.size()));
          if (fresh)
            order.push_back(l);
          sig.push_back(it->second);
        }
        sig.push_back(-1);
      }
      sig.push_back(-2);
    }
    for (int64_t l : order) {
      FabricLink fl = f.link(l);
      sig.push_back(std::bit_cast<int64_t>(fl.bandwidth_bytes_per_s));
      sig.push_back(std::bit_cast<int64_t>(fl.latency_s));
    }
    if (classes.emplace(std::move(sig), root).second)
      out.simulated.insert(out.simulated.end(), members.begin(), members.end());
  }
  out.classes = static_cast<int>(classes.size());
  std::sort(out.simulated.begin(), out.simulated.end());
  return out;
}

} // namespace cpsim
