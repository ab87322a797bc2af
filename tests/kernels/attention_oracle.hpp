// fp64 CPU attention for the kernel tests: forward (O, LSE) and backward (dQ, dK, dV) over an
// explicit list of visible key rows per query row, straight from the definitions of schedules.md 1.2/1.4.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace cpsim::kernels::test {

struct OracleProblem {
  int64_t q_rows = 0, k_rows = 0;
  int heads = 0, kv_heads = 0, head_dim = 0;
  double scale = 0;
  /** keys[slot][q row]: visible key rows; slot = head when per_head, else 0 */
  std::vector<std::vector<std::vector<int64_t>>> keys;
  std::vector<double> q, k, v; // [rows][heads][d], the values the GPU sees (already rounded)
  const std::vector<int64_t>& keys_of(int h, int64_t row) const { return keys[keys.size() == 1 ? 0 : std::size_t(h)][std::size_t(row)]; }
};

struct OracleForward {
  std::vector<double> o;   // [q rows][heads][d]
  std::vector<double> lse; // [q rows][heads], -inf for rows without keys
};

struct OracleBackward {
  std::vector<double> dq, dk, dv;
};

OracleForward oracle_forward(const OracleProblem& p);
/** Gradients for dO given the final O and LSE (as the GPU backward gets them). */
OracleBackward oracle_backward(const OracleProblem& p, const std::vector<double>& o, const std::vector<double>& lse,
                               const std::vector<double>& dout);

} // namespace cpsim::kernels::test
