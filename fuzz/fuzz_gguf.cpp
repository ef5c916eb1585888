// libFuzzer target: GGUF files (header, key/values, tensor infos, alignment) and the tokenizer
// vocabulary read from them.
#include "fuzz_common.h"
#include "lowbit/io/gguf.h"
#include "lowbit/io/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  auto dir = fuzz::fresh_dir("gguf");
  auto path = fuzz::put(dir / "model.gguf", fuzz::as_view(data, size));
  fuzz::expect_clean([&] {
    GgufFile f(path);
    for (const auto& t : f.tensors()) {
      // Touch both ends of each accepted tensor: one said to lie past the mapping faults here.
      if (t.nbytes) {
        (void)*(volatile const uint8_t*)f.tensor_data(t);
        (void)*(volatile const uint8_t*)(f.tensor_data(t) + t.nbytes - 1);
      }
    }
  });
  fuzz::expect_clean([&] {
    auto tok = load_gguf_tokenizer(path);
    fuzz::exercise_tokenizer(*tok, "Hello world <s> \xc3\xa9", false);
  });
  return 0;
}
