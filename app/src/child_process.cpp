// fork/exec with the child's output in a log file (see child_process.hpp).
#include "child_process.hpp"

#include "cpsim/model/errors.hpp"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <filesystem>
#include <sys/wait.h>
#include <unistd.h>

namespace cpsim {

int run_child(const std::vector<std::string>& argv, const std::string& log_path) {
  CPSIM_ASSERT(!argv.empty(), "run_child without a program");
  int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0)
    throw UserError("cannot open log file '" + log_path + "': " + std::strerror(errno));
  std::vector<char*> args;
  for (const auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fd);
    throw UserError(std::string("cannot start a child process: ") + std::strerror(errno));
  }
  if (pid == 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execvp(args[0], args.data());
    const char* msg = "exec failed\n";
    (void)!::write(2, msg, std::strlen(msg));
    ::_exit(127);
  }
  ::close(fd);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string self_exe() {
  return std::filesystem::read_symlink("/proc/self/exe").string();
}

namespace {
std::string format_now(const char* fmt) {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, fmt, &tm);
  return buf;
}
} // namespace

std::string utc_stamp() {
  return format_now("%Y-%m-%dT%H%M%SZ");
}
std::string utc_date_time() {
  return format_now("%Y-%m-%d %H:%M:%S UTC");
}

} // namespace cpsim
