#pragma once
// Logits against goldens: relative L2 error per row and argmax agreement, and a whole-model check
// (one prefill, token by token through the KV cache, and in uneven chunks).
#include <cmath>

#include "lowbit/models/generate.h"
#include "lowbit/models/model.h"
#include "test_util.h"

namespace lowbit::test {

struct LogitCheck {
  double max_rel_l2 = 0;
  int argmax_mismatches = 0;
};

inline LogitCheck compare_rows(const std::vector<float>& got, const std::vector<float>& want, int rows, int vocab) {
  LogitCheck r;
  for (int i = 0; i < rows; ++i) {
    double num = 0, den = 0;
    for (int j = 0; j < vocab; ++j) {
      double d = double(got[size_t(i * vocab + j)]) - want[size_t(i * vocab + j)];
      num += d * d;
      den += double(want[size_t(i * vocab + j)]) * want[size_t(i * vocab + j)];
    }
    r.max_rel_l2 = std::max(r.max_rel_l2, std::sqrt(num / den));
    if (argmax(&got[size_t(i * vocab)], vocab) != argmax(&want[size_t(i * vocab)], vocab)) ++r.argmax_mismatches;
  }
  return r;
}

inline void check_golden(const std::filesystem::path& dir, const std::filesystem::path& tokens_file,
                  const std::filesystem::path& logits_file, double tolerance = 1e-4) {
  auto model = load_causal_lm(dir);
  auto tokens = test::read_binary<int32_t>(tokens_file);
  auto want = test::read_binary<float>(logits_file);
  const int vocab = model->vocab_size(), n = int(tokens.size());
  ASSERT_EQ(want.size(), size_t(n) * size_t(vocab));

  // All 64 positions in one prefill call; a float32 KV cache (exact keys and values; the f16 cache,
  // the default, is checked at the end).
  auto session = model->new_session(n, KVCacheType::f32);
  std::vector<float> got(want.size(), NAN);
  model->forward(*session, tokens, got.data(), true);
  LogitCheck batch = compare_rows(got, want, n, vocab);
  EXPECT_LE(batch.max_rel_l2, tolerance);
  EXPECT_EQ(batch.argmax_mismatches, 0);
  std::printf("[ golden   ] %s: prefill max relative L2 error %.3g, argmax mismatches %d\n", dir.c_str(),
              batch.max_rel_l2, batch.argmax_mismatches);

  // Same logits one token at a time through the KV cache, and in uneven chunks.
  session->reset();
  std::fill(got.begin(), got.end(), NAN);
  for (int i = 0; i < n; ++i) model->forward(*session, std::span(&tokens[size_t(i)], 1), &got[size_t(i) * size_t(vocab)], false);
  LogitCheck inc = compare_rows(got, want, n, vocab);
  EXPECT_LE(inc.max_rel_l2, tolerance);
  EXPECT_EQ(inc.argmax_mismatches, 0);

  session->reset();
  std::fill(got.begin(), got.end(), NAN);
  for (int start = 0, len = 1; start < n; start += len, len = len * 2 + 1) {
    len = std::min(len, n - start);
    model->forward(*session, std::span(&tokens[size_t(start)], size_t(len)), &got[size_t(start) * size_t(vocab)], true);
  }
  EXPECT_LE(compare_rows(got, want, n, vocab).max_rel_l2, tolerance);

  // The default f16 cache, token by token: keys and values rounded to 11 bits move the logits by
  // ~2e-4 (relative L2) on the 16m models and ~1e-3 on stories260K.
  auto f16 = model->new_session(n);
  std::fill(got.begin(), got.end(), NAN);
  for (int i = 0; i < n; ++i) model->forward(*f16, std::span(&tokens[size_t(i)], 1), &got[size_t(i) * size_t(vocab)], false);
  LogitCheck half = compare_rows(got, want, n, vocab);
  EXPECT_LE(half.max_rel_l2, std::max(tolerance, 3e-3));
  std::printf("[ golden   ] %s: f16 KV cache, token by token: max relative L2 error %.3g, argmax mismatches %d\n",
              dir.c_str(), half.max_rel_l2, half.argmax_mismatches);
}

}  // namespace lowbit::test
