// The kernels of PIT's gather and scatter ops (schedules.md 8): build the micro-tile index from one flag byte per
// candidate micro-tile (a block-wide prefix sum per fixed tile), copy the indexed rows (K, V; or Q, dO, O, LSE) into
// dense packed tiles, merge packed partial outputs into their rows by LSE, and sum each gathered gradient row back
// into its home row. Tables of positions and offsets come from the exec
// plan's GatherLayout, uploaded once; which source rows move is read from the index the device built.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cpsim::backend {

/** Per item (query tile of a slot): flags [flag_off, +n_cand) -> index[entry_off + k] = first_cand + c for the k-th set flag c. */
void build_microtile_index(int32_t* index, const uint8_t* flags, const int64_t* flag_off, const int32_t* n_cand,
                           const int64_t* first_cand, const int64_t* entry_off, int64_t items, cudaStream_t s);

/** One plane a gather copies: rows of a source buffer into dense packed rows. */
struct GatherPlane {
  const char* src = nullptr;  // the source plane, row 0
  int64_t src_row_bytes = 0;
  int64_t head_bytes = 0;     // one head of a source row: an entry's head column starts at entry_head x this
  char* dst = nullptr;        // the packed plane, row 0
  int64_t dst_row_bytes = 0;  // bytes copied per row (packed rows are dense)
};

struct MicrotileGather {
  static constexpr int kMaxPlanes = 4;
  GatherPlane planes[kMaxPlanes]; // K, V (key columns); Q, or Q, dO, O, LSE (query rows)
  int n_planes = 0;
  int64_t granularity = 0;
  const int32_t* index = nullptr;          // micro-tile id of each entry (built by build_microtile_index)
  const int64_t* entry_src_row0 = nullptr; // source row of position 0 of the entry's sequence (rows are consecutive)
  const int32_t* entry_head = nullptr;     // head column of the entry in the source rows (per-head slots), else 0
  const int64_t* entry_dst_row = nullptr;  // first packed row of each entry
  const int64_t* entry_lo = nullptr;       // the micro-tile is clipped to positions [lo, hi): its rectangle's span
  const int64_t* entry_hi = nullptr;
  int64_t entries = 0;
};
/** Copies the rows of every indexed micro-tile, every plane, into its packed rows (4-byte aligned rows). */
void gather_microtiles(const MicrotileGather& a, cudaStream_t s);

/** PIT's scatter-merge along query rows: each output unit (a row of every head, or one head of a row) becomes the LSE
 *  merge of its packed partials (O bf16, LSE fp32); a unit without partials gets O = 0, LSE = -inf. */
struct PackedPartialMerge {
  const char* o_part = nullptr;    // packed partial rows of unit_heads x head_dim bf16
  const float* lse_part = nullptr; // packed partial LSE, unit_heads per row
  char* o = nullptr;               // the output (bf16)
  float* lse = nullptr;            // the output LSE (fp32)
  int head_dim = 0, unit_heads = 0;
  const int64_t* unit_o = nullptr;     // element offset of each unit in o
  const int64_t* unit_lse = nullptr;   // element offset of each unit in lse
  const int64_t* copy_begin = nullptr; // partials of unit u: copy_src[copy_begin[u] .. copy_begin[u + 1])
  const int64_t* copy_src = nullptr;   // packed row of each partial
  int64_t units = 0;
};
void merge_packed_partials(const PackedPartialMerge& a, cudaStream_t s);

struct GradientScatter {
  int planes = 2;             // dK and dV (key columns), or dQ (query rows)
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
/** dst unit = sum of its packed copies (fp32 sums, bf16 out), zero when none; every plane. */
void scatter_gradients(const GradientScatter& a, cudaStream_t s);

} // namespace cpsim::backend
