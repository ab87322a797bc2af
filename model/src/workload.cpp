// Workload <-> JSON with full validation (GQA divisibility, mask parameters, layout file presence).
#include "cpsim/model/workload.hpp"

#include "cpsim/model/seq_len_distributions.hpp"

#include <filesystem>

namespace cpsim {

int dtype_bytes(Dtype) { return 2; }

std::string to_string(Dtype d) { return d == Dtype::BF16 ? "bf16" : "fp16"; }

std::string to_string(MaskKind k) {
  switch (k) {
  case MaskKind::FULL: return "full";
  case MaskKind::CAUSAL: return "causal";
  case MaskKind::SLIDING_WINDOW: return "sliding_window";
  case MaskKind::BLOCK_SPARSE: return "block_sparse";
  case MaskKind::LAMBDA: return "lambda";
  case MaskKind::SHARED_QUESTION: return "shared_question";
  case MaskKind::CAUSAL_BLOCKWISE: return "causal_blockwise";
  }
  return "?";
}

bool is_range_mask(MaskKind k) {
  return k == MaskKind::LAMBDA || k == MaskKind::SHARED_QUESTION || k == MaskKind::CAUSAL_BLOCKWISE;
}

int64_t Workload::total_tokens() const {
  int64_t t = 0;
  for (auto s : seq_lens)
    t += s;
  return t;
}

namespace {
MaskSpec mask_from_json(JsonObjectReader r, const std::string& base_dir) {
  MaskSpec m;
  std::string kind = r.get_enum("kind", {"full", "causal", "sliding_window", "block_sparse", "lambda",
                                         "shared_question", "causal_blockwise"});
  if (kind == "lambda") { // defaults: DCP's mask_fn (n_starting = 64, l_pretrain = 4096)
    m.kind = MaskKind::LAMBDA;
    m.sink = r.get_int_or("sink", 64, 0, int64_t(1) << 40);
    m.window = r.get_int_or("window", 4096, 1, int64_t(1) << 40);
  } else if (kind == "shared_question") { // defaults: DCP's 20% question, 4 answers
    m.kind = MaskKind::SHARED_QUESTION;
    m.question_fraction = r.get_number_or("question_fraction", 0.2, 0.0, 1.0);
    if (m.question_fraction <= 0.0 || m.question_fraction >= 1.0)
      r.fail("question_fraction", "must lie strictly between 0 and 1");
    m.answers = r.get_int_or("answers", 4, 1, 1 << 20);
  } else if (kind == "causal_blockwise") { // defaults: DCP's block 256, k_local = 2
    m.kind = MaskKind::CAUSAL_BLOCKWISE;
    m.block = r.get_int_or("block", 256, 1, int64_t(1) << 30);
    m.local_blocks = r.get_int_or("local_blocks", 2, 0, int64_t(1) << 30);
  } else if (kind == "full") {
    m.kind = MaskKind::FULL;
  } else if (kind == "causal") {
    m.kind = MaskKind::CAUSAL;
  } else if (kind == "sliding_window") {
    m.kind = MaskKind::SLIDING_WINDOW;
    m.window = r.get_int("window", 1, int64_t(1) << 40);
  } else {
    m.kind = MaskKind::BLOCK_SPARSE;
    m.block = r.get_int("block", 16, 4096);
    m.causal = r.get_bool_or("causal", false);
    const bool has_file = r.has("layout_file"), has_density = r.has("density"), has_heads = r.has("head_densities");
    if (int(has_file) + int(has_density) + int(has_heads) != 1)
      r.fail(has_file ? "layout_file" : has_heads ? "head_densities" : "density",
             "block_sparse needs exactly one of 'density' (with 'seed'), 'head_densities' (with 'seed') or "
             "'layout_file'");
    if (has_file) {
      std::filesystem::path p = r.get_string("layout_file");
      if (p.is_relative() && !base_dir.empty())
        p = std::filesystem::path(base_dir) / p;
      if (!std::filesystem::exists(p))
        r.fail("layout_file", "file '" + p.string() + "' does not exist");
      m.layout_file = p.string();
    } else if (has_heads) {
      const Json& v = r.raw("head_densities");
      if (!v.is_array() || v.empty())
        r.fail("head_densities", "must be a non-empty array with one density per query head");
      for (const Json& d : v) {
        if (!d.is_number() || d.get<double>() <= 0.0 || d.get<double>() > 1.0)
          r.fail("head_densities", "holds " + json_value_text(d) + ": every density must be a number in (0, 1]");
        m.head_densities.push_back(d.get<double>());
      }
      m.seed = static_cast<uint64_t>(r.get_int("seed", 0));
    } else {
      m.density = r.get_number("density", 0.0, 1.0);
      if (m.density <= 0.0)
        r.fail("density", "must be greater than 0");
      m.seed = static_cast<uint64_t>(r.get_int("seed", 0));
    }
  }
  r.finish();
  return m;
}
} // namespace

Workload workload_from_json(const Json& j, const std::string& path, const std::string& base_dir) {
  JsonObjectReader r(j, path);
  Workload w;
  if (r.has("seq_lens") && r.raw("seq_lens").is_object()) // a dataset-shaped generator
    w.seq_lens = generate_seq_lens(r.raw("seq_lens"), r.path_of("seq_lens"));
  else
    w.seq_lens = r.get_int_array("seq_lens", 1, int64_t(1) << 34);
  w.heads = static_cast<int>(r.get_int("heads", 1, 4096));
  w.kv_heads = static_cast<int>(r.get_int("kv_heads", 1, 4096));
  if (w.heads % w.kv_heads != 0)
    r.fail("kv_heads", "must divide heads (" + std::to_string(w.heads) + ") for grouped-query attention");
  w.head_dim = static_cast<int>(r.get_int("head_dim", 1, 1024));
  w.dtype = r.get_enum("dtype", {"bf16", "fp16"}) == "bf16" ? Dtype::BF16 : Dtype::FP16;
  const Json& mj = r.raw("mask");
  if (mj.is_string()) // shorthand: "mask": "causal"
    w.mask = mask_from_json(JsonObjectReader(Json{{"kind", mj}}, "workload.mask"), base_dir);
  else
    w.mask = mask_from_json(JsonObjectReader(mj, "workload.mask"), base_dir);
  if (!w.mask.head_densities.empty() && static_cast<int>(w.mask.head_densities.size()) != w.heads)
    throw UserError("'workload.mask.head_densities' has " + std::to_string(w.mask.head_densities.size()) +
                    " entries: it needs one per query head (workload.heads = " + std::to_string(w.heads) + ")");
  r.finish();
  return w;
}

Json workload_to_json(const Workload& w) {
  Json mask{{"kind", to_string(w.mask.kind)}};
  if (w.mask.kind == MaskKind::SLIDING_WINDOW)
    mask["window"] = w.mask.window;
  if (w.mask.kind == MaskKind::LAMBDA) {
    mask["sink"] = w.mask.sink;
    mask["window"] = w.mask.window;
  }
  if (w.mask.kind == MaskKind::SHARED_QUESTION) {
    mask["question_fraction"] = w.mask.question_fraction;
    mask["answers"] = w.mask.answers;
  }
  if (w.mask.kind == MaskKind::CAUSAL_BLOCKWISE) {
    mask["block"] = w.mask.block;
    mask["local_blocks"] = w.mask.local_blocks;
  }
  if (w.mask.kind == MaskKind::BLOCK_SPARSE) {
    mask["block"] = w.mask.block;
    mask["causal"] = w.mask.causal;
    if (!w.mask.layout_file.empty()) {
      mask["layout_file"] = w.mask.layout_file;
    } else if (!w.mask.head_densities.empty()) {
      mask["head_densities"] = w.mask.head_densities;
      mask["seed"] = w.mask.seed;
    } else {
      mask["density"] = w.mask.density;
      mask["seed"] = w.mask.seed;
    }
  }
  return Json{{"seq_lens", w.seq_lens}, {"heads", w.heads},          {"kv_heads", w.kv_heads},
              {"head_dim", w.head_dim}, {"dtype", to_string(w.dtype)}, {"mask", mask}};
}

} // namespace cpsim
