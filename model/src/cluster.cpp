// Hardware description <-> JSON. Units on the wire are the user's (GBps, us, GiB, TFLOP/s);
// inside they are SI (bytes/s, s, bytes, FLOP/s).
#include "cpsim/model/cluster.hpp"

namespace cpsim {

namespace {
constexpr double kGB = 1e9;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

LinkSpec link_from_json(JsonObjectReader& r, bool inter) {
  LinkSpec l;
  l.bandwidth_bytes_per_s = r.get_number("bandwidth_GBps", 1e-6, 1e6) * kGB;
  l.latency_s = r.get_number("latency_us", 0.0, 1e6) * 1e-6;
  if (inter)
    l.nics_per_node = static_cast<int>(r.get_int("nics_per_node", 1, 1024));
  return l;
}
} // namespace

std::string to_string(FabricTopology t) { return t == FabricTopology::FAT_TREE ? "fat_tree" : "rail_fat_tree"; }

ClusterSpec cluster_from_json(const Json& j, const std::string& path) {
  JsonObjectReader r(j, path);
  ClusterSpec c;
  c.name = r.get_string_or("name", "inline");
  r.get_string_or("description", ""); // free text, kept in the source JSON
  {
    JsonObjectReader g = r.get_object("gpu");
    c.gpu.name = g.get_string("name");
    c.gpu.peak_flops = g.get_number("peak_tflops", 1e-3, 1e6) * 1e12;
    c.gpu.hbm_bytes_per_s = g.get_number("hbm_GBps", 1e-3, 1e7) * kGB;
    c.gpu.memory_bytes = g.get_number("memory_gib", 1e-3, 1e6) * kGiB;
    c.gpu.sm_count = static_cast<int>(g.get_int("sm_count", 1, 100000));
    c.gpu.attn_fwd_efficiency = g.get_number_or("attn_fwd_efficiency", 0.5, 1e-3, 1.0);
    c.gpu.attn_bwd_efficiency = g.get_number_or("attn_bwd_efficiency", 0.4, 1e-3, 1.0);
    c.gpu.launch_overhead_s = g.get_number_or("launch_overhead_us", 5.0, 0.0, 1e6) * 1e-6;
    c.gpu.overlap_slowdown = g.get_number_or("overlap_slowdown", 1.0, 1.0, 10.0);
    g.finish();
  }
  c.gpus_per_node = static_cast<int>(r.get_int("gpus_per_node", 1, 1024));
  c.nodes = static_cast<int>(r.get_int("nodes", 1, 1 << 20));
  {
    JsonObjectReader intra = r.get_object("intra_node");
    c.intra_node = link_from_json(intra, false);
    intra.finish();
  }
  {
    JsonObjectReader inter = r.get_object("inter_node");
    c.inter_node = link_from_json(inter, true);
    if (inter.has("topology"))
      c.fabric_topology =
          inter.get_enum("topology", {"rail_fat_tree", "fat_tree"}) == "fat_tree" ? FabricTopology::FAT_TREE
                                                                                   : FabricTopology::RAIL_FAT_TREE;
    c.leaf_ports = static_cast<int>(inter.get_int_or("leaf_ports", 32, 1, 1 << 20));
    inter.finish();
  }
  c.fabric_oversubscription = r.get_number_or("fabric_oversubscription", 1.0, 1.0, 1000.0);
  r.finish();
  return c;
}

Json cluster_to_json(const ClusterSpec& c) {
  return Json{
      {"name", c.name},
      {"gpu",
       {{"name", c.gpu.name},
        {"peak_tflops", c.gpu.peak_flops / 1e12},
        {"hbm_GBps", c.gpu.hbm_bytes_per_s / kGB},
        {"memory_gib", c.gpu.memory_bytes / kGiB},
        {"sm_count", c.gpu.sm_count},
        {"attn_fwd_efficiency", c.gpu.attn_fwd_efficiency},
        {"attn_bwd_efficiency", c.gpu.attn_bwd_efficiency},
        {"launch_overhead_us", c.gpu.launch_overhead_s * 1e6},
        {"overlap_slowdown", c.gpu.overlap_slowdown}}},
      {"gpus_per_node", c.gpus_per_node},
      {"nodes", c.nodes},
      {"intra_node", {{"bandwidth_GBps", c.intra_node.bandwidth_bytes_per_s / kGB}, {"latency_us", c.intra_node.latency_s * 1e6}}},
      {"inter_node",
       {{"bandwidth_GBps", c.inter_node.bandwidth_bytes_per_s / kGB},
        {"latency_us", c.inter_node.latency_s * 1e6},
        {"nics_per_node", c.inter_node.nics_per_node},
        {"topology", to_string(c.fabric_topology)},
        {"leaf_ports", c.leaf_ports}}},
      {"fabric_oversubscription", c.fabric_oversubscription}};
}

} // namespace cpsim
