// The CPU back end's a·bᵀ driver: every pair score, similarity and distance
// of the merge, diversity and coverage families goes through it.
//
// Blocked as a GEMM (BLIS's loop order): the output is cut into tasks of
// kGemmTile × kGemmTile results; inside a task the depth runs in blocks of
// kGemmDepth channels, and for each block every 48-column slice of b
// (96 KiB, L2) meets every row group of a (the task's a block, 192 KiB, in
// L2), through isa().gemm_tile_triple's register tile (three 6 × 16 ymm
// tiles on AVX2; 8 × 48 on AVX-512: 24 zmm accumulators, each broadcast a
// value feeding three FMAs; k-center 576×4096 and 2880×1024 and MMTok 3–5%
// faster than the 8 × 32 tile, interleaved A/B). The partial sums live
// in the task's tile buffer and each element continues one sequential FMA
// chain over the channels, so the result is bit-identical to an unblocked
// chain: to qk_row_panels and to the CUDA kernels that run the same chains.
//
// The caller gets each finished tile (fn(i0, i1, j0, j1, tile), tile[(i -
// i0) * kGemmTile + (j - j0)] = a_i · b_j) to reduce or store, so a fused
// epilogue (row max/argmax, nearest neighbour, distances) never writes the
// full product to memory.
//
// gemm_tiles_bf16 runs the same blocking on bf16_dot()'s tile (vdpbf16ps,
// where the CPU has AVX512_BF16) for operands that are bf16 values anyway
// (ToMe's bf16 scores): a channel pair per 32-bit lane, twice the
// multiply-adds per instruction.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "cpu/host_pool.h"
#include "cpu/isa.h"
#include "cpu/thread_pool.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace cpu {

// Results per task side: 6 panels of 16 columns, 16 groups of 6 rows.
constexpr int64_t kGemmTile = 96;
// Channels per depth block. 512 rather than 256 (half the partial-sum
// round trips and tile calls): k-center 576×4096 and MMTok 3–5% faster, ToMe
// 577×1024 unchanged (Zen 5, interleaved A/B); the 32-column slice of b then
// streams from L2, which the zmm tile's two loads per 16 FMAs allow.
constexpr int64_t kGemmDepth = 512;

inline int64_t round_up16(int64_t n) { return (n + kColTile - 1) / kColTile * kColTile; }

// Packs at least this large are written with non-temporal stores
// (isa().pack_panel_stream, normalise_panel's `stream`): they leave the
// cache before the product reads them, and plain stores would first read
// each line back from memory (Zen 5: k-center 576×4096 and 576×1024, 9.4
// and 2.4 MB of panels, ~10% faster; ToMe 577×1024, 1.2 MB, ~5%).
constexpr int64_t kStreamPackBytes = int64_t{1} << 20;

// Operand a of gemm_tiles: m rows of K floats, either row-major (row i at
// data + i * ld) or packed like b as 16-row panels [ceil(m/16)][K][16].
struct GemmA {
  const float* data;
  int64_t ld;  // row stride when !panels
  bool panels;
};

// The first rows of the row blocks of an ma-row product (starts.back() ==
// ma): kGemmTile rows each, except with `balance` where the product has few
// tasks (row blocks × tasks_per_row_block) per thread. There the rows are
// cut into rb nearly equal blocks (on tile-row boundaries), rb raised until
// every thread gets the same number of tasks: ToMe's 289 × 288 step had 9
// tasks of 96 rows (and 3 of one row) on 2 threads, one thread idle for a
// ninth of the product; it now has 12 of about 72 rows, 6 per thread.
inline std::vector<int64_t> gemm_row_blocks(int64_t ma, int64_t tasks_per_row_block, bool balance) {
  const int64_t threads = num_threads();
  const int64_t g = isa().tile_rows;
  std::vector<int64_t> starts;
  auto cut = [&](int64_t rb, bool balanced) {
    starts.assign(static_cast<size_t>(rb + 1), ma);
    for (int64_t I = 0; I < rb; ++I)
      starts[static_cast<size_t>(I)] = balanced ? std::min(ma, (I * ma / rb + g / 2) / g * g) : std::min(ma, I * kGemmTile);
    for (int64_t I = 0; I < rb; ++I)
      if (starts[static_cast<size_t>(I + 1)] - starts[static_cast<size_t>(I)] > kGemmTile) return false;
    return true;
  };
  const int64_t rb0 = (ma + kGemmTile - 1) / kGemmTile;
  bool balanced = false;
  if (balance && threads > 1 && rb0 * tasks_per_row_block < 8 * threads)
    for (int64_t rb = rb0; rb < rb0 + threads && rb <= ma && !balanced; ++rb)
      balanced = (rb * tasks_per_row_block) % threads == 0 && cut(rb, true);
  if (!balanced) cut(rb0, false);
  return starts;
}

namespace detail {

// gemm_tiles over f32 operands or, with kPairs, over bf16 channel pairs
// (bf16_dot()'s tile; a row-major, not upper). K counts depth steps
// (channels, or pairs), panel_stride is the distance between b's panels
// (and a's), both in 4-byte elements: a pair is one uint32_t where an f32
// is one float, so the indexing is the same.
template <bool kPairs, class Fn>
void gemm_tiles_impl(GemmA a, int64_t ma, const float* b, int64_t panel_stride, int64_t nb, int64_t K, bool upper,
                     bool parallel, Fn&& fn) {
  const int64_t cb = (nb + kGemmTile - 1) / kGemmTile;
  const IsaKernels& isa_k = isa();
  const Bf16DotKernels* dot = kPairs ? bf16_dot() : nullptr;
  const int tile_rows = kPairs ? 8 : isa_k.tile_rows;
  // starts[I]: the first row of row block I; starts.back() == ma.
  const std::vector<int64_t> starts = gemm_row_blocks(ma, cb, !upper && parallel);
  std::vector<std::pair<int32_t, int32_t>> blocks;
  for (size_t I = 0; I + 1 < starts.size(); ++I)
    if (starts[I + 1] > starts[I])
      for (int64_t J = upper ? static_cast<int64_t>(I) : 0; J < cb; ++J)
        blocks.emplace_back(static_cast<int32_t>(I), static_cast<int32_t>(J));
  auto run = [&](int64_t t) {
    const size_t I = static_cast<size_t>(blocks[static_cast<size_t>(t)].first);
    const int64_t i0 = starts[I], i1 = starts[I + 1];
    const int64_t j0 = blocks[static_cast<size_t>(t)].second * kGemmTile;
    const int64_t j1 = std::min(nb, j0 + kGemmTile);
    // Heap, not stack: 36 KiB per task, reused by the thread across calls.
    thread_local std::unique_ptr<float[]> tile_buf(new float[kGemmTile * kGemmTile]);
    float* tile = tile_buf.get();
    for (int64_t d0 = 0; d0 < K; d0 += kGemmDepth) {
      const int64_t depth = std::min(kGemmDepth, K - d0);
      // Three panels (48 columns) per tile call where the block has them
      // (gemm_tile_triple), else two (gemm_tile_wide) or one.
      for (int64_t c0 = j0; c0 < j1;) {
        const int64_t np = std::min<int64_t>(3, (j1 - c0 + kColTile - 1) / kColTile);
        const float* panel = b + (c0 / kColTile) * panel_stride + d0 * kColTile;
        // Row groups of tile_rows; with packed a a group stays inside its
        // 16-row panel (6 + 6 + 4, or 8 + 8 on the zmm tile).
        for (int64_t r0 = i0; r0 < i1;) {
          const int64_t limit = a.panels ? std::min(i1, (r0 / kColTile + 1) * kColTile) : i1;
          const int rows = static_cast<int>(std::min<int64_t>(tile_rows, limit - r0));
          // Leading panels wholly below the diagonal are never read.
          int64_t skip = 0;
          if (upper)
            while (skip < np && r0 > c0 + (skip + 1) * kColTile - 1) ++skip;
          if (skip < np) {
            const float* ap = a.panels ? a.data + (r0 / kColTile) * panel_stride + d0 * kColTile + r0 % kColTile
                                       : a.data + r0 * a.ld + d0;
            const int64_t a_row = a.panels ? 1 : a.ld, a_depth = a.panels ? kColTile : 1;
            const float* pp = panel + skip * panel_stride;
            float* part = tile + (r0 - i0) * kGemmTile + (c0 - j0) + skip * kColTile;
            if constexpr (kPairs) {
              dot->gemm_tile(reinterpret_cast<const uint32_t*>(ap), a_row, rows, reinterpret_cast<const uint32_t*>(pp),
                             panel_stride, static_cast<int>(np - skip), depth, part, kGemmTile, d0 > 0);
            } else {
              switch (np - skip) {
                case 3:
                  isa_k.gemm_tile_triple(ap, a_row, a_depth, rows, pp, panel_stride, depth, part, kGemmTile, d0 > 0);
                  break;
                case 2:
                  isa_k.gemm_tile_wide(ap, a_row, a_depth, rows, pp, panel_stride, depth, part, kGemmTile, d0 > 0);
                  break;
                default:
                  isa_k.gemm_tile(ap, a_row, a_depth, rows, pp, depth, part, kGemmTile, d0 > 0);
              }
            }
          }
          r0 += rows;
        }
        c0 += np * kColTile;
      }
    }
    fn(i0, i1, j0, j1, static_cast<const float*>(tile));
  };
  const int64_t tasks = static_cast<int64_t>(blocks.size());
  if (parallel && tasks > 1)
    parallel_for(tasks, run);
  else
    for (int64_t t = 0; t < tasks; ++t) run(t);
}

}  // namespace detail

// Calls fn(i0, i1, j0, j1, tile) for every block (at most kGemmTile square) of
// a·bᵀ (a: ma rows; b: nb columns packed as panels [ceil(nb/16)][K][16], zero
// padded). With `upper` (a == b, square) only blocks on or above the diagonal
// are computed, and in a diagonal block only the entries j >= i are valid.
//
// Row blocks: gemm_row_blocks(ma, cb, balance = rectangular and parallel).
template <class Fn>
void gemm_tiles(GemmA a, int64_t ma, const float* b, int64_t nb, int64_t K, bool upper, bool parallel, Fn&& fn) {
  detail::gemm_tiles_impl<false>(a, ma, b, K * kColTile, nb, K, upper, parallel, std::forward<Fn>(fn));
}

// gemm_tiles on bf16_dot()'s tile (which must be non-null) for operands
// rounded to bf16 and held as channel pairs: a row-major, row i's
// ceil(K/2) pairs at a + i * lda; b's panels [ceil(K/2)][16] pairs,
// panel_stride apart (Bf16DotKernels::panel_to_pairs). The same tiles, each
// element the bf16 products' sum in pair order.
template <class Fn>
void gemm_tiles_bf16(const uint32_t* a, int64_t lda, int64_t ma, const uint32_t* b, int64_t panel_stride, int64_t nb,
                     int64_t K, bool parallel, Fn&& fn) {
  detail::gemm_tiles_impl<true>(GemmA{reinterpret_cast<const float*>(a), lda, false}, ma,
                                reinterpret_cast<const float*>(b), panel_stride, nb, (K + 1) / 2, /*upper=*/false,
                                parallel, std::forward<Fn>(fn));
}

// out[i * ldo + j] = a_i · b_j for rows a (row-major [ma, C] or panels) and
// columns b packed as panels (nb columns). With `upper` (a == b), only j >= i
// is computed and mirrored.
void gemm_nt(GemmA a, int64_t ma, const float* b, int64_t nb, int64_t C, float* out, int64_t ldo, bool upper,
             bool parallel);

// Grow-only f32 scratch owned by one thread: large inputs are packed into it
// call after call without fresh pages (a new 10 MB allocation costs more in
// page faults than the packing itself). A buffer up to kKeepBytes stays
// with the thread between calls (enough for 1,024 tokens x 4,096 channels);
// a larger one goes back to the host cache (cpu/host_pool.h) at the end of
// the call that needed it, and the next call of the same size class, on
// any thread, takes it back warm: k-center 2880×4096 (47 MB of panels and a
// 33 MB distance matrix) spent a third of each call in page faults when
// these were freed after every call (Zen 5 VM, ~11 µs per 4 KiB page).
// 64-byte aligned (packed panels take non-temporal stores). Throws
// std::bad_alloc when out of memory (ERR_RANGE at the binding).
class Scratch {
 public:
  static constexpr size_t kKeepBytes = size_t{16} << 20;
  float* get(int64_t n) {
    const size_t want = static_cast<size_t>(n) * sizeof(float);
    if (want > bytes_ || block_ == nullptr) {
      block_.reset();  // back to the cache first: a same-class request may take it
      block_ = host_block(std::max<size_t>(want, sizeof(float)));
      if (block_ == nullptr) throw std::bad_alloc();
      bytes_ = want;
    }
    return reinterpret_cast<float*>(block_.get());
  }
  // Returns the buffer to the host cache when it grew past kKeepBytes.
  void trim() {
    if (bytes_ > kKeepBytes) {
      block_.reset();
      bytes_ = 0;
    }
  }

 private:
  std::shared_ptr<char> block_;
  size_t bytes_ = 0;
};

}  // namespace cpu
}  // namespace tokensieve
