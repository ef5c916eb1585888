// libFuzzer target: a single-file checkpoint (model.safetensors): header, dtypes, shapes, offsets,
// __metadata__, then every tensor read back as float32 through the checkpoint's own loader.
#include "fuzz_common.h"
#include "lowbit/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  auto dir = fuzz::fresh_dir("st");
  fuzz::put(dir / "model.safetensors", fuzz::as_view(data, size));
  fuzz::expect_clean([&] {
    TensorStore store(dir);
    for (const auto& v : store.all()) {
      if (v.info->numel() > (int64_t(1) << 22)) continue;  // keep each run fast; sizes were validated
      auto f = store.load_f32(v.info->name);
      if (int64_t(f.size()) != v.info->numel()) std::abort();
    }
  });
  return 0;
}
