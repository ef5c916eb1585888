#include "lowbit/core/error.h"
#include "lowbit/io/config.h"
#include "test_util.h"

namespace lowbit {
namespace {

using test::expect_error;

TEST(Config, ReadsTransformers5Dialect) {
  ModelConfig c = load_config(test::model_dir("llama-16m-wiki"));
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.hidden_size, 384);
  EXPECT_EQ(c.num_layers, 6);
  EXPECT_EQ(c.num_heads, 6);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.intermediate_size, 1024);
  EXPECT_EQ(c.vocab_size, 8192);
  EXPECT_EQ(c.max_positions, 1024);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.dtype, "bfloat16");
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
}

TEST(Config, ReadsOlderDialect) {
  ModelConfig c = load_config(test::model_dir("stories260K/hf"));
  EXPECT_EQ(c.dtype, "float32");  // torch_dtype
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
}

const char* kBase = R"({"architectures": ["%s"], "hidden_size": 64, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100 %s})";

std::string cfg(const std::string& arch, const std::string& extra = "") {
  char buf[1024];
  std::snprintf(buf, sizeof buf, kBase, arch.c_str(), extra.c_str());
  return buf;
}

TEST(Config, Dialects) {
  ModelConfig q = parse_config(cfg("Qwen2ForCausalLM", R"(, "rope_theta": 1000000.0, "torch_dtype": "bfloat16")"), "q/config.json");
  EXPECT_TRUE(q.attention_bias);  // Qwen2 has q/k/v biases
  EXPECT_EQ(q.head_dim, 16);
  EXPECT_DOUBLE_EQ(q.rope_theta, 1e6);
  ModelConfig m = parse_config(cfg("MistralForCausalLM", R"(, "sliding_window": 4096)"), "m/config.json");
  EXPECT_EQ(m.sliding_window, 4096);
  EXPECT_FALSE(m.attention_bias);
  ModelConfig l3 = parse_config(cfg("LlamaForCausalLM",
      R"(, "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}, "rope_theta": 500000.0, "eos_token_id": [5, 7])"), "l3/config.json");
  EXPECT_EQ(l3.rope_type, RopeType::Llama3);
  EXPECT_DOUBLE_EQ(l3.rope_factor, 32.0);
  EXPECT_DOUBLE_EQ(l3.rope_theta, 5e5);
  EXPECT_EQ(l3.eos_token_ids, (std::vector<int>{5, 7}));
  ModelConfig rp = parse_config(cfg("LlamaForCausalLM", R"(, "rope_parameters": {"rope_theta": 250.0, "rope_type": "default"})"), "rp/config.json");
  EXPECT_DOUBLE_EQ(rp.rope_theta, 250.0);
}

TEST(Config, RejectsBadConfigs) {
  expect_error([] { parse_config(cfg("GPTNeoXForCausalLM"), "x/config.json"); },
               {"x/config.json", "'GPTNeoXForCausalLM' is not supported", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"});
  expect_error([] { parse_config("{", "x/config.json"); }, {"x/config.json", "not valid JSON"});
  expect_error([] { parse_config("[]", "x/config.json"); }, {"x/config.json", "object"});
  expect_error([] { parse_config(R"({"hidden_size": 3})", "x/config.json"); }, {"x/config.json", "architectures"});
  expect_error([] { parse_config(R"({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2})", "x/config.json"); },
               {"x/config.json", "missing field 'vocab_size'"});
  expect_error([] { parse_config(cfg("LlamaForCausalLM", R"(, "num_key_value_heads": 3)"), "x/config.json"); },
               {"x/config.json", "not a multiple of num_key_value_heads 3"});
  expect_error([] { parse_config(cfg("LlamaForCausalLM", R"(, "hidden_size": "64")"), "x/config.json"); },
               {"x/config.json", "'hidden_size' must be an integer"});
  expect_error([] { parse_config(cfg("LlamaForCausalLM", R"(, "intermediate_size": -1)"), "x/config.json"); },
               {"x/config.json", "'intermediate_size' = -1 is out of range"});
  expect_error([] { parse_config(cfg("LlamaForCausalLM", R"(, "hidden_act": "gelu")"), "x/config.json"); },
               {"x/config.json", "hidden_act 'gelu'"});
  expect_error([] { parse_config(cfg("LlamaForCausalLM", R"(, "rope_scaling": {"type": "yarn", "factor": 2.0})"), "x/config.json"); },
               {"x/config.json", "rope_type 'yarn' is not supported"});
  expect_error([] { parse_config(cfg("LlamaForCausalLM", R"(, "dtype": "int4")"), "x/config.json"); },
               {"x/config.json", "dtype 'int4'"});
  expect_error([] { parse_config(cfg("LlamaForCausalLM", R"(, "eos_token_id": 100)"), "x/config.json"); },
               {"x/config.json", "eos_token_id"});
  expect_error([] { load_config("/nonexistent/model"); }, {"/nonexistent/model", "no config.json"});
}

}  // namespace
}  // namespace lowbit
