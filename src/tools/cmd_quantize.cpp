// lowbit quantize MODEL -o OUT --scheme S [--method rtn|gptq|imatrix|awq]: quantization into a new checkpoint,
// then a size table per tensor class (bytes before / after, bits per weight with every scale, zero
// point and code book) and the totals.
#include <cstdlib>
#include <map>

#include "commands.h"
#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "lowbit/formats/format.h"
#include "lowbit/io/model_path.h"
#include "lowbit/quant/quantize.h"

namespace lowbit::cli {

namespace {

struct QuantizeArgs {
  Common c;
  std::string out;
  QuantizeOptions opt;
  std::vector<std::string> keep, overrides;
  bool list = false;
  std::string calib, observer, smooth = "0.9";
};

int list_schemes(bool as_json) {
  json arr = json::array();
  if (!as_json) fmt::print("{:<9} {:<10} {:>10} {:>10}  {}\n", "scheme", "format", "bpw 4096²", "bpw 384x1024", "description");
  for (const Scheme& s : scheme_registry()) {
    const FormatTraits& f = find_format(s.format);
    const double big = f.bits_per_weight(4096, 4096, s.spec), small = f.bits_per_weight(384, 1024, s.spec);
    if (as_json)
      arr.push_back({{"scheme", s.name}, {"format", s.format}, {"bits", s.spec.bits}, {"group", s.spec.group},
                     {"bits_per_weight", big}, {"description", s.description}});
    else
      fmt::print("{:<9} {:<10} {:>10.3f} {:>10.3f}  {}\n", s.name, s.format, big, small, s.description);
  }
  if (as_json) fmt::print("{}\n", json{{"schemes", arr}}.dump());
  return 0;
}

}  // namespace

void print_size_table(const QuantizeReport& r, const std::string& scheme) {
  struct Row {
    uint64_t in = 0, out = 0;
    int64_t params = 0;
  };
  std::map<std::string, Row> rows;
  for (const auto& t : r.tensors) {
    Row& row = rows[t.cls];
    row.in += t.bytes_in;
    row.out += t.bytes_out;
    row.params += t.numel();
  }
  fmt::print("\n{:<12} {:>12} {:>12} {:>12} {:>8} {:>8}\n", "class", "params", "bytes in", "bytes out", "bpw in", "bpw out");
  for (const auto& [cls, row] : rows)
    fmt::print("{:<12} {:>12} {:>12} {:>12} {:>8.3f} {:>8.3f}\n", cls, row.params, row.in, row.out,
               8.0 * double(row.in) / double(row.params), 8.0 * double(row.out) / double(row.params));
  fmt::print("{:<12} {:>12} {:>12} {:>12} {:>8.3f} {:>8.3f}\n", "total", r.params, r.bytes_in, r.bytes_out,
             8.0 * double(r.bytes_in) / double(r.params), r.bits_per_weight());
  fmt::print("\nsize: FP32 {:.2f} MB -> input {:.2f} MB -> {} {:.2f} MB ({:.2f}x smaller than FP32, {:.2f}x than the input); "
             "quantized tensors at {:.3f} bits per weight\n",
             4.0 * double(r.params) / 1e6, double(r.bytes_in) / 1e6, scheme, double(r.bytes_out) / 1e6,
             4.0 * double(r.params) / double(r.bytes_out), double(r.bytes_in) / double(r.bytes_out),
             r.quantized_bits_per_weight());
}

namespace {

int quantize(QuantizeArgs& a) {
  if (a.list) return list_schemes(a.c.json);
  if (a.out.empty()) fail("quantize: give -o OUT (the folder to write)");
  resolve_scheme(a.opt.scheme, a.opt.group_size);
  for (const auto& k : a.keep) a.opt.rules.push_back({k, "keep", "--keep"});
  for (const auto& o : a.overrides) a.opt.rules.push_back(parse_override(o));
  a.opt.threads = a.c.threads;
  apply_threads(a.c);
  std::vector<std::string> schemes{a.opt.scheme};  // w8a8 / llm-int8 anywhere: calibration text needed
  for (const auto& r : a.opt.rules)
    if (r.scheme != "keep") schemes.push_back(r.scheme);
  bool activations = false;
  for (const std::string& s : schemes) {
    const std::string_view mode = scheme_activations(resolve_scheme(s, a.opt.group_size));
    activations |= mode == "static" || mode == "outliers";
  }
  if (!a.observer.empty()) a.opt.act.observer = parse_observer(a.observer);
  if (a.smooth == "off") {
    a.opt.act.smooth_alpha = -1;
  } else {
    char* end = nullptr;
    a.opt.act.smooth_alpha = std::strtod(a.smooth.c_str(), &end);
    if (a.smooth.empty() || *end != '\0' || !(a.opt.act.smooth_alpha >= 0 && a.opt.act.smooth_alpha <= 1))
      fail("--smooth {}: expected SmoothQuant's α in [0, 1], or off", a.smooth);
  }
  if (a.opt.method != "rtn" || activations) {
    a.opt.calib.file = a.calib.empty() ? default_calib_file() : a.calib;
    std::error_code ec;
    if (std::filesystem::equivalent(a.opt.calib.file, default_ppl_file(), ec))
      fail("--calib {}: that is the evaluation text; calibrate on other text (e.g. wiki.valid.tokens)", a.calib);
  }
  auto in = resolve_model_path(a.c.model);
  QuantizeReport r = quantize_checkpoint(in, a.out, a.opt);
  if (a.c.json) {
    json tensors = json::array();
    for (const auto& t : r.tensors) {
      json j = {{"name", t.name}, {"class", t.cls}, {"scheme", t.scheme.empty() ? "keep" : t.scheme},
                {"shape", t.shape}, {"bytes_in", t.bytes_in}, {"bytes_out", t.bytes_out}};
      if (!t.scheme.empty()) j["error"] = {{"mse", t.error.mse}, {"sqnr_db", t.error.sqnr_db}, {"max_abs_err", t.error.max_abs}};
      tensors.push_back(j);
    }
    json j = {{"scheme", a.opt.scheme},
              {"method", a.opt.method},
              {"bits_per_weight", r.quantized_bits_per_weight()},
              {"model_bits_per_weight", r.bits_per_weight()},
              {"bytes_in", r.bytes_in},
              {"bytes_out", r.bytes_out},
              {"params", r.params},
              {"seconds", r.seconds},
              {"peak_rss_mb", peak_rss_mb()},
              {"output", a.out},
              {"tensors", tensors}};
    if (!r.activation_inputs.empty()) {
      json inputs = json::array();
      for (const auto& in : r.activation_inputs)
        inputs.push_back({{"first_reader", in.first_reader}, {"absmax", in.absmax}, {"threshold", in.threshold},
                          {"outlier_columns", in.outliers}, {"smooth_min", in.smooth_min}, {"smooth_max", in.smooth_max}});
      j["activation_inputs"] = inputs;
    }
    fmt::print("{}\n", j.dump());
    return 0;
  }
  double worst = 1e9;
  std::string worst_name;
  for (const auto& t : r.tensors)
    if (!t.scheme.empty() && t.error.sqnr_db < worst) {
      worst = t.error.sqnr_db;
      worst_name = t.name;
    }
  if (!r.activation_inputs.empty()) {
    // What calibration saw at each linear input: its largest |x|, the observer's clipping threshold
    // (static int8 scale = T / 127), LLM.int8()'s 16-bit columns, SmoothQuant's scale range.
    fmt::print("\n{:<42} {:>9} {:>9} {:>8} {:>17}\n", "linear input (first reader)", "max |x|", "T", "outliers",
               "smooth scales");
    int outliers = 0;
    for (const auto& in : r.activation_inputs) {
      outliers += in.outliers;
      fmt::print("{:<42} {:>9.3f} {:>9.3f} {:>8} {:>8.3g}..{:<8.3g}\n", in.first_reader, in.absmax, in.threshold,
                 in.outliers, in.smooth_min, in.smooth_max);
    }
    if (outliers > 0) fmt::print("outlier columns kept in 16 bits: {} in all\n", outliers);
  }
  print_size_table(r, a.opt.scheme);
  if (!worst_name.empty()) fmt::print("lowest SQNR: {:.2f} dB ({})\n", worst, worst_name);
  fmt::print("wrote {} in {:.2f} s (peak RSS {:.0f} MB)\n", a.out, r.seconds, peak_rss_mb());
  return 0;
}

}  // namespace

void register_quantize(CLI::App& app, std::function<int()>& run) {
  auto a = std::make_shared<QuantizeArgs>();
  auto* cmd = app.add_subcommand("quantize", "write a quantized checkpoint (round to nearest, GPTQ, imatrix or AWQ)");
  add_common(cmd, a->c);
  cmd->add_option("-o,--output", a->out, "output folder (written atomically)");
  cmd->add_option("--scheme", a->opt.scheme, "quantization scheme (see --list-schemes); SCHEME@G for groups of G inputs")->capture_default_str();
  cmd->add_option("--group-size", a->opt.group_size, "inputs per group, overriding the scheme's");
  cmd->add_option("--keep", a->keep, "leave tensors matching this glob unquantized (repeatable)");
  cmd->add_option("--override", a->overrides, "PATTERN=SCHEME: another scheme for matching tensors (repeatable)");
  cmd->add_flag("--quantize-embeddings", a->opt.quantize_embeddings, "quantize the token embeddings too");
  cmd->add_flag("--quantize-lm-head", a->opt.quantize_lm_head, "quantize lm_head too");
  cmd->add_option("--method", a->opt.method,
                  "rtn (round to nearest), hqq (half-quadratic zero-point search, no calibration), gptq (calibrated, "
                  "layer by layer), imatrix (calibrated: round to "
                  "nearest on grids that minimise the error weighted by each input's mean square activation) or awq "
                  "(calibrated: activation-aware input-channel scales, folded into the norms and layers before, then "
                  "imatrix rounding)")
      ->check(CLI::IsMember({"rtn", "hqq", "gptq", "imatrix", "awq"}))
      ->capture_default_str();
  cmd->add_option("--calib", a->calib, "calibration text for the calibrated methods (default: ../shared/datasets/wikitext-2/wiki.valid.tokens)");
  cmd->add_option("--calib-samples", a->opt.calib.samples, "calibration windows")->capture_default_str();
  cmd->add_option("--calib-ctx", a->opt.calib.ctx, "tokens per calibration window")->capture_default_str();
  cmd->add_option("--seed", a->opt.calib.seed, "seed of the calibration window positions")->capture_default_str();
  cmd->add_option("--damp", a->opt.gptq.damp, "gptq: dampening, fraction of mean diag(H)")->capture_default_str();
  cmd->add_option("--block-size", a->opt.gptq.block, "gptq: columns per lazy batch")->capture_default_str();
  cmd->add_flag("--act-order", a->opt.gptq.act_order, "gptq: columns by decreasing Hessian diagonal (static groups)");
  cmd->add_option("--clip-search", a->opt.gptq.clip_steps,
                  "gptq: steps of the search for each group's clipping range, minimising the error weighted by each "
                  "input's mean square activation (0 = off: the group's min and max)")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  cmd->add_option("--clip-weights", a->opt.clip_weights,
                  "what weighs each element's error in the clipping search: input (its input's mean square "
                  "activation) or element (that times sqrt(sigma^2 + w^2), as llama.cpp's k-quants with an imatrix); "
                  "default: element for imatrix and awq's imatrix rounding, input for gptq")
      ->check(CLI::IsMember({"input", "element"}));
  cmd->add_option("--awq-rounding", a->opt.awq_rounding,
                  "awq: how the scaled weights are rounded: imatrix (grids searched against each input's mean square) "
                  "or gptq (with the GPTQ options, e.g. --clip-search)")
      ->check(CLI::IsMember({"imatrix", "gptq"}))
      ->capture_default_str();
  cmd->add_option("--hqq-iterations", a->opt.hqq.iterations, "hqq: half-quadratic iterations per group")
      ->check(CLI::Range(0, 10000))
      ->capture_default_str();
  cmd->add_option("--awq-grid", a->opt.awq.grid, "awq: points of the α grid in [0, 1)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_option("--observer", a->observer,
                  "w8a8: how each input's static int8 range is chosen from its calibration |x| histogram: minmax, "
                  "percentile, mse (default) or entropy (KL)")
      ->check(CLI::IsMember({"minmax", "percentile", "mse", "entropy"}));
  cmd->add_option("--percentile", a->opt.act.observer_opt.percentile, "w8a8 --observer percentile: which percentile of |x|")
      ->check(CLI::Range(50.0, 100.0))
      ->capture_default_str();
  cmd->add_option("--smooth", a->smooth,
                  "w8a8: SmoothQuant migration strength α in [0, 1], or off: input channels scaled by "
                  "max|X|^α / max|W|^(1-α), folded into the norms and layers before (its paper: 0.5 for OPT, up to "
                  "0.85 for others; 0.9 measured best on llama-16m-wiki)")
      ->capture_default_str();
  cmd->add_option("--outlier-threshold", a->opt.act.outlier_threshold,
                  "llm-int8: calibration |x| from which an input column stays in 16 bits")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--outlier-fraction", a->opt.act.outlier_fraction,
                  "llm-int8: a column is an outlier when at least this fraction of the calibration tokens reach the "
                  "threshold (0: any token)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_flag("!--no-true-sequential", a->opt.gptq.true_sequential,
                "gptq: gather every Hessian of a layer from the float layer at once");
  cmd->add_flag("--force", a->opt.force, "replace an existing output folder");
  cmd->add_flag("--list-schemes", a->list, "print every scheme with its bits per weight");
  cmd->callback([a, &run] { run = [a] { return quantize(*a); }; });
}

}  // namespace lowbit::cli
