// libFuzzer target: a quantized checkpoint's model.safetensors, whose __metadata__ describes each
// quantized weight ("lowbit.quant.<name>": format, bits, group, shape, ...) and whose parts
// (<name>.q, .scale, .zero, ...) must agree with it. Every tensor is dequantized and every linear
// layer loaded as the kernels would.
#include "fuzz_common.h"
#include "lowbit/formats/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  auto dir = fuzz::fresh_dir("qckpt");
  fuzz::put(dir / "model.safetensors", fuzz::as_view(data, size));
  fuzz::expect_clean([&] {
    WeightStore ws(dir);
    for (const auto& t : ws.tensors()) {
      if (t.numel() > (int64_t(1) << 22)) continue;  // keep each run fast
      auto f = ws.load_f32(t.name);
      if (int64_t(f.size()) != t.numel()) std::abort();
      if (!t.format.empty()) ws.load_quantized(t.name);
      if (t.shape.size() == 2) {
        fuzz::expect_clean([&] { ws.load_linear(t.name, t.shape); });
        fuzz::expect_clean([&] { ws.load_linear(t.name, {t.shape[1], t.shape[0]}, true); });
      }
    }
  });
  return 0;
}
