// The GGUF reader: a real file written by llama.cpp's converter, synthetic files with every value
// type, and broken files (every truncation point, lying lengths and counts) that must give a
// lowbit::Error naming the file, never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "lowbit/core/error.h"
#include "lowbit/io/gguf.h"

namespace lowbit {
namespace {

namespace fs = std::filesystem;
const fs::path kShared = LOWBIT_SHARED_DIR;

// Little-endian GGUF bytes, built field by field.
struct GgufBuilder {
  std::string b;
  template <typename T>
  GgufBuilder& put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  GgufBuilder& str(std::string_view s) {
    put<uint64_t>(s.size());
    b.append(s);
    return *this;
  }
  GgufBuilder& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b.append("GGUF");
    return put<uint32_t>(version).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
  }
  GgufBuilder& key(std::string_view k, GgufType t) { return str(k).put<uint32_t>(uint32_t(t)); }
  GgufBuilder& pad_to(size_t alignment) {
    while (b.size() % alignment) b.push_back(0);
    return *this;
  }
};

fs::path write_temp(const std::string& name, const std::string& bytes) {
  const fs::path dir = fs::path(testing::TempDir()) / "lowbit_gguf_tests";
  fs::create_directories(dir);
  const fs::path p = dir / name;
  std::ofstream(p, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  return p;
}

template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> fragments) {
  try {
    f();
    ADD_FAILURE() << "expected a lowbit::Error containing '" << *fragments.begin() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& frag : fragments) EXPECT_NE(msg.find(frag), std::string::npos) << "message: " << msg << "\nmissing: " << frag;
  }
}

// A valid file with one value of every type, an array of each kind and two tensors.
std::string good_file() {
  GgufBuilder g;
  g.header(2, 15);
  g.key("general.architecture", GgufType::string).str("test");
  g.key("u8", GgufType::uint8).put<uint8_t>(200);
  g.key("i8", GgufType::int8).put<int8_t>(-5);
  g.key("u16", GgufType::uint16).put<uint16_t>(60000);
  g.key("i16", GgufType::int16).put<int16_t>(-300);
  g.key("u32", GgufType::uint32).put<uint32_t>(4000000000u);
  g.key("i32", GgufType::int32).put<int32_t>(-7);
  g.key("f32", GgufType::float32).put<float>(1.5f);
  g.key("b", GgufType::boolean).put<uint8_t>(1);
  g.key("u64", GgufType::uint64).put<uint64_t>(uint64_t(1) << 40);
  g.key("i64", GgufType::int64).put<int64_t>(-(int64_t(1) << 40));
  g.key("f64", GgufType::float64).put<double>(0.25);
  g.key("strs", GgufType::array).put<uint32_t>(uint32_t(GgufType::string)).put<uint64_t>(3).str("a").str("").str("▁c");
  g.key("ints", GgufType::array).put<uint32_t>(uint32_t(GgufType::int32)).put<uint64_t>(2).put<int32_t>(-1).put<int32_t>(6);
  g.key("floats", GgufType::array).put<uint32_t>(uint32_t(GgufType::float32)).put<uint64_t>(2).put<float>(0.5f).put<float>(-2.f);
  // tensors: f32 [4, 2] at 0 (32 bytes), q8_0 [32, 1] at 32 (34 bytes)
  g.str("w").put<uint32_t>(2).put<uint64_t>(4).put<uint64_t>(2).put<uint32_t>(0).put<uint64_t>(0);
  g.str("q").put<uint32_t>(2).put<uint64_t>(32).put<uint64_t>(1).put<uint32_t>(8).put<uint64_t>(32);
  g.pad_to(32);
  for (int i = 0; i < 8; ++i) g.put<float>(float(i));
  g.b.append(34, '\x01');
  return g.b;
}

TEST(Gguf, ReadsEveryValueType) {
  GgufFile f(write_temp("good.gguf", good_file()));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "test");
  EXPECT_EQ(f.get_uint("u8"), 200u);
  EXPECT_EQ(f.get_int("i8"), -5);
  EXPECT_EQ(f.get_uint("u16"), 60000u);
  EXPECT_EQ(f.get_int("i16"), -300);
  EXPECT_EQ(f.get_uint("u32"), 4000000000u);
  EXPECT_EQ(f.get_int("i32"), -7);
  EXPECT_EQ(f.get_float("f32"), 1.5);
  EXPECT_TRUE(f.get_bool("b"));
  EXPECT_EQ(f.get_uint("u64"), uint64_t(1) << 40);
  EXPECT_EQ(f.get_int("i64"), -(int64_t(1) << 40));
  EXPECT_EQ(f.get_float("f64"), 0.25);
  EXPECT_EQ(f.get_string_array("strs"), (std::vector<std::string>{"a", "", "▁c"}));
  EXPECT_EQ(f.get_int_array("ints"), (std::vector<int64_t>{-1, 6}));
  EXPECT_EQ(f.get_float_array("floats"), (std::vector<double>{0.5, -2.0}));
  ASSERT_EQ(f.tensors().size(), 2u);
  const auto& w = f.tensors()[0];
  EXPECT_EQ(w.name, "w");
  EXPECT_EQ(w.ne, (std::vector<uint64_t>{4, 2}));
  EXPECT_EQ(w.nbytes, 32u);
  float x[8];
  std::memcpy(x, f.tensor_data(w), sizeof x);
  EXPECT_EQ(x[7], 7.f);
  EXPECT_EQ(f.tensors()[1].nbytes, 34u);
  // typed getters refuse the wrong type and name the key
  expect_error([&] { f.get_string("u8"); }, {"good.gguf", "'u8'", "uint8"});
  expect_error([&] { f.get_uint("i8"); }, {"'i8'"});
  expect_error([&] { f.get_float("i32"); }, {"'i32'"});
  expect_error([&] { f.get_string_array("ints"); }, {"'ints'"});
  expect_error([&] { f.get_int("missing.key"); }, {"good.gguf", "'missing.key' is missing"});
}

TEST(Gguf, EveryTruncationIsAnError) {
  const std::string good = good_file();
  for (size_t n = 0; n < good.size(); ++n) {
    const fs::path p = write_temp("cut.gguf", good.substr(0, n));
    try {
      GgufFile f(p);
      ADD_FAILURE() << "a file cut to " << n << " of " << good.size() << " bytes was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("cut.gguf"), std::string::npos) << e.what();
    }
  }
}

TEST(Gguf, RejectsLiesAndGarbage) {
  auto with = [](auto&& build) {
    GgufBuilder g;
    build(g);
    return g.b;
  };
  auto load = [](const std::string& name, const std::string& bytes) { GgufFile f(write_temp(name, bytes)); };
  expect_error([&] { load("magic.gguf", "GGUX" + std::string(20, '\0')); }, {"magic.gguf", "not a GGUF file"});
  expect_error([&] { load("v1.gguf", with([](GgufBuilder& g) { g.header(0, 0, 1); })); }, {"version 1"});
  expect_error([&] { load("be.gguf", with([](GgufBuilder& g) { g.header(0, 0, 0x03000000); })); }, {"big-endian"});
  expect_error([&] { load("kv.gguf", with([](GgufBuilder& g) { g.header(0, uint64_t(1) << 40); })); }, {"kv.gguf", "metadata entries"});
  expect_error([&] { load("nt.gguf", with([](GgufBuilder& g) { g.header(uint64_t(-1), 0); })); }, {"nt.gguf", "tensors"});
  // a string length far past the end, and one just past the end
  expect_error([&] { load("huge_str.gguf", with([](GgufBuilder& g) { g.header(0, 1).put<uint64_t>(uint64_t(-2)); })); },
               {"huge_str.gguf", "length"});
  expect_error([&] { load("past_end.gguf", with([](GgufBuilder& g) { g.header(0, 1).put<uint64_t>(10).b += "abc"; })); },
               {"past_end.gguf", "past the end"});
  expect_error([&] { load("type.gguf", with([](GgufBuilder& g) { g.header(0, 1).key("k", GgufType(13)); })); },
               {"type.gguf", "unknown value type 13"});
  expect_error([&] {
    load("arr.gguf", with([](GgufBuilder& g) {
      g.header(0, 1).key("k", GgufType::array).put<uint32_t>(uint32_t(GgufType::uint64)).put<uint64_t>(uint64_t(1) << 27);
    }));
  }, {"arr.gguf", "array elements"});
  expect_error([&] {
    load("nested.gguf", with([](GgufBuilder& g) { g.header(0, 1).key("k", GgufType::array).put<uint32_t>(9).put<uint64_t>(0); }));
  }, {"array of arrays"});
  expect_error([&] { load("bool.gguf", with([](GgufBuilder& g) { g.header(0, 1).key("k", GgufType::boolean).put<uint8_t>(2); })); },
               {"not 0 or 1"});
  expect_error([&] {
    load("dup.gguf", with([](GgufBuilder& g) {
      g.header(0, 2).key("k", GgufType::uint8).put<uint8_t>(1).key("k", GgufType::uint8).put<uint8_t>(2);
    }));
  }, {"'k' appears twice"});
  expect_error([&] {
    load("align.gguf", with([](GgufBuilder& g) { g.header(0, 1).key("general.alignment", GgufType::uint32).put<uint32_t>(24); }));
  }, {"power of two"});
  auto tensor_file = [&](uint32_t n_dims, std::vector<uint64_t> ne, uint32_t type, uint64_t offset, size_t data_bytes) {
    return with([&](GgufBuilder& g) {
      g.header(1, 0).str("t").put<uint32_t>(n_dims);
      for (uint64_t d : ne) g.put<uint64_t>(d);
      g.put<uint32_t>(type).put<uint64_t>(offset).pad_to(32);
      g.b.append(data_bytes, '\0');
    });
  };
  EXPECT_NO_THROW(load("t_ok.gguf", tensor_file(1, {8}, 0, 0, 32)));
  expect_error([&] { load("t_dims.gguf", tensor_file(5, {1, 1, 1, 1, 1}, 0, 0, 32)); }, {"5 dimensions"});
  expect_error([&] { load("t_type.gguf", tensor_file(1, {8}, 4, 0, 32)); }, {"unknown ggml type 4"});
  expect_error([&] { load("t_block.gguf", tensor_file(1, {8}, 2, 0, 64)); }, {"not a multiple of the type's block"});
  expect_error([&] { load("t_align.gguf", tensor_file(1, {8}, 0, 4, 64)); }, {"alignment"});
  expect_error([&] { load("t_end.gguf", tensor_file(1, {8}, 0, 0, 31)); }, {"t_end.gguf", "past the end of the data"});
  expect_error([&] { load("t_overflow.gguf", tensor_file(2, {uint64_t(1) << 40, uint64_t(1) << 40}, 0, 0, 32)); }, {"overflows"});
}

TEST(Gguf, ReadsLlamaCppFiles) {
  GgufFile f(kShared / "models/stories260K/stories260K-f32.gguf");
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens").size(), 512u);
  bool found = false;
  for (const auto& t : f.tensors()) {
    if (t.name != "token_embd.weight") continue;
    found = true;
    EXPECT_EQ(t.ne, (std::vector<uint64_t>{64, 512}));
    EXPECT_EQ(t.ggml_type, 0u);
    EXPECT_EQ(t.nbytes, 64u * 512 * 4);
  }
  EXPECT_TRUE(found);
  GgufFile vocab(kShared / "tokenizer-tests/ggml-vocab-gpt-2.gguf");
  EXPECT_TRUE(vocab.tensors().empty());
  EXPECT_EQ(vocab.get_string_array("tokenizer.ggml.merges").size(), 50000u);
}

}  // namespace
}  // namespace lowbit
