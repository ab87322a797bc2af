// Closed forms of the v1 cost models: tile-counted kernel time, p2p and NCCL-ring collectives, and
// the memory model's peak over buffer lifetimes.
#include "cpsim/model/comm_cost.hpp"
#include "cpsim/model/kernel_cost.hpp"
#include "cpsim/model/memory_model.hpp"
#include "support/scenario_factory.hpp"

#include <catch2/catch.hpp>

using namespace cpsim;

TEST_CASE("model::RooflineKernelModel: partly masked tiles cost full tiles") {
  Scenario sc = test::make_scenario(test::scenario_json("ring", 1, {1024}, "causal", "fwd", 16, 16, 128));
  RooflineKernelModel k(sc.cluster.gpu, sc.workload, 128, 128);
  Op op;
  op.kind = OpKind::ATTENTION;
  op.head_begin = 0;
  op.head_end = 16;
  op.segments = {{0, {0, 1024}, {0, 1024}}};
  op.tiles = {28, 8}; // causal 1024 with 128-tiles: 28 full below the diagonal, 8 partial on it
  op.cells = 1024 * 1025 / 2;
  double expect = 36 * 4.0 * 128 * 128 * 16 * 128 / (sc.cluster.gpu.peak_flops * sc.cluster.gpu.attn_fwd_efficiency) +
                  sc.cluster.gpu.launch_overhead_s;
  CHECK(k.attention_s(op) == Approx(expect));
  op.dir = Direction::BACKWARD;
  double expect_bwd = 2.5 * 36 * 4.0 * 128 * 128 * 16 * 128 / (sc.cluster.gpu.peak_flops * sc.cluster.gpu.attn_bwd_efficiency) +
                      sc.cluster.gpu.launch_overhead_s;
  CHECK(k.attention_s(op) == Approx(expect_bwd));
  CHECK(attention_flops(op, sc.workload) == Approx(2.5 * 4.0 * op.cells * 16 * 128));
}

TEST_CASE("model::RooflineKernelModel: compute ops are a CUDA-core roofline; per-head ops use their head sums") {
  Scenario sc = test::make_scenario(test::scenario_json("ring", 1, {1024}, "causal", "fwd", 16, 16, 128));
  const GpuSpec& gpu = sc.cluster.gpu;
  RooflineKernelModel k(gpu, sc.workload, 128, 128);
  Op c;
  c.kind = OpKind::COMPUTE;
  c.bytes = 1 << 30; // memory-bound gather: bytes / HBM
  CHECK(k.compute_s(c) == Approx(gpu.launch_overhead_s + double(1 << 30) / gpu.hbm_bytes_per_s));
  c.bytes = 0;
  c.flops = int64_t(1e12); // compute-bound predictor: 1/16 of the tensor peak
  CHECK(k.compute_s(c) == Approx(gpu.launch_overhead_s + 1e12 * 16 / gpu.peak_flops));
  Op a;
  a.kind = OpKind::ATTENTION;
  a.head_ids = {1, 5, 9};
  a.head_begin = 1;
  a.head_end = 10;
  a.head_summed = true;
  a.segments = {{0, {0, 1024}, {0, 1024}}};
  a.tiles = {10, 2}; // over the three heads together
  a.cells = 100000;
  CHECK(a.heads() == 3);
  CHECK(attention_flops(a, sc.workload) == Approx(4.0 * 100000 * 128));
  CHECK(k.attention_s(a) >= 12 * 4.0 * 128 * 128 * 128 / (gpu.peak_flops * gpu.attn_fwd_efficiency));
}

TEST_CASE("model::CommCostModel: links by placement and NCCL ring collectives") {
  Json j = test::scenario_json("ring", 2, {64}, "causal");
  j["hardware"] = "dgx-h100:2";
  Scenario sc = test::make_scenario(j);
  std::vector<int> place(16);
  for (int i = 0; i < 16; ++i)
    place[size_t(i)] = i;
  CommCostModel m(sc.cluster, place);
  const double intra = sc.cluster.intra_node.bandwidth_bytes_per_s, inter = sc.cluster.inter_node_bytes_per_s_per_gpu();
  CHECK(m.p2p_s(0, 1, 1 << 20) == Approx(sc.cluster.intra_node.latency_s + (1 << 20) / intra));
  CHECK(m.p2p_s(7, 8, 1 << 20) == Approx(sc.cluster.inter_node.latency_s + (1 << 20) / inter));
  std::vector<int> g4 = {0, 1, 2, 3};
  CHECK(m.collective_s(CollectiveKind::ALL_GATHER, g4, 1000000) ==
        Approx(3 * (sc.cluster.intra_node.latency_s + 1e6 / intra)));
  CHECK(m.collective_s(CollectiveKind::ALL_TO_ALL, g4, 4000000) ==
        Approx(3 * sc.cluster.intra_node.latency_s + 3e6 / intra));
  std::vector<int> across = {0, 8};
  CHECK(m.collective_s(CollectiveKind::ALL_TO_ALL, across, 2000000) ==
        Approx(sc.cluster.inter_node.latency_s + 1e6 / inter));
  CHECK(CommCostModel::collective_bytes_sent(CollectiveKind::ALL_TO_ALL, 4, 4000) == 3000);
  CHECK(CommCostModel::collective_bytes_sent(CollectiveKind::ALL_GATHER, 4, 1000) == 3000);
}

TEST_CASE("model::memory: peak is the largest sum of live buffers") {
  RankProgram p;
  for (int i = 0; i < 4; ++i) {
    Op op;
    op.id = i;
    p.ops.push_back(op);
  }
  auto buf = [](std::string n, int64_t bytes, int a, int f) {
    Buffer b;
    b.name = std::move(n);
    b.bytes = bytes;
    b.alloc_op = a;
    b.free_op = f;
    return b;
  };
  p.buffers = {buf("persistent", 100, -1, -1), buf("a", 10, 0, 1), buf("b", 20, 1, 2), buf("c", 40, 3, 3)};
  MemoryUse m = rank_memory(p);
  CHECK(m.persistent_bytes == 100);
  CHECK(m.peak_bytes == 140);
  CHECK(m.peak_op == 3);
}
