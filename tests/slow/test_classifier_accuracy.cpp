// Whole-dataset accuracy of distilbert-5m-imdb (labelled slow):
//   SST-2 dev, all 872 rows, max 256 tokens: transformers' 0.7339 (training_info.json).
//   IMDB test at max 256 tokens: every 10th review (2,500, about a minute on 2 cores; all 25,000
//   take about 7 minutes there), each prediction against transformers' own
//   (tests/data/distilbert_imdb_hf_predictions.json, made by make_distilbert_imdb_golden.py; its
//   full-set accuracy is the 0.8288 of training_info.json), plus the int8 checkpoint's accuracy.
#include <nlohmann/json.hpp>

#include "lowbit/core/file.h"
#include "lowbit/eval/classification.h"
#include "lowbit/models/classifier.h"
#include "lowbit/quant/quantize.h"
#include "../test_util.h"

namespace lowbit {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// tests/data, found from this file's path (the slow-test binary has no source-dir definition).
const fs::path kData = fs::path(__FILE__).parent_path().parent_path() / "data";

ClassificationResult run(const fs::path& model_dir, const std::vector<LabeledText>& data) {
  auto model = load_sequence_classifier(model_dir);
  auto tok = load_tokenizer(model_dir);
  ClassificationOptions opt;
  opt.max_len = 256;
  opt.progress = false;
  return evaluate_classifier(*model, *tok, data, opt);
}

TEST(ClassifierAccuracy, Sst2DevFull) {
  const auto dir = test::model_dir("distilbert-5m-imdb");
  const auto data = read_labeled_texts(test::shared_dir() / "datasets/sst2/dev.tsv", load_encoder_config(dir));
  const auto r = run(dir, data);
  const double want = json::parse(read_file(dir / "training_info.json"))["sst2_dev_accuracy"].get<double>();
  std::printf("[ accuracy ] SST-2 dev: %.4f (%zu / %zu), transformers %.4f; macro-F1 %.4f; %.1f examples/s\n",
              r.accuracy, r.correct, r.examples, want, r.macro_f1, r.examples_per_s);
  EXPECT_NEAR(r.accuracy, want, 1.0 / 872 + 1e-9);
}

TEST(ClassifierAccuracy, ImdbTestEvery10thMatchesTransformers) {
  const auto dir = test::model_dir("distilbert-5m-imdb");
  const EncoderConfig cfg = load_encoder_config(dir);
  const auto all = read_labeled_texts(test::shared_dir() / "datasets/imdb/test.tsv", cfg,
                                      parse_label_map("pos=positive,neg=negative", cfg));
  ASSERT_EQ(all.size(), 25000u);
  const json hf = json::parse(read_file(kData / "distilbert_imdb_hf_predictions.json"));
  const std::string hf_pred = hf["predictions"].get<std::string>();
  ASSERT_EQ(hf_pred.size(), all.size());
  std::vector<LabeledText> subset;
  for (size_t i = 0; i < all.size(); i += 10) subset.push_back(all[i]);
  const auto r = run(dir, subset);
  int disagree = 0;
  for (size_t k = 0; k < subset.size(); ++k) disagree += r.predictions[k] != hf_pred[k * 10] - '0';
  std::printf("[ accuracy ] IMDB test every 10th (%zu reviews, max 256, %zu truncated): %.4f, transformers %.4f "
              "(full set %.4f); %d predictions differ from transformers'; macro-F1 %.4f; %.1f examples/s\n",
              r.examples, r.truncated, r.accuracy, hf["every10_accuracy"].get<double>(), hf["accuracy"].get<double>(),
              disagree, r.macro_f1, r.examples_per_s);
  EXPECT_NEAR(r.accuracy, hf["every10_accuracy"].get<double>(), 1.0 / 2500 + 1e-9);
  EXPECT_LE(disagree, 1);

  // int8 (round to nearest, per row) on the same reviews.
  const auto q = test::temp_dir("q") / "int8";
  QuantizeOptions opt;
  opt.scheme = "int8";
  opt.progress = false;
  quantize_checkpoint(dir, q, opt);
  const auto rq = run(q, subset);
  std::printf("[ accuracy ] IMDB test every 10th, int8: %.4f (%+.2f points vs float32), %.1f examples/s\n",
              rq.accuracy, 100 * (rq.accuracy - r.accuracy), rq.examples_per_s);
  EXPECT_GE(rq.accuracy, r.accuracy - 0.005);
}

}  // namespace
}  // namespace lowbit
