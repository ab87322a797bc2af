// Runs the cpsim binary under test (CPSIM_BIN) as a user would, capturing exit code and output,
// for the end-to-end tests of tests/cli.
#pragma once

#include <catch2/catch.hpp>

#include <array>
#include <cstdio>
#include <string>
#include <sys/wait.h>

namespace cpsim::test {

struct Run {
  int code;
  std::string out; // stdout and stderr together
};

inline Run run_cpsim(const std::string& args) {
  FILE* f = popen((std::string(CPSIM_BIN) + " " + args + " 2>&1").c_str(), "r");
  REQUIRE(f != nullptr);
  std::string out;
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), f))
    out.append(buf.data(), n);
  int status = pclose(f);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

} // namespace cpsim::test
