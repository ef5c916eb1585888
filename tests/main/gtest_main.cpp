// The test programs' main: OpenBLAS's kernels chosen as the lowbit CLI chooses them (kernels/gemm.h),
// then every test.
#include <gtest/gtest.h>

#include "lowbit/kernels/gemm.h"

int main(int argc, char** argv) {
  lowbit::select_blas_kernels(argv);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
