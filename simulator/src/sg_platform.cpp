// See sg_platform.hpp. Names carry a per-run prefix because SimGrid's names are process-wide.
#include "sg_platform.hpp"

#include "cpsim/simulator/collective_flows.hpp"
#include "cpsim/simulator/replica_collapse.hpp"

#include <algorithm>
#include <unordered_map>

namespace sg4 = simgrid::s4u;

namespace cpsim {

namespace {
/** Most ops a rank can have running at once: per stream, the largest group posted together. */
int max_concurrent_ops(const Schedule &s) {
  std::vector<int> per_stream(s.streams.size(), 0);
  for (const auto &prog : s.ranks) {
    std::vector<int> run(s.streams.size(), 0), last_group(s.streams.size(), -2);
    for (const Op &op : prog.ops) {
      auto st = size_t(op.stream);
      run[st] = (op.group >= 0 && op.group == last_group[st]) ? run[st] + 1 : 1;
      last_group[st] = op.group;
      per_stream[st] = std::max(per_stream[st], run[st]);
    }
  }
  int cores = 0;
  for (int n : per_stream)
    cores += n;
  return std::max(1, cores);
}
} // namespace

SgPlatform build_sg_platform(const Schedule &s, const Fabric &f, const std::vector<int> &replicas, double host_flops) {
  static int run_id = 0;
  const std::string prefix = "r" + std::to_string(run_id++) + "_";
  const size_t W = size_t(s.world);
  auto *zone = sg4::create_full_zone(prefix + "cluster");
  const int cores = max_concurrent_ops(s);
  SgPlatform p;
  p.hosts.resize(replicas.size() * W);
  for (size_t j = 0; j < replicas.size(); ++j)
    for (size_t r = 0; r < W; ++r) {
      const int64_t g = replica_gpu(s, replicas[j], int(r));
      p.hosts[j * W + r] =
          zone->create_host(prefix + "gpu" + std::to_string(g), host_flops)->set_core_count(cores)->seal();
    }
  std::unordered_map<int64_t, const sg4::Link *> links;
  std::vector<int64_t> route;
  std::vector<sg4::LinkInRoute> sg_route;
  const std::vector<RankPair> pairs = flow_pairs(s);
  for (size_t j = 0; j < replicas.size(); ++j)
    for (const RankPair &pr : pairs) {
      f.route(replica_gpu(s, replicas[j], pr.src), replica_gpu(s, replicas[j], pr.dst), route);
      if (route.empty())
        continue; // same GPU: the engine completes such a flow at once
      sg_route.clear();
      for (int64_t l : route) {
        auto [it, fresh] = links.emplace(l, nullptr);
        if (fresh) {
          FabricLink fl = f.link(l);
          it->second = zone->create_link(prefix + fl.name, fl.bandwidth_bytes_per_s)->set_latency(fl.latency_s)->seal();
        }
        sg_route.emplace_back(it->second);
      }
      zone->add_route(p.hosts[j * W + size_t(pr.src)]->get_netpoint(), p.hosts[j * W + size_t(pr.dst)]->get_netpoint(),
                      nullptr, nullptr, sg_route, /*symmetrical=*/false);
    }
  zone->seal();
  p.links = int64_t(links.size());
  return p;
}

} // namespace cpsim
