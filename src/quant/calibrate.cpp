#include "lowbit/quant/calibrate.h"

#include <cblas.h>

#include <random>

#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "lowbit/core/progress.h"

namespace lowbit {

std::vector<std::vector<int32_t>> calibration_windows(const Tokenizer& tok, const CalibrationOptions& opt) {
  if (opt.samples < 1 || opt.ctx < 2) fail("calibration: need at least 1 window of 2 tokens");
  const std::vector<int32_t> tokens = tok.encode(read_file(opt.file));
  const bool bos = tok.add_bos() && tok.bos_id() >= 0;
  const size_t span = size_t(opt.ctx - (bos ? 1 : 0));
  if (tokens.size() < span)
    fail("{}: {} tokens, fewer than one calibration window of {}", opt.file.string(), tokens.size(), span);
  std::mt19937_64 rng(opt.seed);
  std::uniform_int_distribution<size_t> start(0, tokens.size() - span);
  std::vector<std::vector<int32_t>> windows;
  for (int s = 0; s < opt.samples; ++s) {
    std::vector<int32_t> w;
    if (bos) w.push_back(tok.bos_id());
    const size_t b = start(rng);
    w.insert(w.end(), tokens.begin() + std::ptrdiff_t(b), tokens.begin() + std::ptrdiff_t(b + span));
    windows.push_back(std::move(w));
  }
  return windows;
}

std::map<std::string, GptqResult> gptq_layerwise(
    CausalLM& model, const std::vector<std::vector<int32_t>>& windows,
    const std::function<std::optional<ResolvedScheme>(const std::string&)>& scheme_for, const GptqOptions& opt,
    bool progress) {
  if (!model.supports_layerwise())
    fail("{}: calibrated quantization is not available for this architecture yet", model.config().architecture);
  const int hidden = model.config().hidden_size, layers = model.config().num_layers;
  std::vector<std::vector<float>> x(windows.size());
  int64_t tokens = 0;
  for (size_t s = 0; s < windows.size(); ++s) {
    x[s].resize(windows[s].size() * size_t(hidden));
    model.embed(windows[s], x[s].data());
    tokens += int64_t(windows[s].size());
  }
  std::map<std::string, GptqResult> out;
  Progress bar("gptq", size_t(layers), progress);
  for (int l = 0; l < layers; ++l) {
    // The layer's linear inputs come in a fixed order (q/k/v, o, gate/up, down for LLaMA). With
    // true-sequential, stage k gathers the Hessian of the k-th input only, after the weights read in
    // the stages before it were quantized, so each sees the inputs the quantized model produces.
    // Otherwise one stage gathers them all from the float layer.
    struct Acc {
      std::vector<std::string> names;
      int cols = 0;
      std::vector<double> h;
    };
    std::vector<float> tmp, part;
    for (int stage = 0;; ++stage) {
      std::map<int, Acc> acc;  // by position in the layer's order
      int seen = 0, total = 0;
      CausalLM::LinearObserver observe = [&](const std::vector<std::string>& names, const float* rows, int n, int cols) {
        const int k = seen++;
        total = std::max(total, seen);
        if (opt.true_sequential && k != stage) return;
        Acc& a = acc[k];
        if (a.h.empty()) {
          a.names = names;
          a.cols = cols;
          a.h.assign(size_t(cols) * size_t(cols), 0.0);
        }
        // H += 2 Xᵀ X over this window's rows (upper triangle), accumulated in double.
        part.assign(size_t(cols) * size_t(cols), 0.0f);
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, cols, n, 2.0f, rows, cols, 0.0f, part.data(), cols);
        for (size_t i = 0; i < part.size(); ++i) a.h[i] += double(part[i]);
      };
      for (size_t s = 0; s < windows.size(); ++s) {
        tmp = x[s];
        seen = 0;
        model.run_layer(l, tmp.data(), int(windows[s].size()), &observe);
      }
      // GPTQ on each weight the recipe quantizes; the model gets the dequantized weights.
      for (auto& [k, a] : acc) {
        const int64_t c = a.cols;
        for (int64_t i = 0; i < c; ++i)
          for (int64_t j = 0; j < i; ++j) a.h[size_t(i * c + j)] = a.h[size_t(j * c + i)];
        for (double& v : a.h) v /= double(tokens);
        for (const std::string& name : a.names) {
          auto scheme = scheme_for(name);
          if (!scheme) continue;
          std::vector<float> w = model.weight(name);
          const int64_t rows = int64_t(w.size()) / c;
          GptqResult r = gptq_quantize(w.data(), rows, c, a.h, scheme->format, scheme->spec, opt);
          r.quantized.format = scheme->format;
          model.replace_weight(name, r.dequantized);
          out.emplace(name, std::move(r));
        }
      }
      if (!opt.true_sequential || stage + 1 >= total) break;
    }
    // 3. The quantized layer's outputs are the next layer's inputs.
    for (size_t s = 0; s < windows.size(); ++s) model.run_layer(l, x[s].data(), int(windows[s].size()), nullptr);
    bar.update(size_t(l + 1), fmt::format("layer {}", l));
  }
  return out;
}

}  // namespace lowbit
