// libFuzzer target: a SentencePiece tokenizer.model (protobuf, parsed by libsentencepiece, then
// checked by lowbit); a loaded tokenizer must also encode and decode.
#include "fuzz_common.h"
#include "lowbit/io/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  auto dir = fuzz::fresh_dir("spm");
  auto path = fuzz::put(dir / "tokenizer.model", fuzz::as_view(data, size));
  fuzz::expect_clean([&] {
    auto tok = load_sentencepiece(path);
    fuzz::exercise_tokenizer(*tok, "Once upon a time, 123 \xc3\xa9t\xc3\xa9 <s>", false);
  });
  return 0;
}
