// Building blocks of the validate() functions (core/check.cc defines them):
// each check returns a Status naming the tensor and what was expected. Every
// family's validate() (core/<family>.cc, called first by every cpu:: and
// cuda:: entry point) uses these rather than its own copies, so every entry
// point words its errors the same way.
#pragma once

#include <initializer_list>
#include <string>
#include <utility>

#include "tokensieve/tensor.h"

namespace tokensieve {
namespace check {

inline Status err(Code c, std::string m) { return Status(c, std::move(m)); }

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

// A float input of rank `ndim` whose last dimension is contiguous:
// expect_rank, expect_float, expect_inner_contiguous.
Status expect_float_input(const TensorView& t, const char* name, int ndim, const char* dims);
// A contiguous tensor of exactly `dims` and dtype `want` on ref's device (an
// output, or an optional mask); with `optional`, data null means "none".
Status expect_exact(const TensorView& t, const char* name, DType want, std::initializer_list<int64_t> dims,
                    const TensorView& ref, const char* ref_name, bool optional);

}  // namespace check
}  // namespace tokensieve
