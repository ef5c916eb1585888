// The lowbit binary end to end: --json outputs and error messages.
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <cstdio>
#include <set>

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
  // The same greedy text with exact (float32) keys and values as with the default f16 cache.
  r = run_lowbit("run llama-16m-wiki -p 'Once upon a time' -n 48 --kv-cache f32");
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

TEST(Cli, QuantizeInspectRunEvalQuantized) {
  std::string err;
  auto r = run_lowbit("quantize --list-schemes --json", &err);
  ASSERT_EQ(r.status, 0) << err;
  auto schemes = nlohmann::json::parse(r.out)["schemes"];
  std::set<std::string> names;
  for (const auto& s : schemes) names.insert(s["scheme"].get<std::string>());
  for (const char* n : {"int8", "int4", "int3", "int2", "nf4", "fp4", "kmeans4", "binary", "f16", "bf16"})
    EXPECT_TRUE(names.count(n)) << n;

  auto dir = test::temp_dir("q");
  const std::string model = test::model_dir("stories260K/hf").string();
  r = run_lowbit("quantize " + model + " -o " + (dir / "nf4").string() + " --scheme nf4 --json", &err);
  ASSERT_EQ(r.status, 0) << err;
  auto j = nlohmann::json::parse(r.out);
  for (const char* k : {"scheme", "method", "bits_per_weight", "bytes_in", "bytes_out", "seconds", "peak_rss_mb"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["scheme"], "nf4");
  EXPECT_NEAR(j["bits_per_weight"].get<double>(), 4.13, 0.1);
  EXPECT_NE(err.find("quantize:"), std::string::npos) << err;  // progress

  r = run_lowbit("quantize " + model + " -o " + (dir / "nf4").string() + " --scheme nf4", &err);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(err.find("already exists"), std::string::npos) << err;
  r = run_lowbit("quantize " + model + " -o " + (dir / "x").string() + " --scheme int5", &err);
  EXPECT_NE(r.status, 0);

  // The text mode prints the size table.
  r = run_lowbit("quantize " + model + " -o " + (dir / "int8").string() + " --scheme int8 --keep '*.layers.0.*'", &err);
  ASSERT_EQ(r.status, 0) << err;
  EXPECT_NE(r.out.find("FP32"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("mlp"), std::string::npos) << r.out;

  r = run_lowbit("inspect " + (dir / "nf4").string() + " --json", &err);
  ASSERT_EQ(r.status, 0) << err;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["quantized"], true);
  EXPECT_EQ(j["params"], 260032);
  bool saw = false;
  for (const auto& t : j["tensors"])
    if (t["name"] == "model.layers.0.mlp.up_proj.weight") {
      saw = true;
      EXPECT_EQ(t["format"], "nf4");
      EXPECT_GT(t["error"]["sqnr_db"].get<double>(), 10.0);
    }
  EXPECT_TRUE(saw);

  r = run_lowbit("run " + (dir / "nf4").string() + " -p 'Once upon a time' -n 8 --json", &err);
  ASSERT_EQ(r.status, 0) << err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["tokens"].size(), 8u);

  auto text = test::shared_dir() / "datasets/tinystories/tinystories_val_head.txt";
  r = run_lowbit("eval " + (dir / "nf4").string() + " --ref " + model + " --ppl " + text.string() +
                     " --ctx 64 --max-windows 4 --json", &err);
  ASSERT_EQ(r.status, 0) << err;
  j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["kld"].get<double>(), 0.0);
  EXPECT_LT(j["kld"].get<double>(), 0.5);
  EXPECT_GT(j["top1"].get<double>(), 0.5);
}

TEST(Cli, ReportWritesTableAndPlots) {
  auto dir = test::temp_dir("report");
  auto text = test::shared_dir() / "datasets/tinystories/tinystories_val_head.txt";
  std::string err;
  auto r = run_lowbit("report " + test::model_dir("stories260K/hf").string() + " -o " + dir.string() +
                          " --schemes int8,int4,binary --ppl " + text.string() + " --ctx 64 --max-windows 3 --json",
                      &err);
  ASSERT_EQ(r.status, 0) << err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["rows"].size(), 4u);  // fp32 (the input is fp32) + 3 schemes
  EXPECT_EQ(j["rows"][0]["scheme"], "fp32");
  EXPECT_EQ(j["rows"][1]["scheme"], "int8");
  EXPECT_LT(j["rows"][1]["kld"].get<double>(), j["rows"][3]["kld"].get<double>());  // int8 beats binary
  for (const char* f : {"report.json", "report.md", "size_vs_bits.png", "ppl_vs_bits.png"})
    EXPECT_GT(std::filesystem::file_size(dir / f), 100u) << f;
  EXPECT_NE(read_file(dir / "report.md").find("| int4 |"), std::string::npos);
}

// --methods: every scheme with every method that applies to its format (nf4 only with rtn).
TEST(Cli, ReportComparesMethods) {
  auto dir = test::temp_dir("report-methods");
  const auto text = test::shared_dir() / "datasets/tinystories/tinystories_val_head.txt";
  std::string err;
  auto r = run_lowbit("report " + test::model_dir("stories260K/hf").string() + " -o " + dir.string() +
                          " --schemes int3@32,nf4 --methods rtn,hqq,awq --calib " + text.string() +
                          " --calib-samples 4 --calib-ctx 64 --ppl " + text.string() + " --ctx 64 --max-windows 3 --json",
                      &err);
  // The calibration text may not be the evaluation text.
  ASSERT_NE(r.status, 0);
  EXPECT_NE(err.find("evaluation text"), std::string::npos) << err;
  const auto calib = test::temp_dir("report-calib") / "calib.txt";
  write_file_atomic(calib, read_file(text).substr(0, 200000));
  const auto eval = test::temp_dir("report-eval") / "eval.txt";
  write_file_atomic(eval, read_file(text).substr(200000, 60000));
  r = run_lowbit("report " + test::model_dir("stories260K/hf").string() + " -o " + dir.string() +
                     " --schemes int3@32,nf4 --methods rtn,hqq,awq --calib " + calib.string() +
                     " --calib-samples 4 --calib-ctx 64 --ppl " + eval.string() + " --ctx 64 --max-windows 3 --json",
                 &err);
  ASSERT_EQ(r.status, 0) << err;
  auto j = nlohmann::json::parse(r.out);
  std::vector<std::string> names;
  for (const auto& row : j["rows"]) names.push_back(row["scheme"].get<std::string>());
  EXPECT_EQ(names, (std::vector<std::string>{"fp32", "int3@32/rtn", "int3@32/hqq", "int3@32/awq", "nf4/rtn"}));
  EXPECT_NE(err.find("skipped nf4/hqq"), std::string::npos) << err;
  const std::string md = read_file(dir / "report.md");
  EXPECT_NE(md.find("nf4/hqq, nf4/awq"), std::string::npos);
  EXPECT_NE(md.find("| int3@32/awq |"), std::string::npos);
  auto bad = run_lowbit("report " + test::model_dir("stories260K/hf").string() + " -o " + dir.string() +
                            " --methods rtn,magic", &err);
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(err.find("unknown method 'magic'"), std::string::npos) << err;
}

}  // namespace
}  // namespace lowbit

namespace lowbit {
namespace {

// synth -> run -> quantize -> bench -> export, end to end on the toy shape.
TEST(Cli, SynthBenchAndExport) {
  const auto dir = test::temp_dir("synth");
  const std::string model = (dir / "tiny").string();
  auto r = run_lowbit("synth --shape tiny -o " + model + " --json");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["shape"], "tiny");
  std::string err;
  r = run_lowbit("synth --shape tiny -o " + model, &err);  // exists, no --force
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(err.find("already exists"), std::string::npos) << err;
  r = run_lowbit("synth --shape llama-99b -o " + (dir / "x").string(), &err);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(err.find("known shapes: llama-2-7b, llama-3.2-1b, tinyllama-1.1b"), std::string::npos) << err;

  r = run_lowbit("run " + model + " -p 'Hello, world' -n 4 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto run = nlohmann::json::parse(r.out);
  EXPECT_EQ(run["tokens"].size(), 4u);
  EXPECT_EQ(run["prompt_tokens"].size(), 13u);  // <s> + one token per byte

  for (const char* scheme : {"int8", "int4", "nf4", "int8-dyn"}) {
    const std::string q = (dir / scheme).string();
    ASSERT_EQ(run_lowbit("quantize " + model + " -o " + q + " --scheme " + scheme).status, 0) << scheme;
    r = run_lowbit("bench " + q + " --prompt 16 --gen 8 --repeats 2 --bandwidth 10 --json", &err);
    ASSERT_EQ(r.status, 0) << err;
    const auto j = nlohmann::json::parse(r.out);
    for (const char* key : {"prefill_tok_s", "decode_tok_s", "weight_gb_s", "bandwidth_gb_s", "bandwidth_pct", "peak_rss_mb"})
      EXPECT_GT(j[key].get<double>(), 0) << scheme << " " << key;
    EXPECT_DOUBLE_EQ(j["bandwidth_gb_s"].get<double>(), 10);
    EXPECT_NEAR(j["bandwidth_pct"].get<double>(), 10 * j["weight_gb_s"].get<double>(), 1e-9);
    EXPECT_LE(j["decode_tok_s_min"].get<double>(), j["decode_tok_s"].get<double>());
    EXPECT_FALSE(j["bandwidth_measured"].get<bool>());
    EXPECT_LE(j["bandwidth_pct_min"].get<double>(), j["bandwidth_pct"].get<double>());
    EXPECT_GE(j["bandwidth_pct_max"].get<double>(), j["bandwidth_pct"].get<double>());
    EXPECT_LE(j["core_round_trip_ns_min"].get<double>(), j["core_round_trip_ns"].get<double>());
    EXPECT_GE(j["core_round_trip_ns"].get<double>(), 0.0);
  }
  r = run_lowbit("bench " + model + " --prompt 300 --gen 8", &err);  // the toy has 256 positions
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(err.find("--prompt 300 / --depth 0 + --gen 8 exceeds the model's 256 positions"), std::string::npos) << err;
  r = run_lowbit("bench " + model + " --prompt 8 --depth 250 --gen 8", &err);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(err.find("--depth 250 + --gen 8 exceeds the model's 256 positions"), std::string::npos) << err;
  r = run_lowbit("bench " + model + " --prompt 8 --gen 4 --kv-cache f8", &err);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(err.find("--kv-cache"), std::string::npos) << err;
  // Decode after 100 tokens of context, with either cache (the f16 one reads half the bytes).
  std::vector<double> kv_bytes;
  for (const char* kv : {"f16", "f32"}) {
    r = run_lowbit(std::string("bench ") + model + " --prompt 8 --depth 100 --gen 4 --repeats 1 --bandwidth 10 --json --kv-cache " + kv, &err);
    ASSERT_EQ(r.status, 0) << err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["depth"].get<int>(), 100);
    EXPECT_EQ(j["kv_cache"].get<std::string>(), kv);
    EXPECT_GT(j["decode_tok_s"].get<double>(), 0);
    kv_bytes.push_back(j["kv_cache_bytes_per_token"].get<double>());
  }
  ASSERT_EQ(kv_bytes.size(), 2u);
  EXPECT_GT(kv_bytes[0], 0);
  EXPECT_DOUBLE_EQ(kv_bytes[1], 2 * kv_bytes[0]);

  r = run_lowbit("export " + model + " --to gguf -o " + (dir / "tiny.gguf").string() + " --json", &err);
  ASSERT_EQ(r.status, 0) << err;
  EXPECT_GT(nlohmann::json::parse(r.out)["bytes"].get<double>(), 0);
  r = run_lowbit("export " + (dir / "int4").string() + " --to gguf -o " + (dir / "q.gguf").string(), &err);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(err.find("export a float checkpoint"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(dir / "q.gguf"));
}

TEST(Cli, BenchMemory) {
  // The default buffer is >= 1 GiB; the call must still finish quickly and report a rate.
  auto r = run_lowbit("bench --memory --json");
  ASSERT_EQ(r.status, 0);
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["bandwidth_gb_s"].get<double>(), 0.1);
  EXPECT_GE(j["buffer_bytes"].get<double>(), double(1u << 30));
  // Between the pool's first two threads; 0 when there is one.
  if (j["threads"].get<int>() >= 2) EXPECT_GT(j["core_round_trip_ns"].get<double>(), 0.0);
  else EXPECT_EQ(j["core_round_trip_ns"].get<double>(), 0.0);
}

}  // namespace
}  // namespace lowbit
