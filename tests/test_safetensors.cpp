#include <cstring>

#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "lowbit/io/safetensors.h"
#include "test_util.h"

namespace lowbit {
namespace {

using test::expect_error;

// A safetensors file from a raw header string and a data section.
std::string make_file(const std::string& header, const std::string& data, uint64_t declared_len = UINT64_MAX) {
  uint64_t len = declared_len == UINT64_MAX ? header.size() : declared_len;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char(len >> (8 * i));
  return out + header + data;
}

std::filesystem::path write_case(const std::string& name, const std::string& bytes) {
  auto path = test::temp_dir("st") / name;
  test::write_bytes(path, bytes);
  return path;
}

TEST(Safetensors, RoundTripThroughWriter) {
  auto dir = test::temp_dir("rt");
  SafetensorsWriter w;
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  std::vector<uint16_t> b = {f32_to_bf16(1.5f), f32_to_bf16(-2.0f)};
  std::vector<int8_t> c = {-128, 0, 127};
  std::vector<int32_t> d = {7};
  w.add("a", DType::F32, {2, 3}, a.data(), a.size() * 4);
  w.add("b", DType::BF16, {2}, b.data(), b.size() * 2);
  w.add("c", DType::I8, {3}, c.data(), c.size());
  w.add("d", DType::I32, {1}, d.data(), 4);
  w.add("e", DType::U8, {0}, nullptr, 0);
  w.set_metadata("format", "pt");
  w.write(dir / "model.safetensors");
  // Nothing but the output is left in the folder (the temporary file was renamed).
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1);

  SafetensorsFile f(dir / "model.safetensors");
  ASSERT_EQ(f.tensors().size(), 5u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  const TensorInfo* ta = f.find("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(f.view(*ta).data, a.data(), 24), 0);
  TensorStore store(dir);
  EXPECT_EQ(store.load_f32("b"), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(store.load_f32("a", {2, 3}), a);
  expect_error([&] { store.load_f32("a", {3, 2}); }, {"model.safetensors", "'a'", "[2, 3]", "[3, 2]"});
  expect_error([&] { store.load_f32("c"); }, {"'c'", "I8"});
  expect_error([&] { store.get("missing"); }, {"missing tensor 'missing'"});
}

// A writer that spills its tensors to a scratch file writes the same bytes as one that holds them
// (also tensors larger than its 16 MB copy pieces, and borrowed ones), and leaves nothing else behind.
TEST(Safetensors, SpilledWriterWritesTheSameFile) {
  auto dir = test::temp_dir("spill");
  std::vector<uint8_t> big((size_t(17) << 20) + 5);
  for (size_t i = 0; i < big.size(); ++i) big[i] = uint8_t(i * 7 + (i >> 20));
  std::vector<float> a = {1, 2, 3};
  for (const bool spill : {false, true}) {
    SafetensorsWriter w;
    if (spill) w.spill_to(dir);
    w.add("a", DType::F32, {3}, a.data(), a.size() * 4);
    w.add("big", DType::U8, {int64_t(big.size())}, big.data(), big.size());
    w.add("empty", DType::U8, {0}, nullptr, 0);
    w.add_borrowed("borrowed", DType::F32, {3}, a.data(), a.size() * 4);  // never spilled, never copied
    w.set_metadata("format", "pt");
    w.write(dir / (spill ? "spilled.safetensors" : "held.safetensors"));
  }
  EXPECT_EQ(read_file(dir / "spilled.safetensors"), read_file(dir / "held.safetensors"));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 2);
  SafetensorsWriter w;
  expect_error([&] { w.spill_to(dir / "no-such-folder"); }, {"no-such-folder", "scratch file"});
}

TEST(Safetensors, ReadsRealCheckpoint) {
  TensorStore store(test::model_dir("llama-16m-wiki"));
  auto v = store.get("model.embed_tokens.weight");
  EXPECT_EQ(v.info->dtype, DType::BF16);
  EXPECT_EQ(v.info->shape, (std::vector<int64_t>{8192, 384}));
  int64_t params = 0;
  for (const auto& t : store.all()) params += t.info->numel();
  EXPECT_EQ(params, 15733632);
}

TEST(Safetensors, ShardedIndex) {
  auto dir = test::temp_dir("shards");
  std::vector<float> a = {1, 2}, b = {3, 4, 5};
  SafetensorsWriter w1, w2;
  w1.add("x.weight", DType::F32, {2}, a.data(), 8);
  w2.add("y.weight", DType::F32, {3}, b.data(), 12);
  w1.write(dir / "model-00001-of-00002.safetensors");
  w2.write(dir / "model-00002-of-00002.safetensors");
  test::write_bytes(dir / "model.safetensors.index.json",
                    R"({"metadata": {"total_size": 20}, "weight_map": {"x.weight": "model-00001-of-00002.safetensors",
                        "y.weight": "model-00002-of-00002.safetensors"}})");
  TensorStore store(dir);
  EXPECT_EQ(store.files().size(), 2u);
  EXPECT_EQ(store.load_f32("y.weight"), b);
  EXPECT_EQ(store.total_bytes(), 20u);

  test::write_bytes(dir / "model.safetensors.index.json", R"({"weight_map": {"z.weight": "model-00001-of-00002.safetensors"}})");
  expect_error([&] { TensorStore s(dir); }, {"model.safetensors.index.json", "'z.weight'", "not in shard"});
  test::write_bytes(dir / "model.safetensors.index.json", R"({"weight_map": {"x.weight": "nope.safetensors"}})");
  expect_error([&] { TensorStore s(dir); }, {"index.json", "nope.safetensors", "does not exist"});
  test::write_bytes(dir / "model.safetensors.index.json", R"({"weight_map": {"x.weight": "../etc/passwd"}})");
  expect_error([&] { TensorStore s(dir); }, {"index.json", "plain file name"});
  // Nesting a million levels deep: refused by the depth scan, not by a stack overflow.
  test::write_bytes(dir / "model.safetensors.index.json", std::string(1000000, '[') + std::string(1000000, ']'));
  expect_error([&] { TensorStore s(dir); }, {"index.json", "JSON nests deeper than 64 levels"});
  // A name longer than any file system allows (found by fuzz_safetensors_index: std::filesystem threw).
  test::write_bytes(dir / "model.safetensors.index.json", R"({"weight_map": {"x.weight": ")" + std::string(300, 'a') + "\"}}");
  expect_error([&] { TensorStore s(dir); }, {"index.json", "at most 255 bytes"});
  test::write_bytes(dir / "model.safetensors.index.json", R"({"weight_map": 3})");
  expect_error([&] { TensorStore s(dir); }, {"index.json", "weight_map"});
  test::write_bytes(dir / "model.safetensors.index.json", R"({"weight_map": )");
  expect_error([&] { TensorStore s(dir); }, {"index.json", "not valid JSON"});
}

struct MalformedCase {
  const char* name;
  std::string bytes;
  std::vector<std::string> expect;
};

TEST(Safetensors, RejectsMalformedFiles) {
  const std::string ok_hdr = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string data8(8, '\1');
  std::vector<MalformedCase> cases = {
      {"empty", "", {"truncated", "0 bytes"}},
      {"short_length", std::string("\x05\0\0", 3), {"truncated"}},
      {"header_past_end", make_file(ok_hdr, data8, 1000), {"header length 1000", "past the end"}},
      {"header_huge", make_file(ok_hdr, data8, uint64_t(1) << 62), {"exceeds the limit"}},
      {"bad_json", make_file(R"({"t": {"dtype": )", ""), {"not valid JSON"}},
      {"not_object", make_file("[1,2,3]", ""), {"must be a JSON object"}},
      {"entry_not_object", make_file(R"({"t": 5})", ""), {"'t'", "must be an object"}},
      {"unknown_dtype", make_file(R"({"t":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}})", "ab"), {"'t'", "unknown dtype 'Q4'"}},
      {"missing_dtype", make_file(R"({"t":{"shape":[2],"data_offsets":[0,8]}})", data8), {"'t'", "dtype"}},
      {"missing_shape", make_file(R"({"t":{"dtype":"F32","data_offsets":[0,8]}})", data8), {"'t'", "shape"}},
      {"negative_dim", make_file(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data8), {"'t'", "non-negative"}},
      {"overflow_shape", make_file(R"({"t":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}})", data8), {"'t'", "overflows"}},
      {"size_mismatch", make_file(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data8), {"'t'", "needs 12 bytes", "give 8"}},
      {"dtype_mismatch", make_file(R"({"t":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}})", data8), {"'t'", "F16", "needs 4 bytes"}},
      {"offsets_out_of_range", make_file(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", data8), {"'t'", "run past the data section"}},
      {"offsets_reversed", make_file(R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", data8), {"'t'", "begin 8 > end 0"}},
      {"offsets_wrong_type", make_file(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":"0-8"}})", data8), {"'t'", "data_offsets"}},
      {"overlap", make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data8), {"'a'", "'b'", "overlap"}},
      {"truncated_data", make_file(ok_hdr, "\1\1\1"), {"'t'", "past the data section"}},
      {"metadata_not_strings", make_file(R"({"__metadata__":{"k":1}})", ""), {"__metadata__", "'k'"}},
      {"rank_too_high", make_file(R"({"t":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}})", "a"), {"'t'", "rank 9"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto path = write_case(std::string(c.name) + ".safetensors", c.bytes);
    try {
      SafetensorsFile f(path);
      ADD_FAILURE() << c.name << ": accepted";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;  // names the file
      for (const auto& part : c.expect) EXPECT_NE(msg.find(part), std::string::npos) << msg << "\nmissing: " << part;
    }
  }
}

TEST(Safetensors, MissingFileAndFolder) {
  auto dir = test::temp_dir("none");
  expect_error([&] { SafetensorsFile f(dir / "nope.safetensors"); }, {"nope.safetensors", "cannot open"});
  expect_error([&] { TensorStore s(dir); }, {"no model.safetensors"});
  expect_error([&] { TensorStore s(dir / "absent"); }, {"absent", "not a checkpoint folder"});
}

TEST(Half, ConversionsRoundTrip) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = f16_to_f32(uint16_t(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(f32_to_f16(f), h) << h;
    EXPECT_EQ(f32_to_bf16(bf16_to_f32(uint16_t(h))), h);
  }
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds to Inf
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f), 0x3c00);  // tie to even
  EXPECT_EQ(f32_to_f16(0x1p-25f), 0x0000);         // tie to even (zero)
  EXPECT_EQ(f32_to_f16(0x1.8p-25f), 0x0001);
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);  // tie to even
}

}  // namespace
}  // namespace lowbit
