// CUDA token merging. Not implemented yet: every entry point validates its
// arguments and then answers Code::kUnsupported, so a device tensor never
// gets a wrong answer. Callers can move the tensors to the host and use the
// CPU back end (tokensieve::cpu::bipartite_match / merge / contextual_merge).
#include <string>

#include "tokensieve/merge.h"

namespace tokensieve {
namespace cuda {
namespace {

Status not_yet(const char* op) {
  return Status(Code::kUnsupported, std::string("tokensieve: the CUDA ") + op +
                                        " kernel is not implemented yet; move the tensors to the CPU "
                                        "(tensor.to('cpu')) and call it there");
}

}  // namespace

Status bipartite_match(const BipartiteMatchParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  return not_yet("bipartiteSoftMatch");
}

Status merge(const MergeParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  return not_yet("merge");
}

Status contextual_merge(const ContextualMergeParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  return not_yet("contextualMerge");
}

}  // namespace cuda
}  // namespace tokensieve
