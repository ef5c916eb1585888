#include "lowbit/quant/quantize.h"
#include "lowbit/io/json.h"

#include <chrono>
#include <cmath>
#include <mutex>
#include <nlohmann/json.hpp>

#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "lowbit/core/progress.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/io/tokenizer.h"
#include "lowbit/models/model.h"
#include "lowbit/quant/hqq.h"

namespace lowbit {

namespace fs = std::filesystem;
using nlohmann::json;

int64_t TensorReport::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

double QuantizeReport::quantized_bits_per_weight() const {
  uint64_t bytes = 0;
  int64_t n = 0;
  for (const auto& t : tensors)
    if (!t.scheme.empty()) {
      bytes += t.bytes_out;
      n += t.numel();
    }
  return n ? 8.0 * double(bytes) / double(n) : 0;
}

namespace {

// Files of a checkpoint folder that are copied unchanged.
constexpr const char* kCopiedFiles[] = {"tokenizer.json",   "tokenizer.model", "tokenizer_config.json",
                                        "special_tokens_map.json", "vocab.json", "merges.txt",
                                        "vocab.txt",        "generation_config.json", "added_tokens.json"};

}  // namespace

QuantizeReport quantize_checkpoint(const fs::path& in, const fs::path& out, const QuantizeOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  if (fs::exists(out) && !opt.force) fail("{}: already exists (use --force to replace it)", out.string());
  if (fs::exists(out) && fs::equivalent(in, out)) fail("{}: the output may not be the input folder", out.string());
  const fs::path config_path = in / "config.json";
  json config;
  try {
    config = parse_json(read_file(config_path, 16u << 20), config_path.string());
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", config_path.string(), e.what());
  }
  if (!config.is_object()) fail("{}: expected a JSON object", config_path.string());
  WeightStore weights(in);
  if (weights.quantized()) fail("{}: already quantized; quantize the float checkpoint instead", in.string());
  Recipe recipe(opt.scheme, opt.quantize_embeddings, opt.quantize_lm_head, opt.rules);
  std::string architecture;
  if (auto a = config.find("architectures"); a != config.end() && a->is_array() && !a->empty() && (*a)[0].is_string())
    architecture = (*a)[0].get<std::string>();

  QuantizeReport report;
  const auto tensors = weights.tensors();
  report.tensors.resize(tensors.size());
  std::vector<QuantizedTensor> quantized(tensors.size());
  // Plan first (cheap), so errors in the recipe surface before any work.
  for (size_t i = 0; i < tensors.size(); ++i) {
    TensorReport& r = report.tensors[i];
    r.name = tensors[i].name;
    r.cls = tensor_class(r.name);
    r.shape = tensors[i].shape;
    r.dtype_in = tensors[i].dtype;
    r.bytes_in = tensors[i].bytes;
    auto scheme = recipe.scheme_for(r.name, r.shape.size());
    if (scheme) r.scheme = *scheme;
  }

  // The output file. Calibrated weights are written as their layer finishes, to a scratch file
  // beside OUT (SafetensorsWriter::spill_to), so memory does not grow with the output.
  SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  writer.set_metadata("lowbit.format_version", "1");
  std::map<std::string, size_t> index_of;
  for (size_t i = 0; i < tensors.size(); ++i) index_of[tensors[i].name] = i;
  std::vector<char> written(tensors.size(), 0);  // calibrated: already in the writer

  // The input weight as the quantizers see it: float32 [out, in] (GPT-2's [in, out] Conv1D transposed).
  auto load_weight = [&](TensorReport& r, int64_t& rows, int64_t& cols) {
    std::vector<float> w = weights.load_f32(r.name);  // refuses NaN / Inf, naming the element
    weights.store().release(r.name);  // copied: its pages need not stay in memory (large models)
    rows = r.shape[0];
    cols = r.shape[1];
    if (stored_in_out(architecture, r.name)) {  // quantize [out, in] so groups run along the inputs
      std::vector<float> t(w.size());
      for (int64_t a = 0; a < rows; ++a)
        for (int64_t b = 0; b < cols; ++b) t[size_t(b * rows + a)] = w[size_t(a * cols + b)];
      w.swap(t);
      std::swap(rows, cols);
      r.transposed = true;
    }
    return w;
  };
  // Tensor i's metadata and parts into the writer.
  auto emit = [&](size_t i, const QuantizedTensor& q, bool calibrated, float act_scale) {
    const TensorReport& r = report.tensors[i];
    json meta = {{"format", q.format},
                 {"method", calibrated || opt.method == "hqq" ? opt.method : "rtn"},
                 {"scheme", r.scheme},
                 {"bits", q.spec.bits},
                 {"group", q.spec.group},
                 {"double_quant", q.spec.double_quant},
                 {"iterations", q.spec.iterations},
                 {"shape", r.shape},
                 {"transposed", r.transposed},
                 {"dtype", std::string(dtype_name(r.dtype_in))},
                 {"mse", r.error.mse},
                 {"sqnr_db", std::isfinite(r.error.sqnr_db) ? r.error.sqnr_db : 999.0},
                 {"max_abs_err", r.error.max_abs}};
    if (act_scale > 0) {
      meta["act_scale"] = act_scale;
      meta["observer"] = observer_name(opt.act.observer);
      if (opt.act.smooth_alpha >= 0) meta["smooth_alpha"] = opt.act.smooth_alpha;
    }
    if (q.format == "llm-int8") {
      meta["outlier_threshold"] = opt.act.outlier_threshold;
      meta["outlier_fraction"] = opt.act.outlier_fraction;
    }
    writer.set_metadata(std::string(kQuantMetaPrefix) + r.name, meta.dump());
    for (const auto& p : q.parts) writer.add(r.name + "." + p.suffix, p.dtype, p.shape, p.bytes.data(), p.bytes.size());
  };
  // A weight from a calibrated pipeline: its error against the input measured, then written out.
  TensorSink take = [&](CalibratedTensor&& t) {
    auto it = index_of.find(t.name);
    if (it == index_of.end()) fail("calibration quantized '{}', which {} does not have", t.name, in.string());
    const size_t i = it->second;
    TensorReport& r = report.tensors[i];
    if (r.scheme.empty() || written[i]) fail("calibration: '{}' quantized twice or against the recipe", t.name);
    const ResolvedScheme s = resolve_scheme(r.scheme, opt.group_size);
    int64_t rows = 0, cols = 0;
    const std::vector<float> w = load_weight(r, rows, cols);
    // The pipeline's weights are [out, in] (the model's layout), as `w` is here.
    if (t.quantized.rows != rows || t.quantized.cols != cols)
      fail("'{}': calibrated weight is {} x {}, expected {} x {}", t.name, t.quantized.rows, t.quantized.cols, rows, cols);
    t.quantized.format = std::string(s.format);
    t.quantized.spec = s.spec;
    std::vector<float> back = std::move(t.effective);  // stored W·diag(s): compare the effective weight
    if (back.empty()) {
      back.assign(w.size(), NAN);
      find_format(s.format).dequantize(t.quantized, back.data());
    }
    if (back.size() != w.size()) fail("'{}': calibrated weight has {} values, expected {}", t.name, back.size(), w.size());
    r.error = measure_quant_error(w.data(), back.data(), w.size());
    r.bytes_out = t.quantized.bytes();
    emit(i, t.quantized, /*calibrated=*/true, t.act_scale);
    written[i] = 1;
  };

  // Calibrated methods first: they quantize the linear layers of the float model layer by layer.
  std::map<std::string, std::vector<float>> folded;  // AWQ, SmoothQuant: float tensors written instead of the input's
  bool calibrate_activations = false;
  for (const TensorReport& r : report.tensors)
    if (!r.scheme.empty()) {
      const std::string_view mode = scheme_activations(resolve_scheme(r.scheme, opt.group_size));
      calibrate_activations |= mode == "static" || mode == "outliers";
    }
  // The calibrated paths: the recipe's scheme for each linear weight, the calibration windows and the
  // float model (layer by layer).
  auto scheme_for = [&](const std::string& name) -> std::optional<ResolvedScheme> {
    auto s = recipe.scheme_for(name, 2);
    if (!s) return std::nullopt;
    return resolve_scheme(*s, opt.group_size);
  };
  auto calibration_windows_for = [&](const std::string& what) {
    if (opt.calib.file.empty()) fail("{} needs calibration text (--calib FILE)", what);
    return calibration_windows(*load_tokenizer(in), opt.calib);
  };
  // The scratch file goes where the output will (same file system, created as make_temp_dir would).
  auto spill_beside_out = [&] {
    const fs::path parent = out.parent_path().empty() ? fs::path(".") : out.parent_path();
    fs::create_directories(parent);
    writer.spill_to(parent);
  };
  if (calibrate_activations) {
    if (opt.method != "rtn")
      fail("--method {}: w8a8 and llm-int8 calibrate activation scales over round-to-nearest int8 weights; use "
           "--method rtn (the default) with them",
           opt.method);
    auto windows = calibration_windows_for("--scheme " + opt.scheme + " (calibrating the activations)");
    auto model = load_causal_lm_layerwise(in);
    spill_beside_out();
    ActivationLayerwise a = activation_layerwise(*model, windows, scheme_for, opt.act, opt.progress, take);
    report.activation_inputs = a.inputs;
    folded = std::move(a.folded);
    for (const auto& [name, w] : folded)
      if (!weights.has(name)) fail("smoothquant: folded into '{}', which {} does not have", name, in.string());
  } else if (opt.method == "gptq" || opt.method == "imatrix" || opt.method == "awq") {
    auto windows = calibration_windows_for("--method " + opt.method);
    auto model = load_causal_lm_layerwise(in);
    auto uniform_scheme_for = [&](const std::string& name) -> std::optional<ResolvedScheme> {
      auto rs = scheme_for(name);
      if (!rs) return std::nullopt;
      if (rs->format != "affine" && rs->format != "symmetric")
        fail("--method {}: scheme '{}' for '{}' is not uniform (affine or symmetric); use --method rtn", opt.method,
             rs->name, name);
      return rs;
    };
    GptqOptions g = opt.gptq;
    if (opt.method == "awq" && opt.awq_rounding != "imatrix" && opt.awq_rounding != "gptq")
      fail("--awq-rounding {}: expected imatrix or gptq", opt.awq_rounding);
    const bool gptq_rounding = opt.method == "gptq" || (opt.method == "awq" && opt.awq_rounding == "gptq");
    if (!gptq_rounding) {  // importance-weighted RTN: diag(H) only, grids searched (AWQ's default rounding too)
      g.diagonal_only = true;
      g.act_order = false;
      if (g.clip_steps == 0) g.clip_steps = 20;
    }
    if (!opt.clip_weights.empty() && opt.clip_weights != "input" && opt.clip_weights != "element")
      fail("--clip-weights {}: expected input or element", opt.clip_weights);
    g.element_weights = opt.clip_weights.empty() ? !gptq_rounding : opt.clip_weights == "element";
    spill_beside_out();
    if (opt.method == "awq") {
      AwqLayerwise a = awq_layerwise(*model, windows, uniform_scheme_for, g, opt.awq, opt.progress, take);
      folded = std::move(a.folded);
      for (const auto& [name, w] : folded)
        if (!weights.has(name)) fail("awq: folded into '{}', which {} does not have", name, in.string());
    } else {
      gptq_layerwise(*model, windows, uniform_scheme_for, g, opt.progress, take);
    }
  } else if (opt.method != "rtn" && opt.method != "hqq") {
    fail("unknown method '{}' (expected rtn, hqq, gptq, imatrix or awq)", opt.method);
  }

  Progress progress("quantize", tensors.size(), opt.progress);
  std::mutex mu;
  size_t done = 0;
  std::exception_ptr first_error;
  ThreadPool pool(opt.threads);
  // One tensor per task; big tensors first would balance better, but order keeps output deterministic anyway.
  pool.parallel_for(tensors.size(), [&](size_t b, size_t e, int) {
    for (size_t i = b; i < e; ++i) {
      TensorReport& r = report.tensors[i];
      try {
        if (!r.scheme.empty() && !written[i]) {
          const ResolvedScheme s = resolve_scheme(r.scheme, opt.group_size);
          const QuantSpec& spec = s.spec;
          int64_t rows = 0, cols = 0;
          std::vector<float> w = load_weight(r, rows, cols);
          const FormatTraits& f = find_format(s.format);
          const std::string_view mode = scheme_activations(s);
          if (mode == "static" || mode == "outliers")
            fail("'{}': scheme '{}' quantizes the activations this weight reads, which calibration observes only for "
                 "the linear layers inside the decoder layers; keep it (--keep) or give it a weight-only scheme "
                 "(--override '{}=int8')",
                 r.name, r.scheme, r.name);
          if (opt.method == "hqq") {
            if (s.format != "affine")
              fail("--method hqq: scheme '{}' for '{}' is {}, not affine (HQQ searches zero points)", r.scheme, r.name,
                   s.format);
            quantized[i] = hqq_quantize(w.data(), rows, cols, spec, opt.hqq).quantized;
          } else {
            quantized[i] = f.quantize(w.data(), rows, cols, spec);
          }
          quantized[i].format = std::string(s.format);
          quantized[i].spec = spec;
          std::vector<float> back(w.size(), NAN);
          f.dequantize(quantized[i], back.data());
          r.error = measure_quant_error(w.data(), back.data(), w.size());
          r.bytes_out = quantized[i].bytes();
        } else if (r.scheme.empty()) {
          r.bytes_out = r.bytes_in;
        }
      } catch (...) {
        std::lock_guard lock(mu);
        if (!first_error) first_error = std::current_exception();
      }
      std::lock_guard lock(mu);
      progress.update(++done, r.name);
    }
  });
  if (first_error) std::rethrow_exception(first_error);

  // The rest of the output, in the input's order.
  for (size_t i = 0; i < tensors.size(); ++i) {
    TensorReport& r = report.tensors[i];
    report.params += r.numel();
    report.bytes_in += r.bytes_in;
    report.bytes_out += r.bytes_out;
    if (r.scheme.empty()) {
      TensorView v = weights.store().get(r.name);
      if (auto f = folded.find(r.name); f != folded.end()) {  // changed by AWQ's / SmoothQuant's folds: float32
        if (f->second.size() != size_t(r.numel())) fail("folds: '{}' changed size", r.name);
        if (stored_in_out(architecture, r.name) && r.shape.size() == 2) {  // the model's [out, in] back to [in, out]
          const int64_t in_rows = r.shape[0], out_cols = r.shape[1];
          std::vector<float> t(f->second.size());
          for (int64_t a = 0; a < out_cols; ++a)
            for (int64_t b = 0; b < in_rows; ++b) t[size_t(b * out_cols + a)] = f->second[size_t(a * in_rows + b)];
          f->second.swap(t);
        }
        writer.add(r.name, DType::F32, v.info->shape, f->second.data(), f->second.size() * sizeof(float));
        report.bytes_out += f->second.size() * sizeof(float) - r.bytes_out;
        r.bytes_out = f->second.size() * sizeof(float);
        continue;
      }
      writer.add_borrowed(r.name, v.info->dtype, v.info->shape, v.data, v.bytes());  // from the map at write()
      continue;
    }
    report.params_quantized += r.numel();
    if (written[i]) continue;
    emit(i, quantized[i], /*calibrated=*/false, 0.0f);
    quantized[i] = {};  // the writer holds its copy
  }

  remove_stale_temps(out);
  const fs::path tmp = make_temp_dir(out);
  try {
    writer.write(tmp / "model.safetensors");
    const ResolvedScheme s = resolve_scheme(opt.scheme, opt.group_size);
    const QuantSpec& spec = s.spec;
    json rules = json::array();
    for (const auto& r : recipe.rules()) rules.push_back({{"pattern", r.pattern}, {"scheme", r.scheme}});
    config["quantization_config"] = {{"quant_method", "lowbit"},
                                     {"scheme", opt.scheme},
                                     {"format", s.format},
                                     {"bits", spec.bits},
                                     {"group_size", spec.group},
                                     {"method", opt.method},
                                     {"bits_per_weight", report.quantized_bits_per_weight()},
                                     {"rules", rules}};
    write_file_atomic(tmp / "config.json", config.dump(2) + "\n");
    for (const char* f : kCopiedFiles)
      if (fs::exists(in / f)) write_file_atomic(tmp / f, read_file(in / f));
    publish_dir(tmp, out);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

}  // namespace lowbit
