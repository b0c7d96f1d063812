#include "tokensieve/runtime.h"

namespace tokensieve {

BuildInfo build_info() {
  BuildInfo info;
  info.version = TOKENSIEVE_VERSION;
  info.compiler = TOKENSIEVE_COMPILER;
  info.build_type = TOKENSIEVE_BUILD_TYPE;
  info.cuda_compiled_version = cuda::compiled_version();
  info.cuda_compiled = info.cuda_compiled_version != 0;
  info.cuda_architectures = cuda::compiled_architectures();
  info.cpu_isas = {"baseline", "avx2", "avx512", "avx512-bf16", "avx512-vnni", "avx512-bf16-vnni"};
  return info;
}

}  // namespace tokensieve
