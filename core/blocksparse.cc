// Parameter checks of the blocksparse family, shared by the CPU and CUDA
// back ends. Host-resident mask lists and permutations are checked entry by
// entry here; device-resident ones cannot be read without a round trip, so
// the CUDA kernels skip out-of-range entries instead (memory-safe, and
// BlockMask in lib/blockmask.ts validates every list when it is built).
#include <cmath>
#include <string>
#include <vector>

#include "core/check.h"
#include "tokensieve/blocksparse.h"

namespace tokensieve {

using namespace check;

namespace {

std::string s(int64_t v) { return std::to_string(v); }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// q [B, Hq, N, D] and k (and v) [B, Hkv, Nk, D] with Hq % Hkv == 0.
Status validate_qk(const TensorView& q, const TensorView& k, const TensorView* v) {
  TS_RETURN_IF_ERROR(expect_float_input(q, "q", 4, "[B, H, N, D]"));
  TS_RETURN_IF_ERROR(expect_float_input(k, "k", 4, "[B, Hkv, Nk, D]"));
  TS_RETURN_IF_ERROR(expect_same_device(q, "q", k, "k"));
  if (k.dtype != q.dtype)
    return err(Code::kDType, std::string("expected k to have the dtype of q (") + dtype_name(q.dtype) + ") but got " +
                                 dtype_name(k.dtype));
  if (k.shape[0] != q.shape[0] || k.shape[3] != q.shape[3])
    return err(Code::kShape, "expected k [B, Hkv, Nk, D] with q's B and D (q " + shape_str(q) + ") but got " +
                                 shape_str(k));
  if (q.shape[1] % k.shape[1] != 0)
    return err(Code::kShape, "expected q's heads (" + s(q.shape[1]) + ") to be a multiple of k's heads (" +
                                 s(k.shape[1]) + ", grouped-query attention)");
  if (v != nullptr) {
    TS_RETURN_IF_ERROR(expect_float_input(*v, "v", 4, "[B, Hkv, Nk, D]"));
    TS_RETURN_IF_ERROR(expect_same_device(q, "q", *v, "v"));
    if (v->dtype != q.dtype)
      return err(Code::kDType, std::string("expected v to have the dtype of q (") + dtype_name(q.dtype) +
                                   ") but got " + dtype_name(v->dtype));
    for (int i = 0; i < 4; ++i)
      if (v->shape[i] != k.shape[i])
        return err(Code::kShape, "expected v of k's shape " + shape_str(k) + " but got " + shape_str(*v));
  }
  return Status::Ok();
}

// An output of logical `dims`, inner dimension contiguous (layouts are
// strided views), on ref's device.
Status validate_strided_out(const TensorView& t, const char* name, DType want, std::initializer_list<int64_t> dims,
                            const TensorView& ref) {
  TS_RETURN_IF_ERROR(expect_dtype(t, name, want));
  TS_RETURN_IF_ERROR(expect_shape(t, name, dims));
  TS_RETURN_IF_ERROR(expect_inner_contiguous(t, name));
  return expect_same_device(ref, "q", t, name);
}

// One list of the mask: counts [Bm, Hm, nQ] and indices [Bm, Hm, nQ, L].
Status validate_list(const TensorView& counts, const TensorView& idx, const char* cname, const char* iname,
                     int64_t B, int64_t H, int64_t nQ, int64_t nK, const TensorView& ref) {
  TS_RETURN_IF_ERROR(expect_rank(counts, cname, 3, "[B|1, H|1, nQ]"));
  TS_RETURN_IF_ERROR(expect_dtype(counts, cname, DType::kI32));
  TS_RETURN_IF_ERROR(expect_contiguous(counts, cname));
  TS_RETURN_IF_ERROR(expect_same_device(ref, "q", counts, cname));
  if ((counts.shape[0] != 1 && counts.shape[0] != B) || (counts.shape[1] != 1 && counts.shape[1] != H) ||
      counts.shape[2] != nQ)
    return err(Code::kShape, std::string("expected ") + cname + " of shape [1|" + s(B) + ", 1|" + s(H) + ", " + s(nQ) +
                                 "] but got " + shape_str(counts));
  if (idx.ndim != 4 || idx.shape[0] != counts.shape[0] || idx.shape[1] != counts.shape[1] || idx.shape[2] != nQ ||
      idx.shape[3] < 1)
    return err(Code::kShape, std::string("expected ") + iname + " of shape [" + s(counts.shape[0]) + ", " +
                                 s(counts.shape[1]) + ", " + s(nQ) + ", L >= 1] but got " + shape_str(idx));
  TS_RETURN_IF_ERROR(expect_dtype(idx, iname, DType::kI32));
  TS_RETURN_IF_ERROR(expect_contiguous(idx, iname));
  TS_RETURN_IF_ERROR(expect_same_device(ref, "q", idx, iname));
  if (!counts.on_host()) return Status::Ok();
  const int64_t rows = counts.numel(), L = idx.shape[3];
  const int32_t* c = counts.ptr<int32_t>();
  const int32_t* ix = idx.ptr<int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    if (c[r] < 0 || c[r] > L)
      return err(Code::kRange, std::string("expected ") + cname + " in [0, " + s(L) + "] but got " + s(c[r]) +
                                   " at row " + s(r));
    for (int64_t t = 0; t < c[r]; ++t) {
      const int32_t j = ix[r * L + t];
      if (j < 0 || j >= nK)
        return err(Code::kRange, std::string("expected ") + iname + " in [0, " + s(nK) + ") but got " + s(j) +
                                     " at row " + s(r) + ", entry " + s(t));
      if (t > 0 && j <= ix[r * L + t - 1])
        return err(Code::kRange, std::string("expected ") + iname + " sorted ascending without duplicates but row " +
                                     s(r) + " has " + s(ix[r * L + t - 1]) + " then " + s(j));
    }
  }
  return Status::Ok();
}

Status validate_perm(const TensorView& perm, int64_t H, int64_t N, const TensorView& ref, const char* ref_name) {
  TS_RETURN_IF_ERROR(expect_exact(perm, "perm", DType::kI32, {H, N}, ref, ref_name, false));
  if (!perm.on_host()) return Status::Ok();
  const int32_t* pm = perm.ptr<int32_t>();
  std::vector<uint8_t> seen(static_cast<size_t>(N));
  for (int64_t h = 0; h < H; ++h) {
    std::fill(seen.begin(), seen.end(), 0);
    for (int64_t p = 0; p < N; ++p) {
      const int32_t t = pm[h * N + p];
      if (t < 0 || t >= N || seen[t])
        return err(Code::kRange, "expected perm[" + s(h) + "] to be a permutation of 0.." + s(N - 1) + " but entry " +
                                     s(p) + " is " + s(t) + (t >= 0 && t < N ? " (repeated)" : ""));
      seen[t] = 1;
    }
  }
  return Status::Ok();
}

Status validate_block(int64_t b, const char* name) {
  if (b < 1 || b > (int64_t{1} << 20))
    return err(Code::kRange, std::string("expected ") + name + " in [1, 1048576] but got " + s(b));
  return Status::Ok();
}

}  // namespace

Status validate(const BlockSparseAttentionParams& p) {
  TS_RETURN_IF_ERROR(validate_qk(p.q, p.k, &p.v));
  const int64_t B = p.q.shape[0], H = p.q.shape[1], N = p.q.shape[2], D = p.q.shape[3], Nk = p.k.shape[2];
  if (p.precision != BlockSparsePrecision::kNative && p.precision != BlockSparsePrecision::kF16 &&
      p.precision != BlockSparsePrecision::kBF16 && p.precision != BlockSparsePrecision::kInt8)
    return err(Code::kArg, "unknown precision " + s(static_cast<int>(p.precision)));
  if (!std::isfinite(p.scale)) return err(Code::kRange, "expected a finite scale");
  TS_RETURN_IF_ERROR(validate_block(p.mask.block_q, "blockQ"));
  TS_RETURN_IF_ERROR(validate_block(p.mask.block_k, "blockK"));
  if (!p.mask.dense) {
    const int64_t nQ = ceil_div(N, p.mask.block_q), nK = ceil_div(Nk, p.mask.block_k);
    TS_RETURN_IF_ERROR(validate_list(p.mask.num_blocks, p.mask.indices, "kvNumBlocks", "kvIndices", B, H, nQ, nK, p.q));
    if (p.mask.full_num_blocks.data != nullptr || p.mask.full_indices.data != nullptr) {
      TS_RETURN_IF_ERROR(validate_list(p.mask.full_num_blocks, p.mask.full_indices, "fullKvNumBlocks",
                                       "fullKvIndices", B, H, nQ, nK, p.q));
      const TensorView &pc = p.mask.num_blocks, &fc = p.mask.full_num_blocks;
      if (fc.shape[0] != pc.shape[0] || fc.shape[1] != pc.shape[1])
        return err(Code::kShape, "expected fullKvNumBlocks to broadcast like kvNumBlocks " + shape_str(pc) +
                                     " but got " + shape_str(fc));
      if (pc.on_host()) {  // the two lists of a row are disjoint
        const int64_t rows = pc.numel(), L = p.mask.indices.shape[3], Lf = p.mask.full_indices.shape[3];
        const int32_t *c = pc.ptr<int32_t>(), *f = fc.ptr<int32_t>();
        const int32_t *ix = p.mask.indices.ptr<int32_t>(), *fx = p.mask.full_indices.ptr<int32_t>();
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t a = 0, b = 0; a < c[r] && b < f[r];) {
            if (ix[r * L + a] == fx[r * Lf + b])
              return err(Code::kRange, "expected kvIndices and fullKvIndices to be disjoint but row " + s(r) +
                                           " lists block " + s(ix[r * L + a]) + " in both");
            if (ix[r * L + a] < fx[r * Lf + b]) ++a; else ++b;
          }
      }
    }
  }
  if (p.perm.data != nullptr) {
    if (Nk != N) return err(Code::kShape, "a permutation needs as many keys as queries but got N " + s(N) + ", Nk " + s(Nk));
    TS_RETURN_IF_ERROR(validate_perm(p.perm, H, N, p.q, "q"));
  }
  TS_RETURN_IF_ERROR(validate_strided_out(p.out, "out", p.q.dtype, {B, H, N, D}, p.q));
  if (p.lse.data != nullptr) TS_RETURN_IF_ERROR(expect_exact(p.lse, "lse", DType::kF32, {B, H, N}, p.q, "q", false));
  return Status::Ok();
}

Status validate(const BlockAttentionMassParams& p) {
  TS_RETURN_IF_ERROR(validate_qk(p.q, p.k, nullptr));
  TS_RETURN_IF_ERROR(validate_block(p.block_q, "blockQ"));
  TS_RETURN_IF_ERROR(validate_block(p.block_k, "blockK"));
  if (!std::isfinite(p.scale)) return err(Code::kRange, "expected a finite scale");
  const int64_t B = p.q.shape[0], H = p.q.shape[1], N = p.q.shape[2], Nk = p.k.shape[2];
  if (p.query_rows != nullptr) {
    if (p.num_query_rows < 1) return err(Code::kRange, "expected at least one query row");
    for (int64_t i = 0; i < p.num_query_rows; ++i) {
      const int32_t r = p.query_rows[i];
      if (r < 0 || r >= N || (i > 0 && r <= p.query_rows[i - 1]))
        return err(Code::kRange, "expected query rows sorted ascending, distinct, in [0, " + s(N) + ") but entry " +
                                     s(i) + " is " + s(r));
    }
  }
  return expect_exact(p.out, "out", DType::kF32, {B, H, ceil_div(N, p.block_q), ceil_div(Nk, p.block_k)}, p.q, "q",
                      false);
}

Status validate(const BlockPoolParams& p) {
  TS_RETURN_IF_ERROR(expect_float_input(p.x, "x", 4, "[B, H, N, D]"));
  TS_RETURN_IF_ERROR(validate_block(p.block, "block"));
  const int64_t B = p.x.shape[0], H = p.x.shape[1], N = p.x.shape[2], D = p.x.shape[3], nB = ceil_div(N, p.block);
  TS_RETURN_IF_ERROR(expect_exact(p.mean, "mean", DType::kF32, {B, H, nB, D}, p.x, "x", false));
  return expect_exact(p.self_sim, "selfSim", DType::kF32, {B, H, nB}, p.x, "x", false);
}

Status validate(const ApplyReorderParams& p) {
  TS_RETURN_IF_ERROR(expect_rank(p.x, "x", 4, "[B, H, N, D]"));
  TS_RETURN_IF_ERROR(expect_inner_contiguous(p.x, "x"));
  const int64_t B = p.x.shape[0], H = p.x.shape[1], N = p.x.shape[2], D = p.x.shape[3];
  TS_RETURN_IF_ERROR(validate_perm(p.perm, H, N, p.x, "x"));
  TS_RETURN_IF_ERROR(expect_dtype(p.out, "out", p.x.dtype));
  TS_RETURN_IF_ERROR(expect_shape(p.out, "out", {B, H, N, D}));
  TS_RETURN_IF_ERROR(expect_inner_contiguous(p.out, "out"));
  return expect_same_device(p.x, "x", p.out, "out");
}

}  // namespace tokensieve
