#pragma once
// The weights of a checkpoint as the models see them: logical tensors, float or quantized.
//
// A quantized checkpoint (written by `lowbit quantize`) stores each quantized weight W as the parts
// of its format ("<name>.q", "<name>.scale", ...) and describes it in the safetensors __metadata__
// under "lowbit.quant.<name>" as JSON: {"format", "bits", "group", "double_quant", "iterations",
// "shape": the stored [rows, cols], "transposed": true when the weight is stored [in, out] (GPT-2's
// Conv1D) and was quantized as its transpose so that groups run along the inputs, "dtype": original
// dtype, the quantization error "mse", "sqnr_db", "max_abs_err", and for schemes that quantize
// activations with a calibrated scale (w8a8) "act_scale": the input's int8 step}. Everything there is validated before use.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/formats/format.h"
#include "lowbit/io/safetensors.h"
#include "lowbit/kernels/linear.h"

namespace lowbit {

inline constexpr std::string_view kQuantMetaPrefix = "lowbit.quant.";

struct QuantError {
  double mse = 0, sqnr_db = 0, max_abs = 0;
};
QuantError measure_quant_error(const float* original, const float* reconstructed, size_t n);

struct LogicalTensor {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::F32;   // the stored dtype of a float tensor; the original dtype of a quantized one
  uint64_t bytes = 0;         // stored bytes, all parts included
  std::string format;         // empty for a float tensor
  std::string scheme;         // the scheme it was quantized with ("int8-dyn" runs on int8 kernels)
  QuantSpec spec;             // when quantized
  bool transposed = false;    // stored [in, out] (GPT-2 Conv1D): quantized as [out, in], groups along inputs
  float act_scale = 0;        // "w8a8": the calibrated int8 scale of the layer's input (metadata "act_scale")
  std::optional<QuantError> error;
  int64_t numel() const;
};

class WeightStore {
 public:
  explicit WeightStore(const std::filesystem::path& dir);  // opens the TensorStore, validates quant metadata

  const TensorStore& store() const { return *store_; }
  const std::filesystem::path& dir() const { return store_->dir(); }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  bool quantized() const { return n_quantized_ > 0; }
  std::vector<LogicalTensor> tensors() const;  // sorted by name
  const LogicalTensor& get(const std::string& name) const;

  // A float tensor converted, or a quantized one dequantized, to float32; the shape is checked
  // (an empty `shape` accepts any). Errors name the file and the tensor.
  std::vector<float> load_f32(const std::string& name, const std::vector<int64_t>& shape = {}) const;
  // The stored parts of a quantized tensor.
  // (with_codes false: every part but "q", for a caller that reads the codes where they lie.)
  QuantizedTensor load_quantized(const std::string& name, bool with_codes = true) const;

  // A linear layer's weight as [out][in] for the kernels: int8 codes and row scales when it was
  // quantized with "int8-dyn"; packed (computed on where it is stored, in the mapped file) when it
  // is F32/F16/BF16 or in a 4- or 8-bit table * scale + offset format (int8, int4, nf4, ...);
  // float32, dequantized, otherwise. stored_in_out: the checkpoint stores it [in][out] (GPT-2's
  // Conv1D); `out_in` is the expected [out, in]. The packed weights keep the files mapped.
  // set_packed(false): always float32 copies (for algorithms that read or replace weights).
  void set_packed(bool on) { packed_ = on; }
  LinearWeights load_linear(const std::string& name, const std::vector<int64_t>& out_in, bool stored_in_out = false) const;

 private:
  LinearWeights load_linear_packed(const LogicalTensor& t, const std::vector<int64_t>& out_in) const;

  std::shared_ptr<const TensorStore> store_;  // shared with the packed weights that point into its maps
  bool packed_ = true;
  std::map<std::string, LogicalTensor> tensors_;
  std::map<std::string, std::vector<std::string>> parts_;  // quantized name -> its part tensor names
  int n_quantized_ = 0;
};

}  // namespace lowbit
