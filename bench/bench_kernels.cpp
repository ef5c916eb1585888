// Decode-step kernels on their own (Google Benchmark): one token (m = 1) through linear_forward on
// packed int4 / int8 weights of a real model's shapes, with enough distinct matrices that every pass
// reads from memory, as decoding does. Reports GB/s of weight traffic and its percentage of the read
// bandwidth (kernels/bandwidth.h) measured by the first benchmark in the same run.
//
//   build/lowbit_bench_kernels [--benchmark_filter=REGEX] [--benchmark_repetitions=N]
//
// Shapes: TinyLlama-1.1B (hidden 2048, intermediate 5632, 32 + 4 + 4 heads of 64, vocab 32000):
// q|k|v 2560 x 2048, o 2048 x 2048, gate|up 11264 x 2048, down 2048 x 5632, head 32000 x 2048.
// "Layers" runs the four of each of 22 layers in a model's order (int4, group 128, affine with f16
// scales and offsets, as `lowbit quantize --scheme int4` writes) and then the int8 head: the
// weights side of a decode step with nothing between the calls, the bound the model approaches.
#include <benchmark/benchmark.h>

#include <chrono>
#include <algorithm>
#include <cstring>
#include <memory>
#include <random>

#include "lowbit/core/dtype.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/kernels/bandwidth.h"
#include "lowbit/kernels/gemm.h"
#include "lowbit/kernels/linear.h"

namespace lowbit {
namespace {

double g_bandwidth_gb_s = 0;  // the last read-bandwidth figure of this run

struct Owned {
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scale, offset;
};

// The NF4 code book (QLoRA, Dettmers et al. 2023, appendix E).
constexpr float kNf4[16] = {-1.0f, -0.6961928f, -0.5250731f, -0.3949175f, -0.2844414f, -0.1848449f, -0.0910500f, 0.0f,
                            0.0795803f, 0.1609302f, 0.2461123f, 0.3379152f, 0.4407098f, 0.5626170f, 0.7229568f, 1.0f};

// A packed matrix of random codes: U4 affine (lut 0..15, f16 scale and offset per group of 128),
// U4 NF4 (nf4: the code book, f16 absmax scale per group of 64, no offsets) or U8 symmetric per row
// (zero 128), as the checkpoints hold them; re-laid by from_packed as at load.
LinearWeights make_linear(PackedKind kind, int64_t rows, int64_t cols, uint64_t seed, bool nf4 = false) {
  auto o = std::make_shared<Owned>();
  PackedMatrix m;
  m.kind = kind;
  m.rows = rows;
  m.cols = cols;
  m.row_bytes = kind == PackedKind::U4 ? size_t(cols / 2) : size_t(cols);
  m.group = kind == PackedKind::U4 ? (nf4 ? 64 : 128) : cols;
  o->codes.resize(size_t(rows) * m.row_bytes);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i + 8 <= o->codes.size(); i += 8) {  // xorshift: fast enough for 100s of MB
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    std::memcpy(&o->codes[i], &s, 8);
  }
  std::mt19937 rng{uint32_t(seed)};
  std::uniform_real_distribution<float> u(0.005f, 0.02f);
  o->scale.resize(size_t(rows * m.groups()));
  for (auto& v : o->scale) v = f32_to_f16(u(rng));
  m.data = o->codes.data();
  m.scale_f16 = o->scale.data();
  if (nf4) {
    std::copy(std::begin(kNf4), std::end(kNf4), m.lut);
  } else if (kind == PackedKind::U4) {
    o->offset.resize(o->scale.size());
    for (auto& v : o->offset) v = f32_to_f16(-8 * u(rng));
    m.offset_f16 = o->offset.data();
    for (int c = 0; c < 16; ++c) m.lut[c] = float(c);
  } else {
    m.zero = 128;
  }
  return LinearWeights::from_packed(m, o);
}

struct Shape {
  const char* name;
  PackedKind kind;
  int64_t rows, cols;
  bool nf4 = false;
};
constexpr Shape kQkv{"qkv", PackedKind::U4, 2560, 2048}, kO{"o", PackedKind::U4, 2048, 2048},
    kGateUp{"gate_up", PackedKind::U4, 11264, 2048}, kDown{"down", PackedKind::U4, 2048, 5632},
    kHead{"head_int8", PackedKind::U8, 32000, 2048};
constexpr int kLayers = 22;

// Weight traffic of `passes` passes of bytes_per_pass in `seconds` of wall clock.
void report(benchmark::State& state, uint64_t bytes_per_pass, double seconds) {
  const double bytes = double(bytes_per_pass) * double(state.iterations());
  state.SetBytesProcessed(int64_t(bytes));
  const double gb_s = bytes / 1e9 / seconds;
  state.counters["GB/s"] = gb_s;
  if (g_bandwidth_gb_s > 0) state.counters["%bw"] = 100 * gb_s / g_bandwidth_gb_s;
}

// One token through every matrix of ws in turn, per benchmark iteration (a random input of the
// widest matrix; the outputs of one call are not the next one's inputs: the values do not matter to
// the speed); reports the weight traffic against the wall clock.
void run_decode(benchmark::State& state, const std::vector<LinearWeights>& ws) {
  int64_t cols = 0, rows = 0;
  uint64_t bytes = 0;
  for (const auto& w : ws) {
    cols = std::max(cols, w.cols);
    rows = std::max(rows, w.rows);
    bytes += w.bytes();
  }
  std::vector<float> x(static_cast<size_t>(cols)), y(static_cast<size_t>(rows));
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(rng);
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& w : ws) {
      linear_forward(w, x.data(), 1, y.data());
      benchmark::DoNotOptimize(y.data());
    }
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  report(state, bytes, seconds);
}

void BM_ReadBandwidth(benchmark::State& state) {
  for (auto _ : state) {
    const BandwidthResult r = measure_read_bandwidth(0, 3);
    g_bandwidth_gb_s = r.gb_s;
    state.counters["GB/s"] = r.gb_s;
  }
}

// One shape: kLayers distinct matrices, one token through each in turn.
void BM_DecodeShape(benchmark::State& state, Shape shape) {
  std::vector<LinearWeights> ws;
  for (int l = 0; l < kLayers; ++l) ws.push_back(make_linear(shape.kind, shape.rows, shape.cols, uint64_t(l + 1), shape.nf4));
  run_decode(state, ws);
}

// One matrix small enough to stay in the two cores' L2 caches (1 MB each), over and over: the
// kernel's compute ceiling, with no memory traffic to wait for.
void BM_DecodeCached(benchmark::State& state, Shape shape) {
  run_decode(state, {make_linear(shape.kind, shape.rows, shape.cols, 1, shape.nf4)});
}

// A decode step's weights in a model's order (see the file comment).
void BM_DecodeLayers(benchmark::State& state, bool grouped) {
  std::vector<LinearWeights> ws;
  for (int l = 0; l < kLayers; ++l)
    for (const Shape& s : {kQkv, kO, kGateUp, kDown})
      ws.push_back(make_linear(s.kind, s.rows, s.cols, uint64_t(100 + ws.size())));
  if (grouped)  // the same calls, all of one shape after another (as the Decode/ benchmarks run them)
    std::stable_sort(ws.begin(), ws.end(), [](const LinearWeights& a, const LinearWeights& b) {
      return std::make_pair(a.rows, a.cols) < std::make_pair(b.rows, b.cols);
    });
  ws.push_back(make_linear(kHead.kind, kHead.rows, kHead.cols, 999));
  run_decode(state, ws);
  state.counters["calls/step"] = double(ws.size());
}

}  // namespace
}  // namespace lowbit

int main(int argc, char** argv) {
  lowbit::select_blas_kernels(argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  using namespace lowbit;
  benchmark::RegisterBenchmark("ReadBandwidth", BM_ReadBandwidth)->Iterations(1)->Unit(benchmark::kMillisecond);
  for (const Shape& s : {kQkv, kO, kGateUp, kDown, kHead, Shape{"gate_up_nf4", PackedKind::U4, 11264, 2048, true}})
    benchmark::RegisterBenchmark((std::string("Decode/") + s.name).c_str(), BM_DecodeShape, s)
        ->Unit(benchmark::kMillisecond)
        ->MinTime(1.0)
        ->UseRealTime();
  for (const Shape& s : {Shape{"int4_64x2048", PackedKind::U4, 64, 2048}, Shape{"int4_128x2048", PackedKind::U4, 128, 2048}, Shape{"int4_1024x2048", PackedKind::U4, 1024, 2048}, Shape{"int8_512x2048", PackedKind::U8, 512, 2048},
                         Shape{"nf4_1024x2048", PackedKind::U4, 1024, 2048, true}})
    benchmark::RegisterBenchmark((std::string("DecodeCached/") + s.name).c_str(), BM_DecodeCached, s)
        ->Unit(benchmark::kMicrosecond)
        ->MinTime(0.5)
        ->UseRealTime();
  benchmark::RegisterBenchmark("DecodeLayers/tinyllama-int4/grouped", BM_DecodeLayers, true)
      ->Unit(benchmark::kMillisecond)
      ->MinTime(2.0)
      ->UseRealTime();
  benchmark::RegisterBenchmark("DecodeLayers/tinyllama-int4", BM_DecodeLayers, false)
      ->Unit(benchmark::kMillisecond)
      ->MinTime(2.0)
      ->UseRealTime();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
