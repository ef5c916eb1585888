#pragma once
// Pieces of LlamaModel shared by llama.cpp (the model) and llama_split.cpp (its split decode).
#include <cmath>
#include <vector>

#include "lowbit/kernels/activation.h"
#include "lowbit/models/llama.h"

namespace lowbit {

inline void rms_norm(const float* x, const float* weight, float* out, int n, float eps) {
  static const RmsNormFn fn = rms_norm_best();
  fn(x, weight, out, n, eps);
}

// Rotate-half RoPE on one head vector: (x_i, x_{i+half}) -> (x_i c - x_{i+half} s, x_{i+half} c + x_i s).
inline void apply_rope(float* x, const float* cos_row, const float* sin_row, int half) {
  for (int i = 0; i < half; ++i) {
    float a = x[i], b = x[i + half];
    x[i] = a * cos_row[i] - b * sin_row[i];
    x[i + half] = b * cos_row[i] + a * sin_row[i];
  }
}


// Scratch buffers and the cos / sin of every new position (float32 like transformers:
// angle = float(pos) * inv_freq). The split decode has its own buffers and takes only the rotary
// tables (buffers = false: ~95 KB less to allocate and clear per token).
struct LlamaModel::Work {
  Work(const ModelConfig& c, const std::vector<float>& inv_freq, int n, int pos0, bool buffers = true) {
    const int half = c.head_dim / 2, qkv_dim = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
    if (buffers) {
      qkv.resize(size_t(n) * size_t(qkv_dim));
      att.resize(size_t(n) * size_t(c.num_heads * c.head_dim));
      gu.resize(size_t(n) * size_t(2 * c.intermediate_size));
      act.resize(size_t(n) * size_t(c.intermediate_size));
    }
    xn.resize(size_t(n) * size_t(c.hidden_size));  // (also the final norm's output)
    cos_t.resize(size_t(n) * size_t(half));
    sin_t.resize(cos_t.size());
    for (int i = 0; i < n; ++i)
      for (int f = 0; f < half; ++f) {
        float angle = float(pos0 + i) * inv_freq[size_t(f)];
        cos_t[size_t(i * half + f)] = float(std::cos(double(angle)));
        sin_t[size_t(i * half + f)] = float(std::sin(double(angle)));
      }
  }
  std::vector<float> xn, qkv, att, gu, act, cos_t, sin_t;
};

}  // namespace lowbit
