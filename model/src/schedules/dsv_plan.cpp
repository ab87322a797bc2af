// DSV planning: options, head placement, needed key tokens (see dsv_plan.hpp).
#include "dsv_plan.hpp"

#include "hybrid_degrees.hpp"

#include "cpsim/model/schedule_generator.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <tuple>

namespace cpsim::dsv {

namespace {

const std::vector<std::string> kKeys = {"hcp", "scp", "sparsity_aware", "predictor_rank", "query_group", "hcp_inner"};

bool option_bool(const Scenario& sc, const std::string& key, bool absent) {
  const Json& o = sc.parallel.options;
  if (!o.contains(key))
    return absent;
  if (!o.at(key).is_boolean())
    throw UserError("'parallel." + key + "' = " + o.at(key).dump() + ": must be true or false");
  return o.at(key).get<bool>();
}

int64_t option_range(const Scenario& sc, const std::string& key, int64_t absent, int64_t lo, int64_t hi) {
  const Json& o = sc.parallel.options;
  if (!o.contains(key))
    return absent;
  const Json& v = o.at(key);
  if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
    throw UserError("'parallel." + key + "' = " + v.dump() + ": must be an integer in [" + std::to_string(lo) + ", " +
                    std::to_string(hi) + "]");
  return v.get<int64_t>();
}

} // namespace

Options read_options(const Scenario& sc) {
  check_scheme_options(sc, kKeys);
  Options o;
  std::tie(o.hcp, o.scp) = hybrid::degrees(sc, "hcp", "scp", "dsv");
  o.aware = option_bool(sc, "sparsity_aware", true);
  o.rank_lr = option_range(sc, "predictor_rank", 16, 1, sc.workload.head_dim);
  o.query_group = option_range(sc, "query_group", 8, 1, 4096);
  o.hcp_inner = option_bool(sc, "hcp_inner", true);
  return o;
}

std::vector<std::vector<int>> place_kv_groups(const Workload& w, const MaskGeometry& mask, int hcp, bool aware) {
  const int G = w.kv_heads, per = w.heads / w.kv_heads;
  std::vector<std::vector<int>> out(static_cast<size_t>(hcp));
  if (!aware) {
    for (int g = 0; g < G; ++g)
      out[size_t(g / (G / hcp))].push_back(g);
    return out;
  }
  std::vector<int64_t> work(size_t(G), 0);
  for (int g = 0; g < G; ++g)
    for (int h = g * per; h < (g + 1) * per; ++h)
      for (size_t s = 0; s < w.seq_lens.size(); ++s)
        work[size_t(g)] += mask.total_cells(int(s), h);
  std::vector<int> order(static_cast<size_t>(G));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return work[size_t(a)] > work[size_t(b)]; });
  std::vector<int64_t> load(size_t(hcp), 0);
  for (int g : order) {
    size_t m = size_t(std::min_element(load.begin(), load.end()) - load.begin());
    out[m].push_back(g);
    load[m] += work[size_t(g)];
  }
  for (auto& v : out)
    std::sort(v.begin(), v.end());
  return out;
}

std::vector<TokenSlice> needed_keys(const MaskGeometry& mask, const Workload& w, int seq, TokenRange q, int g, int scp,
                                    int j) {
  const int64_t n = w.seq_lens[size_t(seq)], cs = n / scp, blk = w.mask.block, per = w.heads / w.kv_heads;
  std::vector<TokenSlice> out;
  for (int64_t kb = (j * cs) / blk; kb * blk < (j + 1) * cs; ++kb) {
    const TokenRange k{std::max(kb * blk, j * cs), std::min({n, (kb + 1) * blk, (j + 1) * cs})};
    bool used = false;
    for (int64_t h = g * per; h < (g + 1) * per && !used; ++h)
      used = mask.cells(seq, int(h), q, k) > 0;
    if (!used)
      continue;
    if (!out.empty() && out.back().range.end == k.begin)
      out.back().range.end = k.end;
    else
      out.push_back({seq, k});
  }
  return out;
}

std::vector<int64_t> needed_from_chunks(const MaskGeometry& mask, const Workload& w, int seq, TokenRange q,
                                        const std::vector<int>& kv, int scp) {
  std::vector<int64_t> need(size_t(scp), 0);
  for (int g : kv)
    for (int j = 0; j < scp; ++j)
      for (const TokenSlice& t : needed_keys(mask, w, seq, q, g, scp, j))
        need[size_t(j)] += t.range.size();
  return need;
}

int64_t log2_ceil(double x) { return std::max<int64_t>(1, int64_t(std::ceil(std::log2(std::max(2.0, x))))); }

} // namespace cpsim::dsv
