// PIT-style gathered sparse attention (schedules.md 8): the block-sparse layout is read at the
// granularity of micro-tiles of `granularity` tokens along one permutation-invariant axis: key
// columns per query tile (the default, MInference's PIT kernel) or query rows per key tile. The
// needed micro-tiles are gathered into dense tiles (a memory-bound gather op with the index
// build), and the attention op counts the dense tiles after the gather, so granularities (and
// axes) can be compared. Gathering query rows permutes an output axis: partial outputs (O and LSE
// per gathered row) are scatter-merged into their rows afterwards; the backward gathers Q, dO, O and
// the LSE of those rows (the kernel's backward reads all four per query row) and sums the gathered
// dQ rows home.
// Across cp ranks the queries are split in contiguous chunks and K, V are all-gathered first
// (the kernel technique needs every key a query tile may pick); the backward gathers again,
// scatters dK, dV back to their rows and reduce-scatters them.
#include "cpsim/model/errors.hpp"
#include "cpsim/model/schedule_builder.hpp"
#include "cpsim/model/schedule_generator.hpp"

#include "hybrid_degrees.hpp"

#include <algorithm>

namespace cpsim {

namespace {
constexpr int64_t kMinGranularity = 8, kMaxGranularity = 4096;

int64_t read_granularity(const Scenario& sc) {
  const Json& o = sc.parallel.options;
  if (!o.contains("granularity"))
    throw UserError("'parallel.granularity': scheme 'pit' needs the micro-tile width in key columns (e.g. 16, 64, 128)");
  const Json& v = o.at("granularity");
  if (!v.is_number_integer() || v.get<int64_t>() < kMinGranularity || v.get<int64_t>() > kMaxGranularity)
    throw UserError("'parallel.granularity' = " + v.dump() + ": must be an integer in [" +
                    std::to_string(kMinGranularity) + ", " + std::to_string(kMaxGranularity) + "]");
  return v.get<int64_t>();
}

GatherAxis read_axis(const Scenario& sc) {
  const Json& o = sc.parallel.options;
  if (!o.contains("axis"))
    return GatherAxis::KEYS;
  const Json& v = o.at("axis");
  if (v == "columns")
    return GatherAxis::KEYS;
  if (v == "rows")
    return GatherAxis::QUERIES;
  throw UserError("'parallel.axis' = " + v.dump() + ": must be \"columns\" (gather key columns per query tile) or "
                  "\"rows\" (gather query rows per key tile)");
}
} // namespace

std::vector<Json> pit_variants(const Scenario&) {
  std::vector<Json> out;
  for (const char* axis : {"columns", "rows"})
    for (int g : {16, 64, 128})
      out.push_back(Json{{"granularity", g}, {"axis", axis}});
  return out;
}

Schedule generate_pit(const Scenario& sc, const MaskGeometry& mask) {
  check_scheme_options(sc, {"granularity", "axis"});
  const int64_t g = read_granularity(sc);
  const GatherAxis axis = read_axis(sc);
  const bool cols = axis == GatherAxis::KEYS;
  const Workload& w = sc.workload;
  if (w.mask.kind != MaskKind::BLOCK_SPARSE)
    throw UserError("'workload.mask.kind' = \"" + to_string(w.mask.kind) +
                    "\": scheme 'pit' gathers a sparse layout and needs a block_sparse mask");
  const int W = sc.parallel.cp, H = w.heads, G = w.kv_heads, D = w.head_dim, e = w.elem_bytes();
  require_seq_divisible(sc, W, "scheme 'pit' with cp = " + std::to_string(W));
  const bool bwd = sc.pass == PassKind::FWD_BWD;
  ScheduleBuilder b(sc, mask, "pit", W);
  const int comp = b.add_stream("compute", StreamKind::COMPUTE);
  const int comm = b.add_stream("comm_ag", StreamKind::COMM);
  std::vector<int> all;
  for (int r = 0; r < W; ++r)
    all.push_back(r);
  std::vector<TokenSlice> whole;
  for (size_t s = 0; s < w.seq_lens.size(); ++s)
    whole.push_back({int(s), {0, w.seq_lens[s]}});
  // One packed copy per head slot: with a head-uniform mask the H/G query heads of a KV group share
  // one gathered K, V (Q: all heads at once); with per-head masks every query head gathers its own.
  const bool per_head = mask.per_head();
  const int64_t head_row = int64_t(D) * e; // one K (or V, or Q) row of one head

  for (int r = 0; r < W; ++r) {
    std::vector<TokenSlice> mine;
    std::vector<AttnSegment> segs;
    for (size_t s = 0; s < w.seq_lens.size(); ++s) {
      const int64_t c = w.seq_lens[s] / W;
      mine.push_back({int(s), {r * c, (r + 1) * c}});
      segs.push_back({int(s), {r * c, (r + 1) * c}, {0, w.seq_lens[s]}});
    }
    const int64_t c = w.total_tokens() / W, B_Q = c * H * D * e, B_KV = 2 * c * G * D * e;
    auto buf = [&](std::string n, std::string t, int64_t bytes, int h1, std::vector<TokenSlice> toks) {
      Buffer x;
      x.name = std::move(n);
      x.tensor = std::move(t);
      x.bytes = bytes;
      x.head_end = h1;
      x.tokens = std::move(toks);
      return b.add_buffer(r, std::move(x)).name;
    };
    buf("q", "q", B_Q, H, mine);
    buf("kv", "kv", B_KV, G, mine);
    buf("o", "o", B_Q, H, mine);
    buf("lse", "lse", 4 * c * H, H, mine);
    const std::string kv_all = W > 1 ? buf("kv_gathered", "kv", W * B_KV, G, whole) : "kv";
    int ag = b.collective(r, comm, {}, CollectiveKind::ALL_GATHER, all, B_KV, 0, "fwd ag kv", {"kv"}, {kv_all});
    if (W > 1)
      b.set_alloc(r, kv_all, ag);

    // The gather runs before the attention, but what it moves is known once the attention's
    // rectangles are counted: emit both, then set the gather's bytes and the buffer sizes. The
    // kernels cannot load rows by index (PIT's SRead into shared memory), so the gather packs the
    // micro-tiles into dense tiles in HBM (kv_packed, or q_packed along rows) that the kernel reads.
    const std::string packed = cols ? "kv_packed" : "q_packed";
    b.add_buffer(r, Buffer{"mt_index", "index", 0, 0, H, {}, -1, -1, {}, "int32"});
    b.add_buffer(r, Buffer{packed, packed, 0, 0, H, {}, -1, -1, {}, "bf16"});
    const int gather_slot = b.compute(r, comp, {ag}, ComputeKind::GATHER, 0, 0, "fwd gather micro-tiles",
                                      {cols ? kv_all : "q"}, {"mt_index", packed});
    const std::vector<std::string> fwd_out = cols ? std::vector<std::string>{"o", "lse"}
                                                  : std::vector<std::string>{"o_partial", "lse_partial"};
    int a = b.attention(r, comp, {gather_slot}, Direction::FORWARD, 0, H, segs, "fwd attn (gathered tiles)",
                        {cols ? "q" : packed, cols ? packed : kv_all, "mt_index"}, fwd_out);
    // no visible cell in this rank's queries (a < 0): nothing to gather either
    const GatheredTiles gt = a >= 0 ? b.gather_tiles(r, a, g, axis) : GatheredTiles{};
    // gather_tiles counts every query head; a head-uniform mask gathers once per slot
    const int64_t n_heads = a >= 0 ? b.op(r, a).heads() : 1, share = per_head ? 1 : n_heads;
    const int64_t rows = gt.gathered / share, entries = gt.micro_tiles / share, candidates = gt.candidates / share;
    // a packed row holds one head (per-head masks) or every KV head (K, V) or query head (Q) of the slot
    const int64_t row_bytes = per_head ? head_row : (cols ? G : H) * head_row;
    const int64_t packed_bytes = (cols ? 2 : 1) * rows * row_bytes;
    const int64_t lse_bytes = 4 * rows * (row_bytes / head_row); // fp32 per gathered row and head (rows axis)
    // read each gathered row by index and write it packed; scan one flag byte per candidate micro-tile;
    // write then read the int32 index (schedules.md 8: t'_tile and t_index)
    b.set_compute_cost(r, gather_slot, 0, 2 * packed_bytes + candidates + 8 * entries);
    b.set_gather(r, gather_slot, g, !cols);
    b.set_buffer_bytes(r, "mt_index", 4 * entries);
    b.set_buffer_bytes(r, packed, packed_bytes);
    b.set_alloc(r, "mt_index", gather_slot);
    b.set_alloc(r, packed, gather_slot);
    b.set_free(r, packed, std::max(a, gather_slot));
    int fwd_end = a;
    if (!cols) {
      // rows: a query row's keys span several key tiles, so each gathered row leaves a partial
      // (O, LSE) that the scatter merges into its home row (SWrite onto the output axis)
      b.add_buffer(r, Buffer{"o_partial", "o_packed", rows * row_bytes, 0, H, {}, -1, -1, {}, "bf16"});
      b.add_buffer(r, Buffer{"lse_partial", "lse_packed", lse_bytes, 0, H, {}, -1, -1, {}, "fp32"});
      fwd_end = b.merge(r, comp, {a}, Direction::FORWARD, 0, H, rows * row_bytes / (H * head_row), 2, 0,
                        "fwd scatter-merge o", {"o_partial", "lse_partial"}, {"o", "lse"});
      for (const char* n : {"o_partial", "lse_partial"}) {
        b.set_alloc(r, n, a);
        b.set_free(r, n, fwd_end);
      }
    }
    if (W > 1)
      b.set_free(r, kv_all, cols ? gather_slot : std::max(gather_slot, a));
    if (!bwd) {
      b.set_free(r, "mt_index", fwd_end);
      continue;
    }
    // ---- backward: gather again, gathered backward, scatter-add the gathered gradient rows
    // (dK, dV for columns; dQ for rows), reduce-scatter dK, dV
    buf("do", "do", B_Q, H, mine);
    buf("dq", "dq", B_Q, H, mine);
    buf("dkv", "dkv", B_KV, G, mine);
    const std::string kv_all2 = W > 1 ? buf("kv_gathered_bwd", "kv", W * B_KV, G, whole) : "kv";
    // every key's dK, dV from this rank's queries, reduce-scattered; at cp = 1 that is the result itself
    const std::string dkv_all = W > 1 ? buf("dkv_full", "dkv", W * B_KV, G, whole) : "dkv";
    const std::string packed2 = packed + "_bwd", grads = cols ? "dkv_packed" : "dq_packed";
    // columns pack K, V again by the kept index; rows pack Q, dO and O (bf16 planes) and the LSE of each row
    b.add_buffer(r, Buffer{packed2, packed, (cols ? 1 : 3) * packed_bytes, 0, H, {}, -1, -1, {}, "bf16"});
    b.add_buffer(r, Buffer{grads, cols ? "dkv_packed" : "dq_packed", packed_bytes, 0, H, {}, -1, -1, {}, "bf16"});
    if (!cols)
      b.add_buffer(r, Buffer{"lse_packed_bwd", "lse_packed", lse_bytes, 0, H, {}, -1, -1, {}, "fp32"});
    int ag2 = b.collective(r, comm, {fwd_end}, CollectiveKind::ALL_GATHER, all, B_KV, 1, "bwd ag kv", {"kv"}, {kv_all2});
    const int64_t moved2 = cols ? packed_bytes : 3 * packed_bytes + lse_bytes; // read by index, written packed
    int gb = b.compute(r, comp, {ag2, fwd_end}, ComputeKind::GATHER, 0, 2 * moved2 + 4 * entries, "bwd gather micro-tiles",
                       cols ? std::vector<std::string>{kv_all2, "mt_index"}
                            : std::vector<std::string>{"q", "do", "o", "lse", "mt_index"},
                       cols ? std::vector<std::string>{packed2} : std::vector<std::string>{packed2, "lse_packed_bwd"});
    b.set_gather(r, gb, g, !cols);
    int ab = b.attention(r, comp, {gb}, Direction::BACKWARD, 0, H, segs, "bwd attn (gathered tiles)",
                         cols ? std::vector<std::string>{"q", packed2, "o", "lse", "do", "mt_index"}
                              : std::vector<std::string>{packed2, "lse_packed_bwd", kv_all2, "mt_index"},
                         {cols ? "dq" : dkv_all, grads});
    if (ab >= 0)
      b.gather_tiles(r, ab, g, axis);
    // the gathered gradient rows summed into their home rows: each gathered row read once, each home
    // row written once (an inverse index of 4 bytes a gathered row: a gather-sum, no atomics)
    const int64_t home_bytes = cols ? W * B_KV : B_Q;
    int sc_op = b.compute(r, comp, {ab}, ComputeKind::SCATTER, 0, packed_bytes + home_bytes + 4 * rows,
                          "bwd scatter grads", {"mt_index", grads}, {cols ? dkv_all : "dq"});
    b.set_gather(r, sc_op, g, !cols);
    int rs = b.collective(r, comm, {sc_op, ab}, CollectiveKind::REDUCE_SCATTER, all, B_KV, 2, "bwd rs dkv",
                          {dkv_all}, {"dkv"});
    if (W > 1) {
      b.set_alloc(r, kv_all2, ag2);
      b.set_free(r, kv_all2, cols ? gb : std::max(gb, ab));
    }
    for (const std::string& n : cols ? std::vector<std::string>{packed2} : std::vector<std::string>{packed2, "lse_packed_bwd"}) {
      b.set_alloc(r, n, gb);
      b.set_free(r, n, std::max(ab, gb));
    }
    b.set_alloc(r, grads, std::max(ab, gb));
    b.set_free(r, grads, sc_op);
    b.set_free(r, "mt_index", sc_op);
    if (W > 1) {
      b.set_alloc(r, dkv_all, cols ? sc_op : ab);
      b.set_free(r, dkv_all, std::max(rs, sc_op));
    }
  }
  return b.finish();
}

} // namespace cpsim
