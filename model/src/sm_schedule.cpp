// List scheduling of CTAs onto SM slots, then the drain of each SM at the lone-CTA rates (see sm_schedule.hpp).
#include "cpsim/model/sm_schedule.hpp"

#include "cpsim/model/errors.hpp"

#include <algorithm>
#include <numeric>

namespace cpsim {

GridMakespan grid_makespan(const std::vector<double>& cost, const std::vector<int64_t>& count, const SmGrid& g) {
  CPSIM_ASSERT(cost.size() == count.size(), "one count per CTA class");
  CPSIM_ASSERT(g.sms > 0 && g.slots > 0 && g.alone_fraction > 0 && g.alone_fraction <= 1, "bad SM grid");
  const size_t n_classes = cost.size();
  GridMakespan out;
  out.weights.assign(n_classes, 0.0);
  std::vector<size_t> order(n_classes);
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return cost[a] > cost[b]; });
  const int slots = g.sms * g.slots;
  // dispatched CTAs (runs of equal ones on one slot): their class, how many, and the run before them on the same
  // slot (-1: first), to rebuild a slot's history
  struct Run {
    int32_t cls, prev;
    int64_t n;
  };
  // Fits call this hundreds of thousands of times: the scratch lives on with its thread, so that a call allocates
  // only its result.
  thread_local std::vector<Run> runs;
  thread_local std::vector<int32_t> last;
  thread_local std::vector<double> free_at;
  using Entry = std::pair<double, int>; // (free at, slot); equal times go to the lower slot: breadth-first over SMs
  thread_local std::vector<Entry> heap; // a binary min-heap, kept by hand for its one-pass replace of the top
  runs.clear();
  last.assign(size_t(slots), -1);
  free_at.assign(size_t(slots), 0.0);
  heap.clear();
  for (int s = 0; s < slots; ++s)
    heap.push_back({0.0, s}); // slot s is slot s / sms of SM s % sms; sorted, hence a heap
  // the top's slot got a later free time: move it down to its place
  auto sift_top = [&](Entry e) {
    const size_t n = heap.size();
    size_t i = 0;
    for (;;) {
      size_t c = 2 * i + 1;
      if (c >= n)
        break;
      if (c + 1 < n && heap[c + 1] < heap[c])
        ++c;
      if (!(heap[c] < e))
        break;
      heap[i] = heap[c];
      i = c;
    }
    heap[i] = e;
  };
  double t0 = 0; // when the last CTA starts: from then on no CTA waits
  int32_t before_last = -1;
  for (size_t c : order) {
    int64_t left = count[c];
    if (left >= slots) {
      // whole rounds at once: while every slot frees within one CTA's time of the earliest, the next `slots` CTAs
      // go one to each slot in the order they free, and that order does not change
      const auto [lo, hi] = std::minmax_element(free_at.begin(), free_at.end());
      if (*hi - *lo < cost[c]) {
        const int64_t rounds = left / slots - (left % slots == 0 ? 1 : 0); // the last CTA placed one by one
        if (rounds > 0) {
          for (int s = 0; s < slots; ++s) {
            runs.push_back({int32_t(c), last[size_t(s)], rounds});
            last[size_t(s)] = int32_t(runs.size() - 1);
            free_at[size_t(s)] += double(rounds) * cost[c];
          }
          left -= rounds * slots;
          for (auto& e : heap)
            e.first = free_at[size_t(e.second)];
          std::make_heap(heap.begin(), heap.end(), std::greater<>()); // rounding may have made times equal

        }
      }
    }
    for (; left > 0; --left) {
      const auto [t, s] = heap.front();
      before_last = last[size_t(s)];
      runs.push_back({int32_t(c), before_last, 1});
      last[size_t(s)] = int32_t(runs.size() - 1);
      t0 = t;
      free_at[size_t(s)] = t + cost[c];
      sift_top({free_at[size_t(s)], s});
    }
  }
  if (runs.empty())
    return out;
  auto rate = [&](int j) { return std::min(double(g.slots) / j, 1.0 / g.alone_fraction); };
  // each SM drains the CTAs it holds at t0, the shortest remaining first
  auto drain = [&](int sm, std::vector<std::pair<double, int>>& active) {
    active.clear();
    for (int k = 0; k < g.slots; ++k) {
      const int s = k * g.sms + sm;
      if (free_at[size_t(s)] > t0)
        active.push_back({free_at[size_t(s)] - t0, s});
    }
    std::sort(active.begin(), active.end());
    double t = 0, done = 0;
    int j = int(active.size());
    for (const auto& a : active) {
      t += (a.first - done) / rate(j--);
      done = a.first;
    }
    return t0 + t;
  };
  std::vector<std::pair<double, int>> active;
  int critical = 0;
  double end = -1;
  for (int sm = 0; sm < g.sms; ++sm) {
    const double e = drain(sm, active);
    if (e > end) {
      end = e;
      critical = sm;
    }
  }
  out.seconds = end;
  // weights: the same sums, carried per class
  auto history = [&](int32_t run) {
    std::vector<double> w(n_classes, 0.0);
    for (; run >= 0; run = runs[size_t(run)].prev)
      w[size_t(runs[size_t(run)].cls)] += double(runs[size_t(run)].n);
    return w;
  };
  const std::vector<double> w0 = history(before_last);
  out.weights = w0;
  drain(critical, active);
  std::vector<double> done(n_classes, 0.0);
  int j = int(active.size());
  for (const auto& a : active) {
    std::vector<double> r = history(last[size_t(a.second)]); // the slot's free time ...
    const double k = 1.0 / rate(j--);
    for (size_t c = 0; c < n_classes; ++c) {
      r[c] -= w0[c]; // ... less t0: what remains of its CTA at t0
      out.weights[c] += (r[c] - done[c]) * k;
      done[c] = r[c];
    }
  }
  return out;
}

} // namespace cpsim
