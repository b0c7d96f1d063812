// Building blocks of the validate() functions (cpu/validate.cc defines them):
// each check returns a Status naming the tensor and what was expected. Any
// op family's validate() uses these rather than its own copies, so every
// entry point words its errors the same way.
#pragma once

#include <initializer_list>
#include <string>

#include "tokensieve/tensor.h"

namespace tokensieve {
namespace check {

std::string shape_str(const TensorView& t);  // "[2, 3, 5]"
// Rank `ndim` (described as `dims`, e.g. "[B, N, C]"), every dim >= 1, data unless empty.
Status expect_rank(const TensorView& t, const char* name, int ndim, const char* dims);
Status expect_float(const TensorView& t, const char* name);  // f32, f16 or bf16
Status expect_dtype(const TensorView& t, const char* name, DType want);
Status expect_inner_contiguous(const TensorView& t, const char* name);  // stride(last) == 1
Status expect_contiguous(const TensorView& t, const char* name);
// Exactly `dims`, and data unless empty.
Status expect_shape(const TensorView& t, const char* name, std::initializer_list<int64_t> dims);
// b on a's device.
Status expect_same_device(const TensorView& a, const char* an, const TensorView& b, const char* bn);

}  // namespace check
}  // namespace tokensieve
