// libFuzzer target: config.json, through both the causal-LM and the encoder (BERT family) parsers.
#include "fuzz_common.h"
#include "lowbit/io/config.h"
#include "lowbit/io/encoder_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  const std::string text(fuzz::as_view(data, size));
  const std::filesystem::path path = "fuzz/config.json";
  fuzz::expect_clean([&] { parse_config(text, path); });
  fuzz::expect_clean([&] { parse_encoder_config(text, path); });
  return 0;
}
