// The kernels of PIT's gather and scatter ops (schedules.md 8): build the micro-tile index from one flag byte per
// candidate micro-tile (a block-wide prefix sum per query tile), copy the indexed K, V rows into dense packed tiles,
// and sum each gathered gradient row back into its home row. Tables of positions and offsets come from the exec
// plan's GatherLayout, uploaded once; which source rows move is read from the index the device built.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cpsim::backend {

/** Per item (query tile of a slot): flags [flag_off, +n_cand) -> index[entry_off + k] = first_cand + c for the k-th set flag c. */
void build_microtile_index(int32_t* index, const uint8_t* flags, const int64_t* flag_off, const int32_t* n_cand,
                           const int64_t* first_cand, const int64_t* entry_off, int64_t items, cudaStream_t s);

struct MicrotileGather {
  const char* src = nullptr;    // K plane of the source (V at + src_plane_bytes)
  int64_t src_plane_bytes = 0, src_row_bytes = 0;
  char* dst = nullptr;          // K plane of the packed buffer (V at + dst_plane_bytes)
  int64_t dst_plane_bytes = 0, dst_row_bytes = 0;
  int64_t copy_bytes = 0;       // of each row: the slot's heads (multiple of 16)
  int64_t granularity = 0;
  const int32_t* index = nullptr;        // micro-tile id of each entry (built by build_microtile_index)
  const int64_t* entry_src_base = nullptr; // byte offset of the entry's sequence position 0 in the source plane, plus the head column
  const int64_t* entry_dst_row = nullptr;  // first packed row of each entry
  const int64_t* entry_seq_end = nullptr;  // positions of the entry's sequence end there (the last micro-tile is short)
  int64_t entries = 0;
};
/** Copies the rows of every indexed micro-tile, K and V, into its packed rows. */
void gather_microtiles(const MicrotileGather& a, cudaStream_t s);

struct GradientScatter {
  const char* src = nullptr;  // packed gradients, plane 0 (plane 1 at + src_plane_bytes)
  int64_t src_plane_bytes = 0;
  char* dst = nullptr;        // home buffer, plane 0 (plane 1 at + dst_plane_bytes)
  int64_t dst_plane_bytes = 0;
  int64_t unit_elems = 0;     // bf16 elements of one home unit (a row of every KV head, or one head of a row)
  const int64_t* unit_dst = nullptr;  // byte offset of each unit in the home plane
  const int64_t* copy_begin = nullptr; // copies of unit u: copy_src[copy_begin[u] .. copy_begin[u + 1])
  const int64_t* copy_src = nullptr;   // byte offsets of the packed copies in the packed plane
  int64_t units = 0;
};
/** dst unit = sum of its packed copies (fp32 sums, bf16 out), zero when none; both planes. */
void scatter_gradients(const GradientScatter& a, cudaStream_t s);

} // namespace cpsim::backend
