// libFuzzer target: model.safetensors.index.json of a sharded checkpoint. The folder holds two
// valid shards; the input is the index that maps tensor names onto them.
#include "fuzz_common.h"
#include "lowbit/io/safetensors.h"

namespace {
std::filesystem::path g_dir;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  using namespace lowbit;
  g_dir = fuzz::fresh_dir("index");
  const float a[6] = {1, 2, 3, 4, 5, 6};
  const uint16_t b[4] = {0x3c00, 0x4000, 0xc000, 0x0000};  // f16 1, 2, -2, 0
  SafetensorsWriter w1;
  w1.add("model.embed_tokens.weight", DType::F32, {2, 3}, a, sizeof a);
  w1.add("model.norm.weight", DType::F32, {6}, a, sizeof a);
  w1.write(g_dir / "model-00001-of-00002.safetensors");
  SafetensorsWriter w2;
  w2.add("lm_head.weight", DType::F16, {2, 2}, b, sizeof b);
  w2.write(g_dir / "model-00002-of-00002.safetensors");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  fuzz::put(g_dir / "model.safetensors.index.json", fuzz::as_view(data, size));
  fuzz::expect_clean([&] {
    TensorStore store(g_dir);
    for (const auto& v : store.all()) store.load_f32(v.info->name);
  });
  return 0;
}
