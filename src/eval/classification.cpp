// Classifier evaluation: labelled-text files (TSV / CSV), label resolution, batched inference and
// the metrics (accuracy, per-label precision / recall / F1, macro-F1, confusion matrix).
#include "lowbit/eval/classification.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "lowbit/core/progress.h"
#include "lowbit/core/thread_pool.h"

namespace lowbit {

namespace fs = std::filesystem;

namespace {

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r' || s[b] == '\n')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r' || s[e - 1] == '\n')) --e;
  return std::string(s.substr(b, e - b));
}

std::string lower_ascii(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = char(c + 32);
  return s;
}

// A non-negative decimal integer, or nullopt.
std::optional<long long> parse_id(const std::string& s) {
  if (s.empty() || s.size() > 9) return std::nullopt;
  long long v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

// The first characters of a line, for error messages.
std::string excerpt(std::string_view s) {
  std::string e(s.substr(0, 40));
  for (char& c : e)
    if (c == '\t') c = ' ';
  return s.size() > 40 ? e + "..." : e;
}

// A label as written in a data file -> label id, or nullopt when it names no label.
std::optional<int> lookup_label(const std::string& label, const EncoderConfig& cfg,
                                const std::map<std::string, int>& label_map) {
  if (!label_map.empty()) {
    auto it = label_map.find(label);
    if (it == label_map.end()) return std::nullopt;
    return it->second;
  }
  if (auto id = parse_id(label)) {
    if (*id < cfg.num_labels) return int(*id);
    return std::nullopt;
  }
  const int id = cfg.label_id(label);
  return id >= 0 ? std::optional<int>(id) : std::nullopt;
}

[[noreturn]] void fail_label(const std::string& label, const std::string& where, const EncoderConfig& cfg,
                             const std::map<std::string, int>& label_map) {
  if (!label_map.empty()) {
    std::vector<std::string> keys;
    for (const auto& [k, v] : label_map) keys.push_back(k);
    fail("{}: label '{}' is not in the label map ({})", where, label, fmt::join(keys, ", "));
  }
  fail("{}: label '{}' is neither a label id (0..{}) nor one of the model's labels ({}); map the data's names to "
       "the model's with a label map, e.g. --label-map {}=0,...", where, label, cfg.num_labels - 1,
       fmt::join(cfg.labels, ", "), label);
}

// RFC 4180 records: fields separated by commas, quoted fields may hold commas, "" and newlines.
struct CsvRecord {
  std::vector<std::string> fields;
  size_t line = 0;  // where the record starts
};

std::vector<CsvRecord> parse_csv(const std::string& text, const std::string& file) {
  std::vector<CsvRecord> records;
  size_t i = 0, line = 1;
  while (i < text.size()) {
    CsvRecord rec;
    rec.line = line;
    std::string field;
    bool end_of_record = false;
    while (!end_of_record) {
      if (i < text.size() && text[i] == '"') {  // quoted field
        const size_t open_line = line;
        ++i;
        for (;;) {
          if (i >= text.size()) fail("{}:{}: a quoted field is not closed before the end of the file", file, open_line);
          if (text[i] == '"') {
            if (i + 1 < text.size() && text[i + 1] == '"') {
              field.push_back('"');
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (text[i] == '\n') ++line;
          field.push_back(text[i++]);
        }
        if (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r')
          fail("{}:{}: unexpected character '{}' after a closing quote (a quote inside a field must be doubled)", file,
               line, text[i]);
      } else {
        while (i < text.size() && text[i] != ',' && text[i] != '\n') field.push_back(text[i++]);
        if (!field.empty() && field.back() == '\r') field.pop_back();
      }
      if (i < text.size() && text[i] == '\r') ++i;
      rec.fields.push_back(std::move(field));
      field.clear();
      if (i >= text.size()) {
        end_of_record = true;
      } else if (text[i] == ',') {
        ++i;
      } else if (text[i] == '\n') {
        ++i;
        ++line;
        end_of_record = true;
      }
    }
    const bool blank = rec.fields.size() == 1 && trim(rec.fields[0]).empty();
    if (!blank) records.push_back(std::move(rec));
  }
  return records;
}

}  // namespace

std::map<std::string, int> parse_label_map(const std::string& spec, const EncoderConfig& cfg) {
  std::map<std::string, int> out;
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t end = spec.find(',', pos);
    if (end == std::string::npos) end = spec.size();
    const std::string entry = trim(std::string_view(spec).substr(pos, end - pos));
    pos = end + 1;
    if (entry.empty()) {
      if (end == spec.size()) break;
      fail("label map '{}': empty entry; expected NAME=LABEL entries separated by commas, e.g. pos=1,neg=0", spec);
    }
    const size_t eq = entry.rfind('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == entry.size())
      fail("label map '{}': entry '{}' is not NAME=LABEL (e.g. pos=1 or pos=positive)", spec, entry);
    const std::string name = trim(entry.substr(0, eq)), value = trim(entry.substr(eq + 1));
    int id = -1;
    if (auto v = parse_id(value)) {
      if (*v >= cfg.num_labels)
        fail("label map '{}': '{}' maps to label id {}, but the model has {} labels (0..{}: {})", spec, name, *v,
             cfg.num_labels, cfg.num_labels - 1, fmt::join(cfg.labels, ", "));
      id = int(*v);
    } else {
      id = cfg.label_id(value);
      if (id < 0)
        fail("label map '{}': '{}' maps to '{}', which is neither a label id nor one of the model's labels ({})", spec,
             name, value, fmt::join(cfg.labels, ", "));
    }
    if (!out.emplace(name, id).second) fail("label map '{}': '{}' is mapped twice", spec, name);
  }
  if (out.empty()) fail("label map '{}' is empty; expected NAME=LABEL entries, e.g. pos=1,neg=0", spec);
  return out;
}

std::vector<LabeledText> read_labeled_texts(const fs::path& path, const EncoderConfig& cfg,
                                            const std::map<std::string, int>& label_map) {
  const std::string file = path.string();
  if (!fs::exists(path)) fail("{}: no such file", file);
  const std::string text = read_file(path, size_t(4) << 30);
  std::vector<LabeledText> out;
  // The first row is a header when its label field reads "label" and that names no label.
  auto is_header = [&](const std::string& label) {
    return out.empty() && lower_ascii(label) == "label" && !lookup_label(label, cfg, label_map);
  };
  auto add = [&](std::string body, const std::string& label, size_t line) {
    const std::string where = fmt::format("{}:{}", file, line);
    if (label.empty()) fail("{}: the label is empty", where);
    auto id = lookup_label(label, cfg, label_map);
    if (!id) fail_label(label, where, cfg, label_map);
    out.push_back({std::move(body), *id, line});
  };

  std::string ext = lower_ascii(path.extension().string());
  if (ext == ".csv") {
    auto records = parse_csv(text, file);
    size_t first = 0;
    int text_col = 0, label_col = 1;
    if (!records.empty()) {
      const auto& head = records[0].fields;
      int t = -1, l = -1;
      for (size_t c = 0; c < head.size(); ++c) {
        const std::string name = lower_ascii(trim(head[c]));
        if (name == "label") l = int(c);
        if (name == "text" || name == "sentence" || name == "review") t = int(c);
      }
      if (l >= 0 && !lookup_label(trim(head[size_t(l)]), cfg, label_map)) {  // a header
        if (t < 0)
          fail("{}:1: the header names no text column (expected one of text, sentence, review); found: {}", file,
               fmt::join(head, ", "));
        text_col = t, label_col = l, first = 1;
      } else if (head.size() != 2) {
        fail("{}:1: expected 2 columns (text,label) or a header naming text and label columns, found {} columns", file,
             head.size());
      }
    }
    const size_t columns = records.empty() ? 2 : records[0].fields.size();
    for (size_t r = first; r < records.size(); ++r) {
      const auto& rec = records[r];
      if (rec.fields.size() != columns)
        fail("{}:{}: expected {} columns, found {} (a field holding commas must be quoted)", file, rec.line, columns,
             rec.fields.size());
      add(rec.fields[size_t(text_col)], trim(rec.fields[size_t(label_col)]), rec.line);
    }
  } else {
    size_t pos = 0, line = 0;
    bool first = true;
    while (pos < text.size()) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      std::string_view row(text.data() + pos, end - pos);
      pos = end + 1;
      ++line;
      if (!row.empty() && row.back() == '\r') row.remove_suffix(1);
      if (trim(row).empty()) continue;  // blank lines (e.g. at the end) are not examples
      const size_t tab = row.rfind('\t');
      if (tab == std::string_view::npos)
        fail("{}:{}: expected text<TAB>label, found no tab in \"{}\"", file, line, excerpt(row));
      const std::string label = trim(row.substr(tab + 1));
      if (first && is_header(label)) {
        first = false;
        continue;
      }
      first = false;
      add(std::string(row.substr(0, tab)), label, line);
    }
  }
  if (out.empty()) fail("{}: no examples (expected text<TAB>label lines)", file);
  return out;
}

ClassificationResult evaluate_classifier(const SequenceClassifier& model, const Tokenizer& tok,
                                         const std::vector<LabeledText>& data, const ClassificationOptions& opt) {
  const EncoderConfig& cfg = model.config();
  if (cfg.problem_type != ProblemType::single_label)
    fail("{}: accuracy needs a single_label_classification model; this one is {}", cfg.path.string(),
         problem_type_name(cfg.problem_type));
  const int max_len = opt.max_len > 0 ? opt.max_len : cfg.max_positions;
  if (max_len > cfg.max_positions)
    fail("max length {} exceeds the model's max_position_embeddings {} ({})", max_len, cfg.max_positions,
         cfg.path.string());
  if (opt.batch < 1) fail("batch size must be at least 1, got {}", opt.batch);
  const int L = cfg.num_labels;
  for (const auto& ex : data)
    if (ex.label < 0 || ex.label >= L) fail("line {}: label id {} is outside the model's {} labels", ex.line, ex.label, L);

  ClassificationResult r;
  r.examples = data.size();
  r.confusion.assign(size_t(L), std::vector<int64_t>(size_t(L), 0));
  r.predictions.resize(data.size());
  Progress progress("eval", data.size(), opt.progress);
  ThreadPool& pool = default_thread_pool();
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::vector<int32_t>> seqs;
  std::vector<char> cut;
  std::vector<float> logits;
  for (size_t begin = 0; begin < data.size(); begin += size_t(opt.batch)) {
    const size_t n = std::min(size_t(opt.batch), data.size() - begin);
    seqs.assign(n, {});
    cut.assign(n, 0);
    pool.parallel_for(n, [&](size_t b, size_t e, int) {
      for (size_t i = b; i < e; ++i) {
        bool t = false;
        seqs[i] = encode_for_classifier(tok, data[begin + i].text, max_len, &t);
        cut[i] = t;
      }
    });
    logits = model.classify(seqs);
    for (size_t i = 0; i < n; ++i) {
      const float* row = &logits[i * size_t(L)];
      const int pred = int(std::max_element(row, row + L) - row);  // first maximum, as torch.argmax
      const int truth = data[begin + i].label;
      r.predictions[begin + i] = pred;
      r.confusion[size_t(truth)][size_t(pred)]++;
      r.correct += pred == truth;
      r.tokens += seqs[i].size();
      r.truncated += size_t(cut[i]);
    }
    progress.update(begin + n, fmt::format("accuracy {:.4f}", double(r.correct) / double(begin + n)));
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  progress.finish(fmt::format("accuracy {:.4f}", double(r.correct) / double(r.examples)));
  r.examples_per_s = r.seconds > 0 ? double(r.examples) / r.seconds : 0;
  r.accuracy = double(r.correct) / double(r.examples);

  // Per label: precision = tp / predicted, recall = tp / true; F1 their harmonic mean (0 where undefined).
  r.precision.assign(size_t(L), 0);
  r.recall.assign(size_t(L), 0);
  r.f1.assign(size_t(L), 0);
  double f1_sum = 0;
  int present = 0;
  for (int c = 0; c < L; ++c) {
    int64_t tp = r.confusion[size_t(c)][size_t(c)], truth = 0, predicted = 0;
    for (int k = 0; k < L; ++k) {
      truth += r.confusion[size_t(c)][size_t(k)];
      predicted += r.confusion[size_t(k)][size_t(c)];
    }
    if (predicted) r.precision[size_t(c)] = double(tp) / double(predicted);
    if (truth) r.recall[size_t(c)] = double(tp) / double(truth);
    const double pr = r.precision[size_t(c)] + r.recall[size_t(c)];
    if (pr > 0) r.f1[size_t(c)] = 2 * r.precision[size_t(c)] * r.recall[size_t(c)] / pr;
    if (truth || predicted) {
      f1_sum += r.f1[size_t(c)];
      ++present;
    }
  }
  r.macro_f1 = present ? f1_sum / present : 0;
  return r;
}

}  // namespace lowbit
