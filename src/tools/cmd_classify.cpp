// lowbit classify MODEL TEXT...: the label and label probabilities of each text, from a BERT or
// DistilBERT sequence classifier; and eval_classifier, behind `lowbit eval MODEL --tsv FILE`:
// accuracy, macro-F1, confusion matrix and examples/s on labelled texts.
#include <algorithm>
#include <chrono>

#include "commands.h"
#include "lowbit/core/error.h"
#include "lowbit/eval/classification.h"
#include "lowbit/io/model_path.h"
#include "lowbit/io/tokenizer.h"
#include "lowbit/models/classifier.h"

namespace lowbit::cli {

namespace {

struct ClassifyArgs {
  Common c;
  std::vector<std::string> texts;
  int max_len = 0;
};

// --max-len, checked against the model (0: the model's max_position_embeddings).
int resolve_max_len(int max_len, const EncoderConfig& cfg) {
  if (max_len < 0) fail("--max-len must be positive, got {}", max_len);
  if (max_len > cfg.max_positions)
    fail("--max-len {} exceeds the model's max_position_embeddings {} ({})", max_len, cfg.max_positions,
         cfg.path.string());
  return max_len > 0 ? max_len : cfg.max_positions;
}

int classify(const ClassifyArgs& a) {
  const Common& c = a.c;
  if (a.texts.empty()) fail("classify: give at least one TEXT to classify");
  apply_threads(c);
  const auto dir = resolve_model_path(c.model);
  auto model = load_sequence_classifier(dir);
  auto tok = load_tokenizer(dir);
  const EncoderConfig& cfg = model->config();
  const int max_len = resolve_max_len(a.max_len, cfg);

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::vector<int32_t>> seqs;
  std::vector<bool> cut;
  for (const auto& t : a.texts) {
    bool truncated = false;
    seqs.push_back(encode_for_classifier(*tok, t, max_len, &truncated));
    cut.push_back(truncated);
  }
  const std::vector<float> logits = model->classify(seqs);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const int L = cfg.num_labels;
  json results = json::array();
  for (size_t i = 0; i < a.texts.size(); ++i) {
    const float* row = &logits[i * size_t(L)];
    const std::vector<float> scores = label_scores(cfg, row);
    const int best = int(std::max_element(row, row + L) - row);
    if (c.json) {
      json probs = json::object();
      for (int k = 0; k < L; ++k) probs[cfg.labels[size_t(k)]] = scores[size_t(k)];
      results.push_back({{"text", a.texts[i]},
                         {"label", cfg.labels[size_t(best)]},
                         {"label_id", best},
                         {cfg.problem_type == ProblemType::regression ? "scores" : "probabilities", probs},
                         {"logits", std::vector<float>(row, row + L)},
                         {"tokens", seqs[i].size()},
                         {"truncated", bool(cut[i])}});
    } else {
      std::string detail;
      for (int k = 0; k < L; ++k) detail += fmt::format("{}{} {:.4f}", k ? ", " : "", cfg.labels[size_t(k)], scores[size_t(k)]);
      fmt::print("{}\t({})\t{}{}\n", cfg.labels[size_t(best)], detail, a.texts[i], cut[i] ? "  [truncated]" : "");
    }
  }
  if (c.json)
    fmt::print("{}\n", json{{"results", results},
                            {"model", dir.string()},
                            {"architecture", cfg.architecture},
                            {"problem_type", problem_type_name(cfg.problem_type)},
                            {"max_len", max_len},
                            {"seconds", secs}}
                           .dump());
  return 0;
}

}  // namespace

int eval_classifier(const Common& c, const std::string& data_file, int max_len_arg, const std::string& label_map,
                    int batch) {
  apply_threads(c);
  const auto dir = resolve_model_path(c.model);
  auto model = load_sequence_classifier(dir);
  auto tok = load_tokenizer(dir);
  const EncoderConfig& cfg = model->config();
  ClassificationOptions opt;
  opt.max_len = resolve_max_len(max_len_arg, cfg);
  opt.batch = batch;
  const auto map = label_map.empty() ? std::map<std::string, int>{} : parse_label_map(label_map, cfg);
  const auto data = read_labeled_texts(data_file, cfg, map);
  const ClassificationResult r = evaluate_classifier(*model, *tok, data, opt);
  const int L = cfg.num_labels;
  if (c.json) {
    json per_label = json::array();
    for (int k = 0; k < L; ++k)
      per_label.push_back({{"label", cfg.labels[size_t(k)]},
                           {"precision", r.precision[size_t(k)]},
                           {"recall", r.recall[size_t(k)]},
                           {"f1", r.f1[size_t(k)]}});
    fmt::print("{}\n", json{{"accuracy", r.accuracy},
                            {"macro_f1", r.macro_f1},
                            {"examples", r.examples},
                            {"examples_per_s", r.examples_per_s},
                            {"correct", r.correct},
                            {"confusion", r.confusion},
                            {"labels", cfg.labels},
                            {"per_label", per_label},
                            {"tokens", r.tokens},
                            {"truncated", r.truncated},
                            {"max_len", opt.max_len},
                            {"seconds", r.seconds},
                            {"file", data_file},
                            {"model", dir.string()},
                            {"quantized", model->from_quantized()}}
                           .dump());
    return 0;
  }
  fmt::print("accuracy = {:.4f} ({} / {}), macro-F1 = {:.4f}  ({}, max {} tokens, {} truncated; {:.1f} s, "
             "{:.1f} examples/s)\n",
             r.accuracy, r.correct, r.examples, r.macro_f1, data_file, opt.max_len, r.truncated, r.seconds,
             r.examples_per_s);
  // Confusion matrix: rows are true labels, columns predictions.
  size_t w = 9;
  for (const auto& l : cfg.labels) w = std::max(w, l.size() + 1);
  fmt::print("\n{:<{}}", "true\\pred", w);
  for (const auto& l : cfg.labels) fmt::print("{:>{}}", l, w);
  fmt::print("{:>{}}{:>{}}{:>{}}\n", "precision", 11, "recall", 9, "F1", 9);
  for (int t = 0; t < L; ++t) {
    fmt::print("{:<{}}", cfg.labels[size_t(t)], w);
    for (int p = 0; p < L; ++p) fmt::print("{:>{}}", r.confusion[size_t(t)][size_t(p)], w);
    fmt::print("{:>11.4f}{:>9.4f}{:>9.4f}\n", r.precision[size_t(t)], r.recall[size_t(t)], r.f1[size_t(t)]);
  }
  return 0;
}

void register_classify(CLI::App& app, std::function<int()>& run) {
  auto a = std::make_shared<ClassifyArgs>();
  auto* cmd = app.add_subcommand("classify", "label texts with a BERT / DistilBERT sequence classifier");
  add_common(cmd, a->c);
  cmd->add_option("texts", a->texts, "texts to classify (each one sequence)")->required();
  cmd->add_option("--max-len", a->max_len,
                  "tokens per text, [CLS]/[SEP] included; longer texts are cut (default: the model's "
                  "max_position_embeddings)");
  cmd->callback([a, &run] { run = [a] { return classify(*a); }; });
}

}  // namespace lowbit::cli
