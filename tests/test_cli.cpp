// The lowbit binary end to end: --json outputs and error messages.
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <cstdio>

#include "lowbit/core/file.h"
#include "test_util.h"

namespace lowbit {
namespace {

struct Result {
  int status = -1;
  std::string out;  // stdout, then stderr
};

// Runs `lowbit ARGS` through the shell; stderr is captured into `err_file`.
Result run_lowbit(const std::string& args, std::string* err = nullptr, const std::string& env = "") {
  // One stderr file per test: ctest runs tests in parallel.
  const auto* info = testing::UnitTest::GetInstance()->current_test_info();
  auto err_path = std::filesystem::path(testing::TempDir()) / ("lowbit_cli_stderr_" + std::string(info->name()) + ".txt");
  std::string cmd = env + " " + std::string(LOWBIT_BINARY) + " " + args + " 2>" + err_path.string();
  Result r;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  if (err) *err = read_file(err_path);
  return r;
}

TEST(Cli, InspectJson) {
  auto r = run_lowbit("inspect " + test::model_dir("llama-16m-wiki").string() + " --json");
  ASSERT_EQ(r.status, 0);
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["architecture"], "LlamaForCausalLM");
  EXPECT_EQ(j["params"], 15733632);
  EXPECT_EQ(j["bytes"], 2 * 15733632);
  EXPECT_EQ(j["tensors"].size(), 57u);
  EXPECT_EQ(j["tensors"][0]["name"], "lm_head.weight");
  EXPECT_EQ(j["tensors"][0]["dtype"], "BF16");
  EXPECT_EQ(j["tensors"][0]["shape"], nlohmann::json({8192, 384}));
}

TEST(Cli, ModelSearchPath) {
  // A bare name is looked up in $LOWBIT_MODELS.
  auto dir = test::temp_dir("models");
  std::filesystem::create_directory_symlink(test::model_dir("stories260K/hf"), dir / "tiny");
  auto r = run_lowbit("inspect tiny --json", nullptr, "LOWBIT_MODELS=" + dir.string());
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(nlohmann::json::parse(r.out)["params"], 260032);
  std::string err;
  r = run_lowbit("inspect no-such-model", &err);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(err.find("model 'no-such-model' not found"), std::string::npos) << err;
  r = run_lowbit("inspect --model " + test::model_dir("stories260K/hf").string() + " --json");
  EXPECT_EQ(r.status, 0);
}

TEST(Cli, RunGreedyJson) {
  auto info = nlohmann::json::parse(read_file(test::model_dir("llama-16m-wiki") / "training_info.json"));
  std::string err;
  auto r = run_lowbit("run llama-16m-wiki -p 'Once upon a time' -n 48 --json", &err);
  ASSERT_EQ(r.status, 0) << err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["text"], info["greedy_48_from_once_upon_a_time"]);
  EXPECT_EQ(j["tokens"].size(), 48u);
  EXPECT_GT(j["prefill_tok_s"].get<double>(), 0);
  EXPECT_GT(j["decode_tok_s"].get<double>(), 0);
  EXPECT_NE(err.find("decode:"), std::string::npos);
  // Streaming text mode prints the same text.
  r = run_lowbit("run llama-16m-wiki -p 'Once upon a time' -n 48");
  EXPECT_EQ(r.out, info["greedy_48_from_once_upon_a_time"].get<std::string>() + "\n");
}

TEST(Cli, EvalJsonAndErrors) {
  auto file = test::shared_dir() / "datasets/wikitext-2/wiki.test.raw";
  std::string err;
  auto r = run_lowbit("eval llama-16m-wiki --ppl " + file.string() + " --ctx 128 --max-windows 3 --json", &err);
  ASSERT_EQ(r.status, 0) << err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["windows"], 3);
  EXPECT_EQ(j["ctx"], 128);
  EXPECT_EQ(j["tokens_scored"], 3 * 127);
  EXPECT_GT(j["ppl"].get<double>(), 1.0);
  EXPECT_LT(j["ppl"].get<double>(), 1000.0);
  EXPECT_GT(j["ppl_stderr"].get<double>(), 0.0);
  EXPECT_NE(err.find("perplexity: 3/3"), std::string::npos) << err;  // progress line

  r = run_lowbit("eval llama-16m-wiki --ppl /nonexistent.txt", &err);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(err.find("/nonexistent.txt: cannot open"), std::string::npos) << err;
  r = run_lowbit("eval llama-16m-wiki --ppl " + file.string() + " --score middle", &err);
  EXPECT_NE(r.status, 0);
}

TEST(Cli, BadCheckpointIsReportedNotCrashed) {
  auto dir = test::temp_dir("badcfg");
  test::write_bytes(dir / "config.json", R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64)");
  std::string err;
  auto r = run_lowbit("inspect " + dir.string(), &err);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(err.find((dir / "config.json").string() + ": not valid JSON"), std::string::npos) << err;
  r = run_lowbit("run " + dir.string() + " -n 2", &err);
  EXPECT_EQ(r.status, 1);
}

}  // namespace
}  // namespace lowbit
