// Calibrated activation quantization layer by layer: w8a8 (static per-tensor int8 scales from an
// observer, optionally SmoothQuant) and LLM.int8() (outlier columns in 16 bits). The steps are in
// calibrate.h.
#include <algorithm>
#include <cmath>
#include <set>

#include "calibrate_internal.h"
#include "lowbit/core/error.h"
#include "lowbit/core/progress.h"
#include "lowbit/quant/calibrate.h"

namespace lowbit {

std::string_view scheme_activations(const ResolvedScheme& s) {
  return find_scheme(s.name.substr(0, s.name.find('@'))).activations;
}

std::vector<float> smoothquant_scales(const std::vector<double>& max_abs_x, const std::vector<double>& max_abs_w,
                                      double alpha) {
  if (max_abs_x.size() != max_abs_w.size()) fail("smoothquant: {} activation vs {} weight maxima", max_abs_x.size(), max_abs_w.size());
  std::vector<float> s(max_abs_x.size(), 1.0f);
  for (size_t j = 0; j < s.size(); ++j)
    if (max_abs_x[j] > 0 && max_abs_w[j] > 0)
      s[j] = float(std::clamp(std::pow(max_abs_x[j], alpha) / std::pow(max_abs_w[j], 1.0 - alpha), 1e-5, 1e5));
  return s;
}

namespace {

// One linear input of a layer as the calibration windows show it.
struct ActInput {
  std::vector<std::string> names;  // every weight that reads it
  int cols = 0;
  std::vector<float> absmax;  // max |x| per column
  AbsHistogram hist;          // of every |x| (when asked for)
  std::vector<int64_t> over;  // per column: rows with |x| >= the outlier threshold
  int64_t rows = 0;
};

// Runs layer l over (copies of) the inputs x and gathers every linear input, in the order the layer
// reads them.
std::vector<ActInput> observe_inputs(CausalLM& model, int l, const std::vector<std::vector<float>>& x,
                                     const std::vector<std::vector<int32_t>>& windows, bool histogram,
                                     double outlier_threshold) {
  std::vector<ActInput> acc;
  size_t seen = 0;
  CausalLM::LinearObserver observe = [&](const std::vector<std::string>& names, const float* rows, int n, int cols) {
    if (seen == acc.size())
      acc.push_back({names, cols, std::vector<float>(size_t(cols), 0.0f), {}, std::vector<int64_t>(size_t(cols), 0), 0});
    ActInput& a = acc[seen++];
    if (a.cols != cols) fail("calibration: input {} of layer {} changed width ({} vs {})", seen - 1, l, a.cols, cols);
    a.rows += n;
    for (int i = 0; i < n; ++i)
      for (int c = 0; c < cols; ++c) {
        const float v = std::fabs(rows[size_t(i) * size_t(cols) + size_t(c)]);
        a.absmax[size_t(c)] = std::max(a.absmax[size_t(c)], v);
        a.over[size_t(c)] += v >= outlier_threshold;
      }
    if (histogram) a.hist.add(rows, size_t(n) * size_t(cols));
    return true;
  };
  std::vector<float> tmp;
  for (size_t s = 0; s < windows.size(); ++s) {
    tmp = x[s];
    seen = 0;
    model.run_layer(l, tmp.data(), int(windows[s].size()), &observe);
  }
  return acc;
}

using SchemeFor = std::function<std::optional<ResolvedScheme>(const std::string&)>;

// SmoothQuant's scales for one input, per producer channel (tied columns take their maximum).
std::vector<float> smooth_scales(CausalLM& model, const ActInput& a, const CausalLM::InputProducer& producer,
                                 double alpha) {
  const int n = producer.tie.empty() ? a.cols : 1 + *std::max_element(producer.tie.begin(), producer.tie.end());
  std::vector<double> ax(size_t(n), 0.0), aw(size_t(n), 0.0);
  auto channel = [&](size_t c) { return producer.tie.empty() ? c : size_t(producer.tie[c]); };
  for (size_t c = 0; c < size_t(a.cols); ++c) ax[channel(c)] = std::max(ax[channel(c)], double(a.absmax[c]));
  for (const std::string& name : a.names) {
    const std::vector<float> w = model.weight(name);
    for (size_t i = 0; i < w.size(); ++i) {
      const size_t t = channel(i % size_t(a.cols));
      aw[t] = std::max(aw[t], double(std::fabs(w[i])));
    }
  }
  return smoothquant_scales(ax, aw, alpha);
}

}  // namespace

ActivationLayerwise activation_layerwise(CausalLM& model, const std::vector<std::vector<int32_t>>& windows,
                                         const SchemeFor& scheme_for, const ActivationOptions& opt, bool progress,
                                         const TensorSink& sink) {
  if (opt.smooth_alpha > 1) fail("--smooth {}: SmoothQuant's α must lie in [0, 1]", opt.smooth_alpha);
  if (!(opt.outlier_threshold > 0)) fail("--outlier-threshold {}: expected a positive |x|", opt.outlier_threshold);
  if (!(opt.outlier_fraction >= 0 && opt.outlier_fraction <= 1))
    fail("--outlier-fraction {}: expected a fraction of the calibration tokens in [0, 1]", opt.outlier_fraction);
  int64_t tokens = 0;
  std::vector<std::vector<float>> x = embed_windows(model, windows, tokens);
  const int layers = model.config().num_layers;
  ActivationLayerwise out;
  Progress bar("calibrate activations", size_t(layers), progress);
  for (int l = 0; l < layers; ++l) {
    // 1. Per-column max |x| from the float layer.
    std::vector<ActInput> acc = observe_inputs(model, l, x, windows, false, opt.outlier_threshold);
    LayerFolds folds;
    std::vector<std::vector<int32_t>> outlier_cols(acc.size());
    const size_t first_input = out.inputs.size();
    bool any_static = false;
    for (size_t k = 0; k < acc.size(); ++k) {
      ActInput& a = acc[k];
      bool all_static = true, any_quantized = false, any_outliers = false;
      for (const std::string& name : a.names)
        if (auto s = scheme_for(name)) {
          any_quantized = true;
          const std::string_view mode = scheme_activations(*s);
          all_static &= mode == "static";
          any_outliers |= mode == "outliers";
          any_static |= mode == "static";
        }
      ActivationLayerwise::Input report{a.names.front()};
      report.absmax = *std::max_element(a.absmax.begin(), a.absmax.end());
      // 2. SmoothQuant.
      const auto producer = model.input_producer(a.names.front());
      if (opt.smooth_alpha >= 0 && any_quantized && all_static && producer) {
        const std::vector<float> s = smooth_scales(model, a, *producer, opt.smooth_alpha);
        folds.fold(model, a.names, *producer, s);
        report.smooth_min = *std::min_element(s.begin(), s.end());
        report.smooth_max = *std::max_element(s.begin(), s.end());
      }
      // 3. LLM.int8()'s outlier columns.
      if (any_outliers)
        for (int c = 0; c < a.cols; ++c)
          if (a.over[size_t(c)] > 0 && double(a.over[size_t(c)]) >= opt.outlier_fraction * double(a.rows))
            outlier_cols[k].push_back(c);
      report.outliers = int(outlier_cols[k].size());
      out.inputs.push_back(report);
    }
    // 4. Every reader rounded to nearest; the model computes with what was stored.
    for (size_t k = 0; k < acc.size(); ++k)
      for (const std::string& name : acc[k].names) {
        const auto scheme = scheme_for(name);
        if (!scheme) continue;
        const std::vector<float> w = model.weight(name);
        const int64_t cols = acc[k].cols, rows = int64_t(w.size()) / cols;
        const bool outliers = scheme_activations(*scheme) == "outliers";
        if (scheme_activations(*scheme) != "" && scheme->spec.group != 0)
          fail("scheme '{}' for '{}': int8 activations need one weight scale per output row (no @G)", scheme->name, name);
        ActivationLayerwise::Tensor t;
        t.quantized = outliers ? quantize_llm_int8(w.data(), rows, cols, outlier_cols[k])
                               : find_format(scheme->format).quantize(w.data(), rows, cols, scheme->spec);
        t.quantized.format = scheme->format;
        t.quantized.spec = scheme->spec;
        std::vector<float> deq(w.size());
        find_format(scheme->format).dequantize(t.quantized, deq.data());
        model.replace_weight(name, deq);
        // In the input's terms: Q(diag(1/r) W diag(c)) diag(1/c) with rows × r.
        folds.to_input_terms(name, deq, cols);
        folds.quantized(name);
        t.dequantized = std::move(deq);
        out.quantized[name] = std::move(t);
      }
    folds.collect(model, out.folded);
    // 5. Static scales from the observer, on the inputs of the layer as quantized.
    if (any_static) {
      const std::vector<ActInput> seen = observe_inputs(model, l, x, windows, true, opt.outlier_threshold);
      for (size_t k = 0; k < seen.size() && k < acc.size(); ++k) {
        const double T = observer_threshold(seen[k].hist, opt.observer, opt.observer_opt);
        const float step = T > 0 ? float(T / opt.observer_opt.levels) : 1.0f;  // all-zero input: any step
        ActivationLayerwise::Input& report = out.inputs[first_input + k];
        report.absmax = seen[k].hist.absmax();
        for (const std::string& name : seen[k].names)
          if (auto s = scheme_for(name); s && scheme_activations(*s) == "static") {
            out.quantized.at(name).act_scale = step;
            report.threshold = T;
          }
      }
    }
    // 6. This layer's weights handed over; the quantized layer's outputs feed the next layer.
    if (sink)
      for (const ActInput& a : acc)
        for (const std::string& name : a.names)
          if (auto t = out.quantized.find(name); t != out.quantized.end()) {
            sink({name, std::move(t->second.quantized), std::move(t->second.dequantized), t->second.act_scale});
            out.quantized.erase(t);
          }
    advance_inputs(model, l, x, windows);
    model.release_layer(l);
    bar.update(size_t(l + 1), fmt::format("layer {}", l));
  }
  return out;
}

}  // namespace lowbit
