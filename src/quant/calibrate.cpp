#include "lowbit/quant/calibrate.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "lowbit/core/progress.h"
#include "calibrate_internal.h"

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

// Embeds the windows: the first layer's inputs, [windows][tokens × hidden].
std::vector<std::vector<float>> embed_windows(CausalLM& model, const std::vector<std::vector<int32_t>>& windows,
                                              int64_t& tokens) {
  if (!model.supports_layerwise())
    fail("{}: calibrated quantization is not available for this architecture yet", model.config().architecture);
  const int hidden = model.config().hidden_size;
  std::vector<std::vector<float>> x(windows.size());
  tokens = 0;
  for (size_t s = 0; s < windows.size(); ++s) {
    x[s].resize(windows[s].size() * size_t(hidden));
    model.embed(windows[s], x[s].data());
    tokens += int64_t(windows[s].size());
  }
  return x;
}

// The layer's outputs become the next layer's inputs.
void advance_inputs(CausalLM& model, int l, std::vector<std::vector<float>>& x,
                    const std::vector<std::vector<int32_t>>& windows) {
  for (size_t s = 0; s < windows.size(); ++s) model.run_layer(l, x[s].data(), int(windows[s].size()), nullptr);
}

namespace {

// The statistics of one input that linear layers read: every weight that reads it, its width, the
// Hessian H = 2/N Σ x xᵀ (full and symmetric, or its diagonal alone: cols values) and the mean |x|
// of each column.
struct InputStats {
  std::vector<std::string> names;
  int cols = 0;
  std::vector<double> h, mean_abs;
};

// Runs layer l over (copies of) the inputs x, gathering the statistics of the layer's `stage`-th
// linear input (in the order the layer reads them: q/k/v, o, gate/up, down for LLaMA), or of all of
// them for stage < 0 (a stage's pass stops at its input). `inputs` is set to how many linear inputs
// the layer has. diagonal: only diag(H) (what the diagonal-only roundings read: O(N·cols) instead of
// O(N·cols²) work and cols² doubles of memory, 0.97 GB for a 7B down_proj).
std::map<int, InputStats> gather_inputs(CausalLM& model, int l, const std::vector<std::vector<float>>& x,
                                        const std::vector<std::vector<int32_t>>& windows, int64_t tokens, int stage,
                                        int& inputs, bool diagonal = false) {
  std::map<int, InputStats> acc;  // by position in the layer's order
  std::vector<float> tmp, part;
  int seen = 0;
  // How many linear inputs the layer has: one token through it, counted (the passes below stop at
  // their stage's input).
  inputs = 0;
  {
    const size_t hidden = size_t(model.config().hidden_size);
    std::vector<float> one(x.front().begin(), x.front().begin() + std::ptrdiff_t(hidden));
    CausalLM::LinearObserver count = [&](const std::vector<std::string>&, const float*, int, int) {
      ++inputs;
      return true;
    };
    model.run_layer(l, one.data(), 1, &count);
  }
  CausalLM::LinearObserver observe = [&](const std::vector<std::string>& names, const float* rows, int n, int cols) {
    const int k = seen++;
    if (stage >= 0 && k != stage) return true;
    InputStats& a = acc[k];
    if (a.h.empty()) {
      a.names = names;
      a.cols = cols;
      a.h.assign(diagonal ? size_t(cols) : size_t(cols) * size_t(cols), 0.0);
      a.mean_abs.assign(size_t(cols), 0.0);
    }
    if (diagonal) {
      for (int i = 0; i < n; ++i)
        for (int c = 0; c < cols; ++c) {
          const double v = rows[size_t(i) * size_t(cols) + size_t(c)];
          a.h[size_t(c)] += 2.0 * v * v;
        }
    } else {
      // H += 2 Xᵀ X over this window's rows, accumulated in double. ssyrk with beta 0 writes the upper
      // triangle without reading `part`, so neither it nor the lower triangle is cleared or added
      // (clearing cols² floats per window was 20 % of an imatrix run's samples).
      part.resize(size_t(cols) * size_t(cols));
      cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, cols, n, 2.0f, rows, cols, 0.0f, part.data(), cols);
      for (size_t i = 0; i < size_t(cols); ++i)
        for (size_t j = i; j < size_t(cols); ++j) a.h[i * size_t(cols) + j] += double(part[i * size_t(cols) + j]);
    }
    for (int i = 0; i < n; ++i)
      for (int c = 0; c < cols; ++c) a.mean_abs[size_t(c)] += std::fabs(double(rows[size_t(i) * size_t(cols) + size_t(c)]));
    return stage < 0;  // one stage: the rest of the layer is not needed
  };
  for (size_t s = 0; s < windows.size(); ++s) {
    tmp = x[s];
    seen = 0;
    model.run_layer(l, tmp.data(), int(windows[s].size()), &observe);
  }
  for (auto& [k, a] : acc) {
    const int64_t c = a.cols;
    if (!diagonal)
      for (int64_t i = 0; i < c; ++i)
        for (int64_t j = 0; j < i; ++j) a.h[size_t(i * c + j)] = a.h[size_t(j * c + i)];
    for (double& v : a.h) v /= double(tokens);
    for (double& v : a.mean_abs) v /= double(tokens);
  }
  return acc;
}

using SchemeFor = std::function<std::optional<ResolvedScheme>(const std::string&)>;

// Every weight the recipe quantizes among the readers of `acc`, rounded by gptq_quantize against its
// input's Hessian; the model gets the dequantized weights; done(name, result, cols) takes each.
void round_readers(CausalLM& model, const std::map<int, InputStats>& acc, const SchemeFor& scheme_for,
                   const GptqOptions& opt, const std::function<void(const std::string&, GptqResult&&, int)>& done) {
  for (const auto& [k, a] : acc)
    for (const std::string& name : a.names) {
      auto scheme = scheme_for(name);
      if (!scheme) continue;
      std::vector<float> w = model.weight(name);
      const int64_t rows = int64_t(w.size()) / a.cols;
      GptqResult r = gptq_quantize(w.data(), rows, a.cols, a.h, scheme->format, scheme->spec, opt);
      r.quantized.format = scheme->format;
      model.replace_weight(name, r.dequantized);
      done(name, std::move(r), a.cols);
    }
}

}  // namespace

std::map<std::string, GptqResult> gptq_layerwise(
    CausalLM& model, const std::vector<std::vector<int32_t>>& windows,
    const std::function<std::optional<ResolvedScheme>(const std::string&)>& scheme_for, const GptqOptions& opt,
    bool progress, const TensorSink& sink) {
  int64_t tokens = 0;
  std::vector<std::vector<float>> x = embed_windows(model, windows, tokens);
  const int layers = model.config().num_layers;
  std::map<std::string, GptqResult> out;
  Progress bar("gptq", size_t(layers), progress);
  for (int l = 0; l < layers; ++l) {
    // With true-sequential, stage k gathers the Hessian of the k-th input only, after the weights
    // read in the stages before it were quantized, so each sees the inputs the quantized model
    // produces. Otherwise one stage gathers them all from the float layer.
    for (int stage = 0;; ++stage) {
      int inputs = 0;
      std::map<int, InputStats> acc =
          gather_inputs(model, l, x, windows, tokens, opt.true_sequential ? stage : -1, inputs, opt.diagonal_only);
      round_readers(model, acc, scheme_for, opt, [&](const std::string& name, GptqResult&& r, int) {
        std::vector<float>().swap(r.dequantized);  // in the model now (and `= {}` would keep the capacity)
        if (sink)
          sink({name, std::move(r.quantized), {}, 0.0f});
        else
          out.emplace(name, std::move(r));
      });
      if (!opt.true_sequential || stage + 1 >= inputs) break;
    }
    advance_inputs(model, l, x, windows);
    model.release_layer(l);
    bar.update(size_t(l + 1), fmt::format("layer {}", l));
  }
  return out;
}

namespace {

// Divides the producer's channels (and its bias) by s. Returns the scale of each row of the
// producer's tensor (1 outside its channels) for a linear producer, nothing for a norm.
std::vector<float> fold_into_producer(CausalLM& model, const CausalLM::InputProducer& producer,
                                      const std::vector<float>& s) {
  std::vector<float> p = model.weight(producer.tensor);
  const size_t n = s.size(), first = size_t(std::max<int64_t>(0, producer.first));
  const size_t width = !producer.rows       ? 1
                       : producer.width > 0 ? size_t(producer.width)
                                            : p.size() / std::max<size_t>(1, n);
  const bool whole = producer.width == 0 && producer.first == 0;  // the tensor is exactly the channels
  if (n == 0 || width == 0 || (first + n) * width > p.size() || (whole && p.size() != n * width))
    fail("fold: '{}' does not produce {} channels", producer.tensor, n);
  for (size_t i = 0; i < n * width; ++i) p[first * width + i] /= s[i / width];
  model.replace_weight(producer.tensor, p);
  if (!producer.bias.empty()) {
    std::vector<float> b = model.weight(producer.bias);
    if (first + n > b.size())
      fail("fold: bias '{}' has {} elements, not channels {}..{}", producer.bias, b.size(), first, first + n - 1);
    for (size_t i = 0; i < n; ++i) b[first + i] /= s[i];
    model.replace_weight(producer.bias, b);
  }
  std::vector<float> row_scale;
  if (producer.rows) {
    row_scale.assign(p.size() / width, 1.0f);
    std::copy(s.begin(), s.end(), row_scale.begin() + std::ptrdiff_t(first));
  }
  return row_scale;
}

// Multiplies the readers' columns by s (through the producer's tie); returns s per input column.
std::vector<float> scale_reader_columns(CausalLM& model, const std::vector<std::string>& readers,
                                        const CausalLM::InputProducer& producer, const std::vector<float>& s) {
  std::vector<float> s_cols;
  for (const std::string& name : readers) {
    std::vector<float> w = model.weight(name);
    const size_t cols = producer.tie.empty() ? s.size() : producer.tie.size();
    if (w.size() % cols != 0) fail("fold: '{}' does not read {} inputs", name, cols);
    s_cols.resize(cols);
    for (size_t c = 0; c < cols; ++c) {
      const size_t t = producer.tie.empty() ? c : size_t(producer.tie[c]);
      if (t >= s.size()) fail("fold: input {} of '{}' tied to channel {} of {}", c, name, t, s.size());
      s_cols[c] = s[t];
    }
    for (size_t i = 0; i < w.size(); ++i) w[i] *= s_cols[i % cols];
    model.replace_weight(name, w);
  }
  return s_cols;
}

void multiply_into(std::vector<float>& acc, const std::vector<float>& s) {
  if (acc.empty()) acc.assign(s.size(), 1.0f);
  if (acc.size() != s.size()) fail("fold: {} scales for a tensor folded with {} before", s.size(), acc.size());
  for (size_t i = 0; i < s.size(); ++i) acc[i] *= s[i];
}

}  // namespace

std::vector<float> fold_input_scales(CausalLM& model, const std::vector<std::string>& readers,
                                     const CausalLM::InputProducer& producer, const std::vector<float>& s) {
  fold_into_producer(model, producer, s);
  return scale_reader_columns(model, readers, producer, s);
}

std::vector<float> LayerFolds::fold(CausalLM& model, const std::vector<std::string>& readers,
                                    const CausalLM::InputProducer& producer, const std::vector<float>& s) {
  const std::vector<float> rows = fold_into_producer(model, producer, s);
  std::vector<float> s_cols = scale_reader_columns(model, readers, producer, s);
  for (const std::string& name : readers) multiply_into(col_scale_[name], s_cols);
  if (producer.rows) multiply_into(row_scale_[producer.tensor], rows);
  touched_.insert(readers.begin(), readers.end());
  touched_.insert(producer.tensor);
  if (!producer.bias.empty()) touched_.insert(producer.bias);
  return s_cols;
}

void LayerFolds::to_input_terms(const std::string& name, std::vector<float>& w, int64_t cols) const {
  if (auto c = col_scale_.find(name); c != col_scale_.end())
    for (size_t i = 0; i < w.size(); ++i) w[i] /= c->second[i % size_t(cols)];
  if (auto r = row_scale_.find(name); r != row_scale_.end())
    for (size_t i = 0; i < w.size(); ++i) w[i] *= r->second[i / size_t(cols)];
}

void LayerFolds::collect(const CausalLM& model, std::map<std::string, std::vector<float>>& folded) const {
  for (const std::string& name : touched_)
    if (!quantized_.count(name)) folded[name] = model.weight(name);
}

AwqLayerwise awq_layerwise(CausalLM& model, const std::vector<std::vector<int32_t>>& windows,
                           const std::function<std::optional<ResolvedScheme>(const std::string&)>& scheme_for,
                           const GptqOptions& rounding, const AwqOptions& opt, bool progress,
                           const TensorSink& sink) {
  int64_t tokens = 0;
  std::vector<std::vector<float>> x = embed_windows(model, windows, tokens);
  const int layers = model.config().num_layers;
  AwqLayerwise out;
  // α is searched with the weighted grid search (imatrix) that rounds the scaled weights, or stands
  // in for GPTQ's rounding (20 GPTQ runs per input would cost 20 times GPTQ).
  GptqOptions search = rounding;
  search.diagonal_only = true;
  search.act_order = false;
  if (search.clip_steps == 0) search.clip_steps = 20;
  Progress bar("awq", size_t(layers), progress);
  for (int l = 0; l < layers; ++l) {
    // 1. Every input's statistics from the float layer (scaling one input leaves the others as they
    //    were: each scale is undone by its fold).
    int inputs = 0;
    std::map<int, InputStats> acc = gather_inputs(model, l, x, windows, tokens, -1, inputs);
    // 2. Per input: the α search on the quantized readers, then the scales applied to every reader's
    //    columns and folded into the producer; H becomes that of the scaled input, diag(s)⁻¹ H diag(s)⁻¹.
    LayerFolds folds;
    for (auto& [k, a] : acc) {
      std::vector<std::string> quantized;
      for (const std::string& name : a.names)
        if (scheme_for(name)) quantized.push_back(name);
      const auto producer = model.input_producer(a.names.front());
      if (quantized.empty() || !producer) continue;
      const ResolvedScheme scheme = *scheme_for(quantized.front());
      std::vector<std::vector<float>> ws;
      std::vector<std::pair<const float*, int64_t>> views;
      for (const std::string& name : quantized) ws.push_back(model.weight(name));
      for (const auto& w : ws) views.push_back({w.data(), int64_t(w.size()) / a.cols});
      // Channel statistics per producer channel (tied columns averaged).
      std::vector<double> m = a.mean_abs;
      if (!producer->tie.empty()) {
        const int n = 1 + *std::max_element(producer->tie.begin(), producer->tie.end());
        std::vector<double> sum(size_t(n), 0.0), count(size_t(n), 0.0);
        for (int c = 0; c < a.cols; ++c) {
          sum[size_t(producer->tie[size_t(c)])] += a.mean_abs[size_t(c)];
          count[size_t(producer->tie[size_t(c)])] += 1;
        }
        for (int t = 0; t < n; ++t) sum[size_t(t)] /= std::max(1.0, count[size_t(t)]);
        m = std::move(sum);
      }
      AwqScales sc = awq_search(views, a.cols, m, producer->tie, a.h, scheme.format, scheme.spec, opt, &search);
      const std::vector<float> s_cols = folds.fold(model, a.names, *producer, sc.s);  // every reader
      for (int i = 0; i < a.cols; ++i)
        for (int j = 0; j < a.cols; ++j) a.h[size_t(i) * size_t(a.cols) + size_t(j)] /= double(s_cols[size_t(i)]) * double(s_cols[size_t(j)]);
      out.searches.push_back({a.names.front(), sc.alpha, sc.loss, sc.loss_plain});
    }
    // 3. The scaled weights rounded (grids searched, weighted by the scaled inputs' mean squares).
    round_readers(model, acc, scheme_for, rounding, [&](const std::string& name, GptqResult&& r, int cols) {
      // Reported in the input's terms: the folds undone, Q(W diag(s)) diag(s)⁻¹ with rows × their fold.
      folds.to_input_terms(name, r.dequantized, cols);
      folds.quantized(name);
      if (sink)
        sink({name, std::move(r.quantized), std::move(r.dequantized), 0.0f});
      else
        out.quantized.emplace(name, std::move(r));
    });
    folds.collect(model, out.folded);  // float tensors that changed
    advance_inputs(model, l, x, windows);
    model.release_layer(l);
    bar.update(size_t(l + 1), fmt::format("layer {}", l));
  }
  return out;
}

}  // namespace lowbit
