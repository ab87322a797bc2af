// Seeded log-normal draws for the dataset-shaped sequence-length generators. The RNG and the
// normal transform are written out (splitmix64 + Box-Muller) so that a seed gives the same batch
// with every standard library.
#include "cpsim/model/seq_len_distributions.hpp"

#include <algorithm>
#include <cmath>

namespace cpsim {

namespace {
uint64_t splitmix64(uint64_t& state) {
  uint64_t x = (state += 0x9e3779b97f4a7c15ULL);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
double uniform01(uint64_t& state) { return (double(splitmix64(state) >> 11) + 0.5) * 0x1.0p-53; }
double standard_normal(uint64_t& state) {
  const double u1 = uniform01(state), u2 = uniform01(state);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}
} // namespace

const std::vector<SeqLenDistribution>& seq_len_distributions() {
  // LongAlign-10k: 10k instruction samples of 8k-64k tokens (LongAlign paper, Bai et al. 2024, and
  // its dataset card), most of them near the short end. Long-Data-Collections: Together's mix of
  // books, papers and QA, from a few hundred tokens to well past 100k, long-tailed. The medians and
  // spreads below are chosen to match those ranges and skews; they are not fitted to the data.
  static const std::vector<SeqLenDistribution> d = {
      {"longalign", 16384, 0.55, 8192, 65536},
      {"longdatacollections", 8192, 1.1, 512, 131072},
  };
  return d;
}

std::vector<int64_t> generate_seq_lens(const Json& spec, const std::string& path) {
  JsonObjectReader r(spec, path);
  std::vector<std::string> names;
  for (const auto& d : seq_len_distributions())
    names.push_back(d.name);
  const std::string name = r.get_enum("distribution", names);
  const int64_t total = r.get_int("total_tokens", 1, int64_t(1) << 34);
  uint64_t state = uint64_t(r.get_int("seed", 0));
  const double scale = r.get_number_or("scale", 1.0, 0.0, 64.0);
  if (scale <= 0.0)
    r.fail("scale", "must be greater than 0");
  const int64_t max_len = r.get_int_or("max_len", 131072, 1, int64_t(1) << 34);
  r.finish();
  const SeqLenDistribution& d = *std::find_if(seq_len_distributions().begin(), seq_len_distributions().end(),
                                              [&](const auto& x) { return x.name == name; });
  std::vector<int64_t> lens;
  int64_t sum = 0;
  while (sum < total) {
    double x = d.median_tokens * std::exp(d.sigma * standard_normal(state));
    x = std::clamp(x, double(d.min_tokens), double(d.max_tokens)) * scale;
    int64_t len = std::clamp<int64_t>(std::llround(x), 1, max_len);
    len = std::min(len, total - sum);
    lens.push_back(len);
    sum += len;
  }
  return lens;
}

} // namespace cpsim
