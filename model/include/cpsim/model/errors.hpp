// Three tiers of errors (SimGrid/llm.c habit): UserError for bad input (exit 2, message names the
// key, the value and the reason), CPSIM_ASSERT for internal invariants (always on, aborts with
// file:line), and CUDA/NCCL wrappers that live beside the GPU code.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace cpsim {

/** A problem with what the user gave us: caught once in main, printed, exit code 2. */
class UserError : public std::runtime_error {
public:
  explicit UserError(const std::string& what) : std::runtime_error(what) {}
};

[[noreturn]] inline void assert_fail(const char* cond, const char* file, int line, const std::string& msg) {
  std::fprintf(stderr, "cpsim internal error: %s:%d: assertion '%s' failed: %s\n", file, line, cond, msg.c_str());
  std::abort();
}

} // namespace cpsim

#define CPSIM_ASSERT(cond, msg)                                                                              \
  do {                                                                                                       \
    if (!(cond))                                                                                             \
      ::cpsim::assert_fail(#cond, __FILE__, __LINE__, (msg));                                                \
  } while (0)
