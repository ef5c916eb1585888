#pragma once
// Switches read from the environment (LOWBIT_LAYOUT, LOWBIT_ACTIVATIONS, LOWBIT_FLOAT_WEIGHTS, ...).
#include <cstdlib>
#include <string_view>

#include "lowbit/core/error.h"

namespace lowbit {

// Whether the environment variable `name` picks `on` (also when unset or empty) rather than `off`;
// any other value is an error that names both.
inline bool env_switch(const char* name, std::string_view on, std::string_view off) {
  const char* v = std::getenv(name);
  if (!v || !*v || v == on) return true;
  if (v == off) return false;
  fail("{}={}: expected {} or {}", name, v, on, off);
}

}  // namespace lowbit
