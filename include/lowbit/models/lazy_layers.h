#pragma once
// The layers of a float model loaded for the layer-by-layer pipeline (load_causal_lm_layerwise):
// each layer's linear weights are read from the checkpoint as float32 when the layer is first used
// (their pages in the map then released) and freed when the pipeline is done with the layer, so a
// pass over the model holds one layer's weights whatever the model's size.
#include <optional>
#include <string>
#include <vector>

#include "lowbit/core/error.h"
#include "lowbit/formats/weights.h"

namespace lowbit {

class LazyLayers {
 public:
  LazyLayers() = default;
  // lazy: every layer starts unloaded and is read from `store`; otherwise all count as loaded.
  LazyLayers(int layers, const WeightStore& store, bool lazy)
      : state_(size_t(layers), lazy ? State::lazy : State::loaded) {
    if (lazy) {
      store_.emplace(store);
      store_->set_packed(false);  // float32 copies, for the pipeline to read and replace
    }
  }

  // Before layer l runs or is read: load(store) reads its linear weights the first time and returns
  // their names, whose pages in the map are then released. A released layer fails, named "<prefix>l".
  template <class Load>
  void use(int l, const char* prefix, Load&& load) {
    switch (state_.at(size_t(l))) {
      case State::loaded: return;
      case State::released:
        fail("{}{}: released after the layer-by-layer pipeline passed it; it cannot run again", prefix, l);
      case State::lazy:
        for (const std::string& t : load(*store_)) store_->store().release(t);
        state_[size_t(l)] = State::loaded;
    }
  }

  // Whether layer l's weights came from the lazy store: then the caller frees them, and the layer
  // is marked released.
  bool release(int l) {
    if (!store_ || l < 0 || size_t(l) >= state_.size()) return false;
    state_[size_t(l)] = State::released;
    return true;
  }

 private:
  enum class State : uint8_t { loaded, lazy, released };
  std::vector<State> state_;
  std::optional<WeightStore> store_;
};

}  // namespace lowbit
