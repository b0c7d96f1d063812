// Placeholder until the CUDA quantization kernels land.
#include "cuda/common.cuh"
#include "tokensieve/quantize.h"

namespace tokensieve {
namespace cuda {

Status quantize(const QuantizeParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  return Status(Code::kUnsupported, "quantize: not implemented on CUDA yet");
}

Status dequantize(const DequantizeParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  return Status(Code::kUnsupported, "dequantize: not implemented on CUDA yet");
}

}  // namespace cuda
}  // namespace tokensieve
