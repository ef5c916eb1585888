// libFuzzer target: Hugging Face tokenizer.json (BPE of both kinds, WordPiece, added tokens,
// normalizers, pre-tokenizers, post-processor templates); a loaded tokenizer must also encode and
// decode without failing.
#include "fuzz_common.h"
#include "lowbit/io/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  auto dir = fuzz::fresh_dir("tokjson");
  auto path = fuzz::put(dir / "tokenizer.json", fuzz::as_view(data, size));
  fuzz::expect_clean([&] {
    auto tok = load_hf_tokenizer_json(path);
    for (std::string_view text : {"Hello world, it's 2026!", " \xe2\x96\x81\xc3\xa9t\xc3\xa9\n\t<s> [CLS]", ""})
      fuzz::exercise_tokenizer(*tok, text, true);
  });
  return 0;
}
