// lowbit report MODEL -o DIR --schemes a,b,c [--methods rtn,awq,...]: quantizes to each scheme (with
// each method that applies to it), evaluates every result in one pass over the same windows against
// the float model (perplexity, KLD, top-1), and writes
// report.json, report.md, size_vs_bits.png and ppl_vs_bits.png (drawn with gnuplot).
#include <sys/wait.h>

#include <cstdlib>
#include <set>
#include <sstream>

#include "commands.h"
#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "lowbit/eval/perplexity.h"
#include "lowbit/io/model_path.h"
#include "lowbit/io/tokenizer.h"
#include "lowbit/quant/quantize.h"

namespace lowbit::cli {

void print_size_table(const QuantizeReport& r, const std::string& scheme);

namespace {

namespace fs = std::filesystem;

struct ReportArgs {
  Common c;
  std::string out, schemes = "int8,int4,nf4,int3,int2,binary", ppl_file;
  std::string methods = "rtn", calib;  // --methods: each scheme quantized with each that applies to it
  int calib_samples = 128, calib_ctx = 512, clip_search = 0;
  int ctx = 512, max_windows = 0;
  std::string score = "all";
};

struct Row {
  std::string name;
  double bpw = 0, model_bpw = 0;  // quantized tensors only / whole model
  double mb = 0, compression = 0;  // vs FP32
  double ppl = 0, ppl_stderr = 0, dppl_pct = 0, kld = 0, top1 = 1;
};

std::vector<std::string> split_csv(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

std::string quote_label(const std::string& s) { return "\"" + s + "\""; }

// rows[0] is fp32 and `float_rows` rows in all are unquantized (their perplexity is the dashed line).
void draw_plots(const fs::path& dir, const std::string& model_name, const std::vector<Row>& rows, size_t float_rows,
                const ReportArgs& a) {
  std::string sizes, ppl;
  for (size_t i = 0; i < rows.size(); ++i) {
    sizes += fmt::format("{} {} {:.4f}\n", i, quote_label(fmt::format("{}\\n{:.2f} bpw", rows[i].name, rows[i].model_bpw)),
                         rows[i].mb);
    if (i >= float_rows) ppl += fmt::format("{:.6f} {:.6f} {}\n", rows[i].bpw, rows[i].ppl, quote_label(rows[i].name));
  }
  write_file_atomic(dir / "sizes.dat", sizes);
  write_file_atomic(dir / "ppl.dat", ppl);
  std::string gp = "set terminal pngcairo size 1200,620 font 'DejaVu Sans,12'\nset grid ytics\n";
  gp += fmt::format(
      "set output '{}'\n"
      "set title '{}: model size per scheme (whole model: scales, code books and unquantized tensors included)' noenhanced\n"
      "set ylabel 'size (MB)'\nset xlabel 'scheme (bits per weight over the whole model)' offset 0,-0.5\n"
      "set style fill solid 0.85 border -1\nset boxwidth 0.6\nset yrange [0:*]\nset xtics nomirror font ',10'\n"
      "set bmargin 5\n"
      "plot '{}' using 1:3:xtic(2) with boxes lc rgb '#3a7dc9' notitle, \\\n"
      "     '' using 1:3:(sprintf('%.3g MB', $3)) with labels offset 0,0.8 notitle\n",
      (dir / "size_vs_bits.png").string(), model_name, (dir / "sizes.dat").string());
  gp += fmt::format(
      "set output '{}'\nset style fill empty\nset bmargin\n"
      "set title '{}: perplexity vs bits per weight ({}, ctx {}, {} scored)' noenhanced\n"
      "set xlabel 'bits per weight of the quantized tensors (scales, zero points, code books included)' offset 0,0\n"
      "set ylabel 'perplexity (log scale)'\n"
      "set logscale y\nset xrange [0:*]\nset yrange [*:*]\nset xtics 1 font ',12'\nset key top right\n"
      "plot '{}' using 1:2 with points pt 7 ps 1.6 lc rgb '#c0392b' notitle, \\\n"
      "     '' using 1:2:3 with labels offset 0,1.1 notitle, \\\n"
      "     {} with lines dt 2 lc rgb '#555555' title sprintf('float (%.2f)', {})\n",
      (dir / "ppl_vs_bits.png").string(), model_name, fs::path(a.ppl_file).filename().string(), a.ctx,
      a.score == "all" ? "all tokens" : "second half", (dir / "ppl.dat").string(), rows[0].ppl, rows[0].ppl);
  write_file_atomic(dir / "plots.gp", gp);
  std::string cmd = "gnuplot " + (dir / "plots.gp").string() + " 2>&1";
  int st = std::system(cmd.c_str());
  if (st != 0 || !fs::exists(dir / "size_vs_bits.png"))
    fail("gnuplot failed drawing {} (is gnuplot-nox installed? scripts/install-deps.sh installs it)",
         (dir / "plots.gp").string());
}

int report(ReportArgs& a) {
  apply_threads(a.c);
  if (a.out.empty()) fail("report: give -o DIR");
  if (a.ppl_file.empty()) a.ppl_file = default_ppl_file();
  auto in = resolve_model_path(a.c.model);
  const auto schemes = split_csv(a.schemes);
  if (schemes.empty()) fail("report: --schemes lists no scheme");
  const auto methods = split_csv(a.methods);
  if (methods.empty()) fail("report: --methods lists no method");
  static const std::set<std::string> kMethods = {"rtn", "hqq", "gptq", "imatrix", "awq"};
  for (const auto& m : methods)
    if (!kMethods.count(m)) fail("report: unknown method '{}' (expected rtn, hqq, gptq, imatrix or awq)", m);
  // Every (scheme, method) pair the method can quantize: hqq needs an affine format, the calibrated
  // methods a uniform one (affine or symmetric); the others are skipped and listed.
  struct Combo {
    std::string scheme, method, name;
  };
  std::vector<Combo> combos;
  std::vector<std::string> skipped;
  // w8a8 / llm-int8 calibrate their activations over round-to-nearest weights: rtn only.
  auto calibrates_activations = [](const std::string& scheme) {
    const std::string_view act = scheme_activations(resolve_scheme(scheme));
    return act == "static" || act == "outliers";
  };
  for (const auto& s : schemes) {
    const std::string format = resolve_scheme(s).format;
    for (const auto& m : methods) {
      const bool ok = calibrates_activations(s)
                          ? m == "rtn"
                          : m == "rtn" || (m == "hqq" ? format == "affine" : format == "affine" || format == "symmetric");
      if (!ok) {
        skipped.push_back(s + "/" + m);
        continue;
      }
      combos.push_back({s, m, methods.size() == 1 && m == "rtn" ? s : s + "/" + m});
    }
  }
  if (combos.empty()) fail("report: no scheme in --schemes can be quantized by --methods {}", a.methods);
  fs::create_directories(fs::path(a.out) / "checkpoints");

  auto tok = load_tokenizer(in);
  auto tokens = tok->encode(read_file(a.ppl_file));
  std::vector<QuantizeReport> qreports;
  auto checkpoint = [&](const Combo& c) { return fs::path(a.out) / "checkpoints" / (c.scheme + "-" + c.method); };
  for (const auto& c : combos) {
    QuantizeOptions opt;
    opt.scheme = c.scheme;
    opt.method = c.method;
    opt.force = true;
    opt.progress = false;
    opt.threads = a.c.threads;
    opt.gptq.clip_steps = a.clip_search;
    if ((c.method != "rtn" && c.method != "hqq") || calibrates_activations(c.scheme)) {
      opt.calib = {fs::path(a.calib.empty() ? default_calib_file() : a.calib), a.calib_samples, a.calib_ctx, 0};
      std::error_code ec;
      if (fs::equivalent(opt.calib.file, a.ppl_file, ec))
        fail("--calib {}: that is the evaluation text; calibrate on other text", opt.calib.file.string());
    }
    qreports.push_back(quantize_checkpoint(in, checkpoint(c), opt));
    fmt::print(stderr, "quantized {}: {:.2f} MB, {:.3f} bits per weight, {:.1f} s\n", c.name,
               double(qreports.back().bytes_out) / 1e6, qreports.back().quantized_bits_per_weight(),
               qreports.back().seconds);
  }
  for (const auto& s : skipped) fmt::print(stderr, "skipped {}: the method does not apply to that format\n", s);
  auto base = load_causal_lm(in);
  std::vector<std::unique_ptr<CausalLM>> qmodels;
  std::vector<const CausalLM*> models = {base.get()};
  for (const auto& c : combos) {
    qmodels.push_back(load_causal_lm(checkpoint(c)));
    models.push_back(qmodels.back().get());
  }
  PerplexityOptions popt;
  popt.ctx = a.ctx;
  popt.score = a.score == "all" ? PplScore::All : PplScore::SecondHalf;
  popt.bos_id = tok->add_bos() ? tok->bos_id() : -1;
  popt.max_windows = a.max_windows;
  auto results = perplexity_compare(models, base.get(), tokens, popt);

  const QuantizeReport& q0 = qreports[0];
  const double fp32_mb = 4.0 * double(q0.params) / 1e6;
  std::vector<Row> rows;
  rows.push_back({"fp32", 32, 32, fp32_mb, 1, results[0].ppl, results[0].ppl_stderr, 0, 0, 1});
  const double in_bpw = 8.0 * double(q0.bytes_in) / double(q0.params);
  if (in_bpw < 31.99)
    rows.push_back({fmt::format("input ({:.0f}-bit)", in_bpw), in_bpw, in_bpw, double(q0.bytes_in) / 1e6,
                    fp32_mb / (double(q0.bytes_in) / 1e6), results[0].ppl, results[0].ppl_stderr, 0, 0, 1});
  for (size_t i = 0; i < combos.size(); ++i) {
    const auto& r = results[i + 1];
    const auto& q = qreports[i];
    rows.push_back({combos[i].name, q.quantized_bits_per_weight(), q.bits_per_weight(), double(q.bytes_out) / 1e6,
                    fp32_mb / (double(q.bytes_out) / 1e6), r.ppl, r.ppl_stderr,
                    100 * (r.ppl / results[0].ppl - 1), r.kld, r.top1});
  }

  const std::string model_name = in.filename().string() == "hf" ? in.parent_path().filename().string() : in.filename().string();
  json jrows = json::array();
  for (const auto& r : rows)
    jrows.push_back({{"scheme", r.name}, {"bits_per_weight", r.bpw}, {"model_bits_per_weight", r.model_bpw},
                     {"mb", r.mb}, {"compression", r.compression}, {"ppl", r.ppl}, {"ppl_stderr", r.ppl_stderr},
                     {"dppl_pct", r.dppl_pct}, {"kld", r.kld}, {"top1", r.top1}});
  json j = {{"model", in.string()}, {"ppl_file", a.ppl_file}, {"ctx", a.ctx}, {"score", a.score},
            {"windows", results[0].windows}, {"tokens_scored", results[0].tokens_scored}, {"rows", jrows}};
  const fs::path dir(a.out);
  write_file_atomic(dir / "report.json", j.dump(2) + "\n");

  std::string md = fmt::format(
      "# lowbit report: {}\n\nPerplexity on `{}`, ctx {}, {} scoring, {} windows ({} tokens scored); KLD (nats/token) and "
      "top-1 agreement against the float model on the same windows. Quantization of the linear layers "
      "(embeddings and lm_head kept) by {}{}. bpw = bits per weight of the quantized tensors, scales, zero points "
      "and code books included; MB and compression are for the whole model, compression relative to FP32.{}\n\n"
      "| scheme | bpw | MB | compression × | ppl | Δppl % | KLD | top-1 % |\n|---|---|---|---|---|---|---|---|\n",
      model_name, fs::path(a.ppl_file).filename().string(), a.ctx, a.score, results[0].windows,
      results[0].tokens_scored, a.methods == "rtn" ? "round to nearest" : "scheme/method: " + a.methods,
      a.methods == "rtn" ? "" : fmt::format(" (calibration: {} windows of {} tokens{})", a.calib_samples, a.calib_ctx,
                                            a.clip_search ? fmt::format(", clip search {}", a.clip_search) : ""),
      skipped.empty() ? "" : fmt::format(" Not applicable, skipped: {}.", fmt::join(skipped, ", ")));
  for (const auto& r : rows)
    md += fmt::format("| {} | {:.3f} | {:.2f} | {:.2f} | {:.4f} ± {:.4f} | {:+.2f} | {:.5f} | {:.2f} |\n", r.name, r.bpw,
                      r.mb, r.compression, r.ppl, r.ppl_stderr, r.dppl_pct, r.kld, 100 * r.top1);
  md += "\n![model size per scheme](size_vs_bits.png)\n\n![perplexity vs bits per weight](ppl_vs_bits.png)\n";
  write_file_atomic(dir / "report.md", md);
  draw_plots(dir, model_name, rows, rows.size() - combos.size(), a);

  if (a.c.json) {
    fmt::print("{}\n", j.dump());
  } else {
    fmt::print("{}", md.substr(md.find("| scheme")));
    fmt::print("\nwrote {}/report.md, report.json, size_vs_bits.png, ppl_vs_bits.png\n", a.out);
  }
  return 0;
}

}  // namespace

void register_report(CLI::App& app, std::function<int()>& run) {
  auto a = std::make_shared<ReportArgs>();
  auto* cmd = app.add_subcommand("report", "quantize to several schemes, evaluate each, write a table and plots");
  add_common(cmd, a->c);
  cmd->add_option("-o,--output", a->out, "report folder")->required();
  cmd->add_option("--schemes", a->schemes, "comma-separated schemes")->capture_default_str();
  cmd->add_option("--methods", a->methods,
                  "comma-separated methods (rtn, hqq, gptq, imatrix, awq): every scheme with every method that applies "
                  "to its format, rows named scheme/method")
      ->capture_default_str();
  cmd->add_option("--calib", a->calib, "calibration text for gptq, imatrix and awq (default: wiki.valid.tokens)");
  cmd->add_option("--calib-samples", a->calib_samples, "calibration windows")->capture_default_str();
  cmd->add_option("--calib-ctx", a->calib_ctx, "tokens per calibration window")->capture_default_str();
  cmd->add_option("--clip-search", a->clip_search, "gptq: clipping search steps (0 = off)")->capture_default_str();
  cmd->add_option("--ppl", a->ppl_file, "text to score (default: ../shared/datasets/wikitext-2/wiki.test.raw)");
  cmd->add_option("--ctx", a->ctx, "window length in tokens")->capture_default_str();
  cmd->add_option("--score", a->score, "all | second-half")->check(CLI::IsMember({"all", "second-half"}))->capture_default_str();
  cmd->add_option("--max-windows", a->max_windows, "score at most this many windows (0: all)");
  cmd->callback([a, &run] { run = [a] { return report(*a); }; });
}

}  // namespace lowbit::cli
