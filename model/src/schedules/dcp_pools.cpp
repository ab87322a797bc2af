// DCP's block buffers as IR (see Pools in dcp_emit.hpp): which blocks each (stage, head block) launch reads, where
// each remote block is received, what is copied into each pool, and the stage groups that move them.
#include "dcp_emit.hpp"

#include <set>

namespace cpsim::dcp {

namespace {

std::string pool_name(const std::string& prefix, const std::string& tensor, int t, int h) {
  return prefix + tensor + "_t" + std::to_string(t) + "_h" + std::to_string(h);
}

TokenSlice slice(const DcpPlan& plan, int b) {
  const auto& bl = plan.blocks[size_t(b)];
  return {bl.seq, {bl.begin, bl.end}};
}

std::vector<int> head_range(int a, int n) {
  std::vector<int> v;
  for (int x = a; x < a + n; ++x)
    v.push_back(x);
  return v;
}

} // namespace

Pools emit_pools(ScheduleBuilder& b, int r, int comp, int comm, const DcpPlan& plan, const std::vector<const DcpWork*>& work,
                 const Fetches& fx, const QSide& qs, const std::vector<int>& send_deps, StageTags tags,
                 const std::string& label, const std::string& prefix) {
  const Workload& w = b.scenario().workload;
  const int W = b.scenario().parallel.cp, D = w.head_dim, e = w.elem_bytes(), per_kv = w.heads / w.kv_heads;
  const int hb = plan.head_block, T = plan.options.stages;
  auto kvr = [&](int h) { return kv_heads_of(h, hb, per_kv); };
  const int kvh = kvr(0).second - kvr(0).first;
  Pools P;
  // the launches' blocks
  for (const DcpWork* wk : work) {
    P.q_blocks[{wk->stage, wk->head_block}].push_back(wk->q_block);
    P.kv_blocks[{wk->stage, wk->head_block}].push_back(wk->kv_block);
  }
  for (auto* m : {&P.q_blocks, &P.kv_blocks})
    for (auto& [key, v] : *m) {
      std::sort(v.begin(), v.end());
      v.erase(std::unique(v.begin(), v.end()), v.end());
    }
  std::vector<int> own;
  for (int bi = 0; bi < int(plan.blocks.size()); ++bi)
    if (plan.blocks[size_t(bi)].device == r)
      own.push_back(bi);
  // where each remote block is received: the pool of the first stage that needs it (K, V: the first head block of
  // that stage whose KV heads they are)
  std::map<std::pair<int, int>, std::pair<int, int>> q_home, kv_home; // (block, head key) -> (t, h)
  for (const auto& [key, t] : fx.q_first.entries())
    if (std::get<0>(key) == r)
      q_home[{std::get<1>(key), std::get<2>(key)}] = {t, std::get<2>(key)};
  for (const auto& [key, t] : fx.kv_first.entries())
    if (std::get<0>(key) == r)
      for (int h = 0; h < plan.head_blocks; ++h) {
        auto it = P.kv_blocks.find({t, h});
        if (kvr(h).first == std::get<2>(key) && it != P.kv_blocks.end() &&
            std::binary_search(it->second.begin(), it->second.end(), std::get<1>(key))) {
          kv_home[{std::get<1>(key), std::get<2>(key)}] = {t, h};
          break;
        }
      }
  // pool buffers (or the resident ones)
  auto remote_in = [&](const std::map<std::pair<int, int>, std::pair<int, int>>& home, int t, int h, int key,
                       const std::vector<int>& blocks) {
    for (int bi : blocks)
      if (plan.blocks[size_t(bi)].device != r && home.at({bi, key}) == std::make_pair(t, h))
        return true;
    return false;
  };
  for (const auto& [key, blocks] : P.q_blocks) {
    const auto [t, h] = key;
    const bool resident = blocks == own && !remote_in(q_home, t, h, h, blocks);
    std::vector<TokenSlice> toks;
    for (int bi : blocks)
      toks.push_back(slice(plan, bi));
    int64_t tokens = 0;
    for (const auto& x : toks)
      tokens += x.range.size();
    for (size_t i = 0; i < qs.tensors.size(); ++i) {
      const std::string& tensor = qs.tensors[i];
      if (resident) {
        P.q[key].push_back(tensor);
        continue;
      }
      Buffer x;
      x.name = pool_name(prefix, tensor, t, h);
      x.tensor = tensor;
      x.bytes = tokens * hb * qs.bytes_per_head[i];
      x.head_begin = h * hb;
      x.head_end = (h + 1) * hb;
      x.tokens = toks;
      b.add_buffer(r, x);
      P.q[key].push_back(x.name);
    }
  }
  for (const auto& [key, blocks] : P.kv_blocks) {
    const auto [t, h] = key;
    if (blocks == own && !remote_in(kv_home, t, h, kvr(h).first, blocks)) {
      P.kv[key] = "kv";
      continue;
    }
    Buffer x;
    x.name = pool_name(prefix, "kv", t, h);
    x.tensor = "kv";
    x.head_begin = kvr(h).first;
    x.head_end = kvr(h).second;
    int64_t tokens = 0;
    for (int bi : blocks) {
      x.tokens.push_back(slice(plan, bi));
      tokens += plan.blocks[size_t(bi)].tokens();
    }
    x.bytes = tokens * 2 * kvh * D * e;
    b.add_buffer(r, x);
    P.kv[key] = x.name;
  }
  auto note = [&](const std::string& buf, int op) {
    if (!P.first_write.count(buf))
      P.first_write[buf] = op;
  };
  // stage groups: each remote block once, Q side and K, V as one message each per peer
  std::map<std::tuple<int, int, int>, std::vector<std::pair<int, int>>> q_items, kv_items; // (t, src, dst) -> (block, key)
  for (const auto& [key, t] : fx.q_first.entries())
    q_items[{t, plan.blocks[size_t(std::get<1>(key))].device, std::get<0>(key)}].push_back({std::get<1>(key), std::get<2>(key)});
  for (const auto& [key, t] : fx.kv_first.entries())
    kv_items[{t, plan.blocks[size_t(std::get<1>(key))].device, std::get<0>(key)}].push_back({std::get<1>(key), std::get<2>(key)});
  const int64_t q_tok = [&] {
    int64_t sum = 0;
    for (int64_t x : qs.bytes_per_head)
      sum += x * hb;
    return sum;
  }();
  for (int t = 1; t <= T; ++t) {
    const int grp = b.next_group(r);
    const std::string st = label + std::to_string(t);
    for (int peer = 0; peer < W; ++peer) {
      if (auto it = q_items.find({t, r, peer}); it != q_items.end()) {
        std::vector<BufferRegion> rs;
        int64_t bytes = 0;
        for (auto [bi, h] : it->second) {
          for (const auto& tensor : qs.tensors)
            rs.push_back({tensor, {slice(plan, bi)}, head_range(h * hb, hb)});
          bytes += plan.blocks[size_t(bi)].tokens() * q_tok;
        }
        b.set_regions(r, b.send(r, comm, send_deps, peer, bytes, tags.q(t), grp, st + " q to " + std::to_string(peer), qs.tensors[0]), rs);
      }
      if (auto it = kv_items.find({t, r, peer}); it != kv_items.end()) {
        std::vector<BufferRegion> rs;
        int64_t bytes = 0;
        for (auto [bi, g] : it->second) {
          rs.push_back({"kv", {slice(plan, bi)}, head_range(g, kvh)});
          bytes += plan.blocks[size_t(bi)].tokens() * 2 * kvh * D * e;
        }
        b.set_regions(r, b.send(r, comm, send_deps, peer, bytes, tags.kv(t), grp, st + " kv to " + std::to_string(peer), "kv"), rs);
      }
      if (auto it = q_items.find({t, peer, r}); it != q_items.end()) {
        std::vector<BufferRegion> rs;
        int64_t bytes = 0;
        for (auto [bi, h] : it->second) {
          for (const auto& n : P.q.at(q_home.at({bi, h})))
            rs.push_back({n, {slice(plan, bi)}, {}});
          bytes += plan.blocks[size_t(bi)].tokens() * q_tok;
        }
        const int id = b.recv(r, comm, send_deps, peer, bytes, tags.q(t), grp, st + " q from " + std::to_string(peer), rs[0].buffer);
        b.set_regions(r, id, rs);
        for (const auto& g : rs)
          note(g.buffer, id);
        P.recv_ops[t].push_back(id);
      }
      if (auto it = kv_items.find({t, peer, r}); it != kv_items.end()) {
        std::vector<BufferRegion> rs;
        int64_t bytes = 0;
        for (auto [bi, g] : it->second) {
          rs.push_back({P.kv.at(kv_home.at({bi, g})), {slice(plan, bi)}, {}});
          bytes += plan.blocks[size_t(bi)].tokens() * 2 * kvh * D * e;
        }
        const int id = b.recv(r, comm, send_deps, peer, bytes, tags.kv(t), grp, st + " kv from " + std::to_string(peer), rs[0].buffer);
        b.set_regions(r, id, rs);
        for (const auto& g : rs)
          note(g.buffer, id);
        P.recv_ops[t].push_back(id);
      }
    }
  }
  // copies: resident blocks, and blocks received for an earlier stage, into each pool (sources in that order: a
  // block held by several sources is taken from the first)
  for (const auto& [key, blocks] : P.q_blocks) {
    const auto [t, h] = key;
    std::vector<std::string> reads, writes;
    int64_t rows_q = 0, rows_kv = 0;
    std::set<std::pair<int, int>> pool_sources; // (t, h) of earlier pools read
    if (P.q[key][0] != qs.tensors[0]) {
      for (int bi : blocks) {
        if (plan.blocks[size_t(bi)].device == r) {
          rows_q += plan.blocks[size_t(bi)].tokens();
          for (const auto& tensor : qs.tensors)
            if (std::find(reads.begin(), reads.end(), tensor) == reads.end())
              reads.push_back(tensor);
        } else if (q_home.at({bi, h}) != key) {
          rows_q += plan.blocks[size_t(bi)].tokens();
          pool_sources.insert(q_home.at({bi, h}));
        }
      }
      for (const auto& src : pool_sources)
        for (const auto& n : P.q.at(src))
          reads.push_back(n);
      if (rows_q > 0)
        writes.insert(writes.end(), P.q[key].begin(), P.q[key].end());
    }
    std::set<std::pair<int, int>> kv_sources;
    const auto& kvb = P.kv_blocks.at(key);
    if (P.kv[key] != "kv") {
      bool resident = false;
      for (int bi : kvb) {
        if (plan.blocks[size_t(bi)].device == r) {
          rows_kv += plan.blocks[size_t(bi)].tokens();
          resident = true;
        } else if (kv_home.at({bi, kvr(h).first}) != key) {
          rows_kv += plan.blocks[size_t(bi)].tokens();
          kv_sources.insert(kv_home.at({bi, kvr(h).first}));
        }
      }
      if (resident)
        reads.push_back("kv");
      for (const auto& src : kv_sources)
        reads.push_back(P.kv.at(src));
      if (rows_kv > 0)
        writes.push_back(P.kv[key]);
    }
    if (writes.empty())
      continue;
    std::vector<int> deps;
    for (int ft = 1; ft < t; ++ft)
      if (auto it = P.recv_ops.find(ft); it != P.recv_ops.end())
        deps.insert(deps.end(), it->second.begin(), it->second.end());
    const int64_t bytes = 2 * (rows_q * q_tok + rows_kv * 2 * kvh * D * e); // read and written
    const int id = b.compute(r, comp, deps, ComputeKind::COPY, 0, bytes,
                             label + std::to_string(t) + " copy blocks heads " + std::to_string(h * hb), reads, writes);
    P.copy[key] = id;
    for (const auto& n : writes)
      note(n, id);
    for (const auto& n : reads)
      if (P.first_write.count(n)) // a pool read by a later stage's copy lives until then
        b.set_free(r, n, id);
  }
  for (const auto& [buf, op] : P.first_write)
    b.set_alloc(r, buf, op);
  return P;
}

} // namespace cpsim::dcp
