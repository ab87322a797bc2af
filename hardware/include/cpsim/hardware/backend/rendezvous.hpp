// How the rank processes of one run find each other without MPI: a directory (local, or shared by
// the nodes of an mpirun) where rank 0 publishes the NCCL unique id and every rank leaves its report.
// Files appear whole (write to a temporary name, then rename), so a reader never sees half of one.
#pragma once

#include <string>

namespace cpsim::backend {

void publish_file(const std::string& dir, const std::string& name, const std::string& bytes);
/** Waits until `name` exists in `dir`; throws std::runtime_error naming what was awaited after timeout_s. */
std::string wait_for_file(const std::string& dir, const std::string& name, double timeout_s, const std::string& what);
/** A fresh private directory under $TMPDIR (or /tmp). */
std::string make_run_dir();

} // namespace cpsim::backend
