// libFuzzer target: the plain vocabulary files a checkpoint folder may carry instead of
// tokenizer.json: GPT-2's vocab.json + merges.txt, BERT's vocab.txt, with tokenizer_config.json.
// Input layout: one selector byte (bit 0: 0 = vocab.json + merges.txt, 1 = vocab.txt), then the files
// separated by NUL bytes: vocabulary, merges (GPT-2 only), tokenizer_config.json (optional).
#include "fuzz_common.h"
#include "lowbit/io/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  if (size < 1) return 0;
  const bool wordpiece = data[0] & 1;
  auto parts = fuzz::split_parts(fuzz::as_view(data + 1, size - 1), 3);
  auto dir = fuzz::fresh_dir("vocab");
  if (wordpiece) {
    fuzz::put(dir / "vocab.txt", parts[0]);
  } else {
    fuzz::put(dir / "vocab.json", parts[0]);
    fuzz::put(dir / "merges.txt", parts.size() > 1 ? parts[1] : std::string_view());
  }
  if (parts.size() > 2) fuzz::put(dir / "tokenizer_config.json", parts[2]);
  fuzz::expect_clean([&] {
    auto tok = load_tokenizer(dir);
    fuzz::exercise_tokenizer(*tok, "Hello, World! unaffable r\xc3\xa9sum\xc3\xa9 [SEP]", true);
  });
  return 0;
}
