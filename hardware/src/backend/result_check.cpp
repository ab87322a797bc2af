// The single-GPU reference of --check and the comparison with a rank's result buffers (see the header).
#include "result_check.hpp"

#include "compute_ops.hpp"
#include "gpu_check.hpp"
#include "helper_kernels.hpp"

#include <cmath>
#include <memory>
#include <string>

namespace cpsim::backend {

namespace {

/** Device memory freed on scope exit; cudaMalloc failure is a GpuError that says what did not fit. */
class DeviceBuffer {
public:
  DeviceBuffer(int64_t bytes, const char* what) {
    cudaError_t e = cudaMalloc(&p_, size_t(std::max<int64_t>(bytes, 256)));
    if (e != cudaSuccess)
      throw GpuError(std::string("--check: the single-GPU reference's ") + what + " (" +
                     std::to_string(double(bytes) / double(1 << 30)).substr(0, 6) +
                     " GiB) does not fit beside the plan's buffers; check a shorter workload");
  }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return p_; }

private:
  void* p_ = nullptr;
};

/** Whole-workload tensors, rows = every token of every sequence in order. */
struct Reference {
  std::vector<int64_t> seq_row; // first row of each sequence
  int64_t rows = 0;
  int heads = 0, kv_heads = 0, dim = 0;
  std::unique_ptr<DeviceBuffer> q, k, v, o, lse, dout, dq, dk, dv;
};

void fill(void* dst, const Workload& w, const Reference& r, int heads, int tensor_id, cudaStream_t st) {
  for (size_t q = 0; q < w.seq_lens.size(); ++q)
    fill_input_bf16(static_cast<char*>(dst) + r.seq_row[q] * heads * w.head_dim * 2, w.seq_lens[q], 0, 1, 0, heads,
                    w.head_dim, tensor_id, int(q), st);
}

void compute_reference(Reference& r, const Workload& w, bool backward, cudaStream_t st) {
  for (int64_t len : w.seq_lens) {
    r.seq_row.push_back(r.rows);
    r.rows += len;
  }
  r.heads = w.heads;
  r.kv_heads = w.kv_heads;
  r.dim = w.head_dim;
  const int64_t qb = r.rows * r.heads * r.dim * 2, kb = r.rows * r.kv_heads * r.dim * 2;
  r.q = std::make_unique<DeviceBuffer>(qb, "q");
  r.k = std::make_unique<DeviceBuffer>(kb, "k");
  r.v = std::make_unique<DeviceBuffer>(kb, "v");
  r.o = std::make_unique<DeviceBuffer>(qb, "o");
  r.lse = std::make_unique<DeviceBuffer>(r.rows * r.heads * 4, "lse");
  fill(r.q->get(), w, r, r.heads, 1, st);
  fill(r.k->get(), w, r, r.kv_heads, 2, st);
  fill(r.v->get(), w, r, r.kv_heads, 3, st);

  // the kernels cache a device plan per segment list by address: this one lives for the process
  static std::vector<SegmentRows> segments;
  static std::unique_ptr<MaskGeometry> mask;
  segments.clear();
  for (size_t q = 0; q < w.seq_lens.size(); ++q)
    segments.push_back({int(q), r.seq_row[q], r.seq_row[q], {0, w.seq_lens[q], 1}, {0, w.seq_lens[q], 1}});
  mask = std::make_unique<MaskGeometry>(w);

  AttnCall c;
  c.mask = mask.get();
  c.segments = &segments;
  c.head_dim = r.dim;
  c.heads_total = r.heads;
  c.kv_heads_total = r.kv_heads;
  c.head_begin = 0;
  c.head_end = r.heads;
  c.stream = st;
  c.q = {r.q->get(), 0, r.heads, 2};
  c.k = {r.k->get(), 0, r.kv_heads, 2};
  c.v = {r.v->get(), 0, r.kv_heads, 2};
  c.o = {r.o->get(), 0, r.heads, 2};
  c.lse = {r.lse->get(), 0, r.heads, 4};
  attention_forward(c);
  if (!backward)
    return;
  r.dout = std::make_unique<DeviceBuffer>(qb, "dO");
  r.dq = std::make_unique<DeviceBuffer>(qb * 2, "dq (fp32)");
  r.dk = std::make_unique<DeviceBuffer>(kb, "dk");
  r.dv = std::make_unique<DeviceBuffer>(kb, "dv");
  fill(r.dout->get(), w, r, r.heads, 4, st);
  fill_f32(r.dq->get(), r.rows * r.heads * r.dim, 0.f, st);
  c.out = c.o;
  c.lse_in = c.lse;
  c.dout = {r.dout->get(), 0, r.heads, 2};
  c.dq = {r.dq->get(), 0, r.heads, 4};
  c.dq_accumulate = true;
  c.dk = {r.dk->get(), 0, r.kv_heads, 2};
  c.dv = {r.dv->get(), 0, r.kv_heads, 2};
  attention_backward(c);
}

/** One result buffer (plane `plane`) against reference tensor `ref` of `ref_heads` heads x `width_per_head`. */
Json compare(const RankExecutor& ex, int buffer, int plane, const Reference& r, const DeviceBuffer& ref, int ref_elem,
             int ref_heads, int width_per_head, double* acc, cudaStream_t st) {
  const BufferPlacement& bp = ex.plan().buffers[size_t(buffer)];
  BK_CUDA_CHECK(cudaMemsetAsync(acc, 0, 3 * sizeof(double), st));
  const char* base = static_cast<const char*>(ex.ptr(buffer)) + plane * bp.plane_bytes();
  const int64_t ref_width = int64_t(ref_heads) * width_per_head;
  int64_t row = 0;
  for (const TokenSlice& t : bp.tokens) {
    const int64_t n = t.range.size();
    const char* b = static_cast<const char*>(ref.get()) +
                    ((r.seq_row[size_t(t.seq)] + t.range.begin) * ref_width + int64_t(bp.head_begin) * width_per_head) * ref_elem;
    compare_block(base + row * bp.row_bytes(), bp.elem_bytes, bp.width, b, ref_elem, t.range.stride * ref_width, n,
                  int64_t(bp.heads) * width_per_head, acc, st);
    row += n;
  }
  double h[3] = {0, 0, 0};
  BK_CUDA_CHECK(cudaMemcpyAsync(h, acc, sizeof h, cudaMemcpyDeviceToHost, st));
  BK_CUDA_CHECK(cudaStreamSynchronize(st));
  const double rel = h[1] > 0 ? std::sqrt(h[0] / h[1]) : std::sqrt(h[0]);
  const bool finite = std::isfinite(rel) && std::isfinite(h[2]);
  Json j{{"buffer", bp.name}, {"rows", row}, {"heads", bp.heads}, {"rel_l2", finite ? rel : -1.0},
         {"max_abs", finite ? h[2] : -1.0}, {"ok", finite && rel <= kCheckRelTolerance}};
  if (!finite)
    j["why"] = "NaN or infinite values where the reference is finite";
  return j;
}

} // namespace

Json check_results(const RankExecutor& ex, const Schedule& s, const Scenario& sc) {
  const RankExecPlan& rp = ex.plan();
  const bool backward = s.pass == PassKind::FWD_BWD;
  cudaStream_t st = ex.stream(0);
  BK_CUDA_CHECK(cudaDeviceSynchronize());
  Reference r;
  compute_reference(r, sc.workload, backward, st);
  DeviceBuffer acc(3 * sizeof(double), "error sums");
  auto* a = static_cast<double*>(acc.get());
  Json out = Json::object();
  const int d = r.dim;
  for (const auto& [key, b] : rp.results) {
    if (key == "o")
      out["o"] = compare(ex, b, 0, r, *r.o, 2, r.heads, d, a, st);
    else if (key == "lse")
      out["lse"] = compare(ex, b, 0, r, *r.lse, 4, r.heads, 1, a, st);
    else if (key == "dq" && backward)
      out["dq"] = compare(ex, b, 0, r, *r.dq, 4, r.heads, d, a, st);
    else if (key == "dk" && backward)
      out["dk"] = compare(ex, b, 0, r, *r.dk, 2, r.kv_heads, d, a, st);
    else if (key == "dv" && backward)
      out["dv"] = compare(ex, b, 0, r, *r.dv, 2, r.kv_heads, d, a, st);
    else if (key == "dkv" && backward) {
      out["dk"] = compare(ex, b, 0, r, *r.dk, 2, r.kv_heads, d, a, st);
      out["dv"] = compare(ex, b, 1, r, *r.dv, 2, r.kv_heads, d, a, st);
    }
  }
  // o, dq, dk, dv are what a training step hands on; lse may stay internal (Ulysses returns it in head layout,
  // and the plans free it), so only its presence is checked, not its absence
  for (const char* need : {"o", "dq", "dk", "dv"})
    if ((backward || std::string(need) == "o") && !out.contains(need))
      out[need] = {{"ok", false}, {"why", std::string("the plan leaves no '") + need + "' buffer on this rank to check"}};
  return out;
}

} // namespace cpsim::backend
