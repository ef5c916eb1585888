// lowbit bench MODEL: prefill and decode speed at batch 1, the weight traffic that decoding moves
// (GB/s) and how close that is to the machine's measured memory read bandwidth.
// lowbit bench --memory: that bandwidth alone (STREAM-style read test, kernels/bandwidth.h).
#include <algorithm>
#include <chrono>
#include <random>

#include "commands.h"
#include "lowbit/kernels/gemm.h"
#include "lowbit/core/error.h"
#include "lowbit/core/file.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/io/model_path.h"
#include "lowbit/kernels/bandwidth.h"
#include "lowbit/models/generate.h"
#include "lowbit/kernels/packed.h"
#include "lowbit/models/model.h"

namespace lowbit::cli {

namespace {

struct BenchArgs {
  Common c;
  int prompt = 512, gen = 128, repeats = 3;
  int depth = 0;  // decode after this many tokens of context (llama-bench's -d)
  KVCacheType kv = KVCacheType::f16;
  bool memory = false;
  double bandwidth_gb_s = 0;  // 0: measure
};

struct Spread {
  double median = 0, min = 0, max = 0;
};
Spread spread(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int bench_memory(const BenchArgs& a) {
  apply_threads(a.c);
  const BandwidthResult r = measure_read_bandwidth(0, 5);
  const double trip = measure_core_round_trip_ns();
  if (a.c.json) {
    fmt::print("{}\n", json{{"bandwidth_gb_s", r.gb_s}, {"median_gb_s", r.median_gb_s}, {"buffer_bytes", r.bytes},
                             {"threads", r.threads}, {"repeats", r.repeats}, {"core_round_trip_ns", trip}}
                           .dump());
  } else {
    fmt::print("memory read bandwidth: {:.2f} GB/s (best of {}; median {:.2f}) with {} threads over a {:.2f} GB buffer\n",
               r.gb_s, r.repeats, r.median_gb_s, r.threads, r.bytes / 1e9);
    if (trip > 0) fmt::print("core-to-core round trip: {:.0f} ns (threads 0 and 1)\n", trip);
  }
  return 0;
}

int bench_model(const BenchArgs& a) {
  if (a.prompt < 1 || a.gen < 1) fail("bench: --prompt and --gen must be >= 1");
  if (a.repeats < 1) fail("bench: --repeats must be >= 1");
  if (a.depth < 0) fail("bench: --depth must be >= 0");
  apply_threads(a.c);
  const auto dir = resolve_model_path(a.c.model);
  auto t0 = std::chrono::steady_clock::now();
  auto model = load_causal_lm(dir);
  const double load_s = seconds_since(t0);
  const int vocab = model->vocab_size();
  if (std::max(a.prompt, a.depth + a.gen) > model->config().max_positions)
    fail("bench: --prompt {} / --depth {} + --gen {} exceeds the model's {} positions", a.prompt, a.depth, a.gen,
         model->config().max_positions);

  // Random token ids (speed does not depend on them), the same every run.
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> tok(3, vocab - 1);
  std::vector<int32_t> prompt(size_t(a.prompt)), context(size_t(a.depth));
  for (auto& t : prompt) t = tok(rng);
  for (auto& t : context) t = tok(rng);
  std::vector<float> logits(static_cast<size_t>(vocab));
  // Two tests, as llama.cpp's llama-bench runs them (pp and tg): prefill = the prompt in one call
  // into an empty cache; decode = gen single-token steps from an empty cache (so decode speed is
  // the weights' traffic, not attention over a long context), or after --depth tokens of context
  // (llama-bench's -d: then the KV cache's reads count too).
  // The bandwidth moves by 20-30 % from minute to minute on shared machines, so unless --bandwidth
  // fixes it, it is measured right after each repeat's decode and each repeat's decode traffic is
  // held against its own figure (best of 3 passes: the conservative denominator).
  std::vector<double> prefill, decode, bandwidth, pct, trips;
  double rss = 0;
  const uint64_t bytes = model->decode_weight_bytes();
  // The KV cache a decode step reads, on average over the gen steps (keys and values of every
  // position before it); not in the weight figures.
  const ModelConfig& mc = model->config();
  const double kv_bytes = 2.0 * mc.num_layers * mc.num_kv_heads * mc.head_dim * (a.kv == KVCacheType::f16 ? 2 : 4) *
                          (a.depth + (a.gen + 1) / 2.0);
  for (int r = 0; r < a.repeats; ++r) {
    auto session = model->new_session(a.prompt, a.kv);
    t0 = std::chrono::steady_clock::now();
    model->forward(*session, prompt, logits.data(), false);
    prefill.push_back(a.prompt / seconds_since(t0));
    session = model->new_session(a.depth + a.gen, a.kv);
    if (a.depth > 0) model->forward(*session, context, logits.data(), false);  // not timed
    int32_t next = prompt[0];
    t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < a.gen; ++i) {
      model->forward(*session, std::span<const int32_t>(&next, 1), logits.data(), false);
      next = argmax(logits.data(), int(logits.size()));
    }
    decode.push_back(a.gen / seconds_since(t0));
    // Every repeat allocates the same sessions, so the first repeat reaches the peak; read it before
    // the bandwidth test's buffer raises it.
    if (r == 0) rss = peak_rss_mb();
    trips.push_back(measure_core_round_trip_ns());
    bandwidth.push_back(a.bandwidth_gb_s > 0 ? a.bandwidth_gb_s : measure_read_bandwidth(0, 3).gb_s);
    pct.push_back(100.0 * decode.back() * double(bytes) / 1e9 / bandwidth.back());
    fmt::print(stderr, "bench: repeat {}/{}: prefill {:.1f} tok/s, decode {:.2f} tok/s = {:.1f}% of {:.2f} GB/s (core round trip {:.0f} ns)\n",
               r + 1, a.repeats, prefill.back(), decode.back(), pct.back(), bandwidth.back(), trips.back());
  }
  const Spread p = spread(prefill), d = spread(decode), b = spread(bandwidth), q = spread(pct), rt = spread(trips);
  const double weight_gb_s = d.median * double(bytes) / 1e9;
  const double bw = b.median;
  if (a.c.json) {
    fmt::print("{}\n", json{{"model", dir.string()},
                             {"prefill_tok_s", p.median},
                             {"prefill_tok_s_min", p.min},
                             {"prefill_tok_s_max", p.max},
                             {"decode_tok_s", d.median},
                             {"decode_tok_s_min", d.min},
                             {"decode_tok_s_max", d.max},
                             {"decode_weight_bytes", bytes},
                             {"weight_gb_s", weight_gb_s},
                             {"bandwidth_gb_s", bw},
                             {"bandwidth_gb_s_min", b.min},
                             {"bandwidth_gb_s_max", b.max},
                             {"bandwidth_pct", q.median},
                             {"bandwidth_pct_min", q.min},
                             {"bandwidth_pct_max", q.max},
                             {"bandwidth_measured", a.bandwidth_gb_s <= 0},
                             {"peak_rss_mb", rss},
                             {"core_round_trip_ns", rt.median},
                             {"core_round_trip_ns_min", rt.min},
                             {"core_round_trip_ns_max", rt.max},
                             {"load_seconds", load_s},
                             {"prompt", a.prompt},
                             {"gen", a.gen},
                             {"depth", a.depth},
                             {"kv_cache_bytes_per_token", kv_bytes},
                             {"kv_cache", a.kv == KVCacheType::f16 ? "f16" : "f32"},
                             {"repeats", a.repeats},
                             {"threads", default_thread_pool().size()},
                             {"kernels", packed_kernels_best().name},
                             {"blas_core", blas_core_name()}}
                           .dump());
    return 0;
  }
  fmt::print("model: {} ({:.3f} GB of weights read per decoded token; kernels {}, OpenBLAS {}, {} threads)\n",
             dir.string(), bytes / 1e9, packed_kernels_best().name, blas_core_name(), default_thread_pool().size());
  fmt::print("prefill ({} tokens): {:.1f} tok/s (median of {}; {:.1f} .. {:.1f})\n", a.prompt, p.median, a.repeats, p.min,
             p.max);
  fmt::print("decode  ({} tokens{}): {:.2f} tok/s (median of {}; {:.2f} .. {:.2f})\n", a.gen,
             a.depth > 0 ? fmt::format(" after {} of context, {} KV cache", a.depth, a.kv == KVCacheType::f16 ? "f16" : "f32") : "",
             d.median, a.repeats, d.min, d.max);
  fmt::print("weight traffic: {:.2f} GB/s; {:.1f}% ({:.1f} .. {:.1f}) of the read bandwidth {} ({:.2f} GB/s, {:.2f} .. {:.2f})\n",
             weight_gb_s, q.median, q.min, q.max, a.bandwidth_gb_s > 0 ? "given" : "measured after each repeat", bw,
             b.min, b.max);
  if (a.depth > 0)
    fmt::print("KV cache read per decoded token: {:.1f} MB on average ({:.1f} % on top of the weights)\n", kv_bytes / 1e6,
               100.0 * kv_bytes / double(bytes));
  fmt::print("peak RSS: {:.0f} MB (load {:.2f} s)\n", rss, load_s);
  if (rt.median > 0)
    fmt::print("core-to-core round trip: {:.0f} ns ({:.0f} .. {:.0f}; a decoded token moves work and activations between the threads 2-5 times a layer)\n",
               rt.median, rt.min, rt.max);
  return 0;
}

}  // namespace

void register_bench(CLI::App& app, std::function<int()>& run) {
  auto a = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "prefill and decode speed, effective GB/s vs the memory bandwidth");
  add_common(cmd, a->c);
  cmd->add_option("--prompt", a->prompt, "prompt tokens (prefill)")->capture_default_str();
  cmd->add_option("--gen", a->gen, "generated tokens (decode)")->capture_default_str();
  cmd->add_option("--repeats", a->repeats, "runs; the median is reported")->capture_default_str();
  cmd->add_option("--depth", a->depth, "decode after this many tokens of context (default: from an empty cache)")
      ->capture_default_str();
  add_kv_cache_option(cmd, a->kv);
  cmd->add_option("--bandwidth", a->bandwidth_gb_s, "the machine's read bandwidth in GB/s (default: measured after each repeat)");
  cmd->add_flag("--memory", a->memory, "measure the memory read bandwidth only");
  cmd->callback([a, &run] { run = [a] { return a->memory ? bench_memory(*a) : bench_model(*a); }; });
}

}  // namespace lowbit::cli
