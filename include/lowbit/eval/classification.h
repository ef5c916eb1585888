#pragma once
// Accuracy of a sequence classifier on labelled texts: accuracy, macro-F1, the confusion matrix and
// throughput.
//
// Data files hold one example per line:
//   .tsv (and anything not .csv): text<TAB>label, the label after the last tab (SST-2 dev, IMDB test)
//   .csv: RFC 4180 (quoted fields may hold commas, doubled quotes and newlines); two columns,
//         text then label, or any order when a header names them (text|sentence|review, label)
// A first line whose label field reads "label" is a header. Labels are label ids (0, 1, ...), the
// model's id2label names, or names mapped by a label map ("pos=1,neg=0" or "pos=positive,...").
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "lowbit/io/encoder_config.h"
#include "lowbit/io/tokenizer.h"
#include "lowbit/models/classifier.h"

namespace lowbit {

struct LabeledText {
  std::string text;
  int label = -1;   // label id of the model
  size_t line = 0;  // 1-based line of the file where the example starts
};

// Parses "pos=1,neg=0" (ids) or "pos=positive,neg=negative" (the model's label names) into
// data label -> label id. Errors name the entry and list the model's labels.
std::map<std::string, int> parse_label_map(const std::string& spec, const EncoderConfig& cfg);

// Reads a data file (see above). Errors name file:line and what is wrong with the row.
std::vector<LabeledText> read_labeled_texts(const std::filesystem::path& file, const EncoderConfig& cfg,
                                            const std::map<std::string, int>& label_map = {});

struct ClassificationOptions {
  int max_len = 0;         // tokens per example, [CLS]/[SEP] included (0: the model's max_position_embeddings)
  int batch = 32;          // examples per forward pass
  bool progress = true;    // progress on stderr
};

struct ClassificationResult {
  size_t examples = 0;
  size_t correct = 0;
  double accuracy = 0;
  double macro_f1 = 0;  // mean F1 over the labels that occur in the data or the predictions (sklearn's convention)
  std::vector<double> precision, recall, f1;          // per label id (0 where undefined)
  std::vector<std::vector<int64_t>> confusion;        // [true label][predicted label]
  std::vector<int> predictions;                       // per example
  size_t tokens = 0;     // tokens fed to the model, special tokens included
  size_t truncated = 0;  // examples cut to max_len
  double seconds = 0;    // tokenization + forward passes
  double examples_per_s = 0;
};

// Runs the classifier over `data` in batches (tokenized with encode_for_classifier) and scores the
// argmax prediction of each example. Needs a single-label classification model.
ClassificationResult evaluate_classifier(const SequenceClassifier& model, const Tokenizer& tok,
                                         const std::vector<LabeledText>& data, const ClassificationOptions& opt = {});

}  // namespace lowbit
