// CPU greedy maximum coverage and MMTok's coverage matrix; the parameter
// checks are core/coverage.cc's, the blocked GEMM cpu/rows.cc's.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "cpu/rows.h"
#include "cpu/thread_pool.h"
#include "tokensieve/coverage.h"

namespace tokensieve {
namespace cpu {

namespace {
// The transposed coverage of max_coverage's threaded selection.
thread_local Scratch tl_cov_t;
}  // namespace

Status max_coverage(const MaxCoverageParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.coverage.on_host()) return Status(Code::kDevice, "cpu::max_coverage needs host tensors");
  const int64_t B = p.coverage.shape[0], R = p.coverage.shape[1], N = p.coverage.shape[2], k = p.k;
  const int64_t es = static_cast<int64_t>(dtype_size(p.coverage.dtype));
  // f32 rows with unit stride are read in place (ldc: their row stride);
  // other layouts and dtypes are converted into a [R, N] copy.
  const bool in_place = p.coverage.dtype == DType::kF32 && p.coverage.strides[2] == 1;
  const int64_t ldc = in_place ? p.coverage.strides[1] : N;
  struct Trim {
    ~Trim() { tl_cov_t.trim(); }
  } trim;
  return for_units(B, R * N * k, [&](int64_t b, bool parallel) -> Status {
    std::vector<float> copy(in_place ? 0 : static_cast<size_t>(R * N));
    const float* cov = in_place ? p.coverage.ptr<float>() + b * p.coverage.strides[0] : copy.data();  // [R, ldc]
    // With the selection on all threads, the rows are also copied
    // transposed ([N, R], thread scratch), so that the rows a pick raises
    // are found in one contiguous column instead of R strided loads (MMTok
    // 592 × 576: those loads were the step's serial part).
    const bool threaded = parallel && num_threads() > 1 && N > 32;
    float* cov_t = threaded ? tl_cov_t.get(N * R) : nullptr;  // [N, R]
    const int64_t rows_per_task = 64, row_tasks = (R + rows_per_task - 1) / rows_per_task;
    std::vector<int64_t> bad(static_cast<size_t>(row_tasks), -1);
    auto load_rows = [&](int64_t task) {
      const int64_t r0 = task * rows_per_task, r1 = std::min(R, r0 + rows_per_task);
      for (int64_t r = r0; r < r1; ++r) {
        const float* row = cov + r * ldc;
        if (!in_place) {
          const char* src = static_cast<const char*>(p.coverage.data) + (b * p.coverage.strides[0] + r * p.coverage.strides[1]) * es;
          isa().to_f32(src, p.coverage.dtype, N, copy.data() + r * N);
        }
        if (!isa().all_finite(row, N)) {
          bad[static_cast<size_t>(task)] = r;
          return;
        }
      }
      if (cov_t) isa().transpose_block(cov + r0 * ldc, ldc, r1 - r0, N, cov_t + r0, R);
    };
    if (threaded)
      parallel_for(row_tasks, load_rows);
    else
      for (int64_t task = 0; task < row_tasks; ++task) load_rows(task);
    for (const int64_t r : bad)
      if (r >= 0)
        return Status(Code::kRange, "expected finite coverage but row " + std::to_string(r) + " of batch " +
                                        std::to_string(b) + " holds NaN or Inf");
    std::vector<uint8_t> blocked(static_cast<size_t>(N), 0);
    int64_t available = N;
    if (p.exclude.data) {
      const uint8_t* e = p.exclude.ptr<uint8_t>() + b * N;
      for (int64_t j = 0; j < N; ++j)
        if (e[j]) {
          blocked[j] = 1;
          --available;
        }
    }
    if (available < k)
      return Status(Code::kRange, "expected at least k = " + std::to_string(k) + " columns that are not excluded in batch " +
                                      std::to_string(b) + " but it has " + std::to_string(available));
    // Greedy. gain[j] = Σ_r max(0, C[r, j] − best[r]) is kept in f64 and
    // updated, not recomputed: a pick p raises best[r] from b to C[r, p]
    // only in the rows where C[r, p] > b, and there each column's term drops
    // by min(max(C[r, j] − b, 0), C[r, p] − b). On MMTok's softmax coverage
    // a pick raises ~7% of the rows on average, so a step costs that
    // fraction of a full recomputation (which was 13% of MMTok's time).
    // Each term is exact in f64 and each row adds one rounding per column,
    // far below f32's: the gains are the float64 reference's to ~1e-15
    // relative, equal columns tie exactly, and a column with no positive
    // term left (counted exactly, in f32 comparisons) has a gain of exactly
    // 0, so fully covered columns tie too. Picks: the largest gain, ties to
    // the lower column. cuda/coverage.cu runs the same f64 operations in
    // the same order, so both back ends give the same bits.
    std::vector<float> best(static_cast<size_t>(R), 0.0f);
    std::vector<double> gain(static_cast<size_t>(N), 0.0);
    std::vector<int32_t> terms(static_cast<size_t>(N), 0);  // rows with C[r, j] > best[r]
    std::vector<int32_t> raised;                            // rows whose best the pick raised, ascending
    std::vector<float> from, to;                            // their best before and after
    raised.reserve(static_cast<size_t>(R));
    from.reserve(static_cast<size_t>(R));
    to.reserve(static_cast<size_t>(R));
    int32_t* order = p.order.ptr<int32_t>() + b * k;
    float* gains = p.gains.data ? p.gains.ptr<float>() + b * k : nullptr;
    // Columns in chunks (one per thread, whole 32-column register blocks).
    // Step t applies the listed rows to every chunk (step 0: every row,
    // from 0 to +inf, added; later steps: the rows pick t − 1 raised,
    // subtracted), and each chunk's pass ends with its best column; then
    // pick t is the best of the chunks' bests.
    const int64_t per_thread = (N + num_threads() - 1) / num_threads();
    const int64_t chunk = std::max<int64_t>(32, (per_thread + 31) / 32 * 32), chunks = (N + chunk - 1) / chunk;
    std::vector<int64_t> chunk_best(static_cast<size_t>(chunks), -1);  // its best unblocked column, or -1
    auto run_chunk = [&](int64_t c, int64_t t) {
      const int64_t j0 = c * chunk, j1 = std::min(N, j0 + chunk);
      isa().coverage_update(cov + j0, ldc, raised.data(), from.data(), to.data(), static_cast<int64_t>(raised.size()),
                            j1 - j0, /*subtract=*/t > 0, gain.data() + j0, terms.data() + j0);
      int64_t pick = -1;  // the largest gain, ties to the lower column
      for (int64_t j = j0; j < j1; ++j)
        if (!blocked[j] && (pick < 0 || gain[j] > gain[pick])) pick = j;
      chunk_best[static_cast<size_t>(c)] = pick;
    };
    // After step t's chunks: pick t, then (unless it was the last) the rows
    // it raises, listed for step t + 1. False when the selection is done.
    auto pick_and_list = [&](int64_t t) -> bool {
      int64_t pick = -1;
      for (const int64_t j : chunk_best)
        if (j >= 0 && (pick < 0 || gain[j] > gain[pick])) pick = j;
      blocked[pick] = 1;  // picked: never again (available >= k: a column is left)
      order[t] = static_cast<int32_t>(pick);
      if (gains) gains[t] = static_cast<float>(gain[pick]);
      if (t + 1 == k) return false;
      raised.clear();
      from.clear();
      to.clear();
      const float* column = cov_t ? cov_t + pick * R : nullptr;
      for (int64_t r = 0; r < R; ++r) {
        const float c = column ? column[r] : cov[r * ldc + pick];
        if (c > best[r]) {
          raised.push_back(static_cast<int32_t>(r));
          from.push_back(best[r]);
          to.push_back(c);
          best[r] = c;
        }
      }
      return true;
    };
    for (int64_t r = 0; r < R; ++r) raised.push_back(static_cast<int32_t>(r));
    from.assign(static_cast<size_t>(R), 0.0f);
    to.assign(static_cast<size_t>(R), std::numeric_limits<float>::infinity());
    if (!threaded || chunks == 1) {
      for (int64_t t = 0; t < k; ++t) {
        for (int64_t c = 0; c < chunks; ++c) run_chunk(c, t);
        if (!pick_and_list(t)) break;
      }
    } else {
      // One job for the whole selection: a pool job per step cost more in
      // hand-offs than the steps' work (MMTok 592 × 576, k = 64: 36% of the
      // samples spinning in the pool). Participants take (step, chunk)
      // tickets in order; whoever finishes a step's last chunk picks and
      // lists the rows, then publishes the step. A participant only waits
      // for a step whose chunks are all taken by running participants, so
      // one participant alone (the others busy elsewhere) still finishes.
      std::atomic<int64_t> next_ticket{0}, finished{0}, published{0};
      parallel_for(chunks, [&](int64_t) {
        for (;;) {
          const int64_t ticket = next_ticket.fetch_add(1, std::memory_order_relaxed);
          const int64_t t = ticket / chunks;
          if (t >= k) return;
          while (!spin_until([&] { return published.load(std::memory_order_acquire) >= t; })) std::this_thread::yield();
          run_chunk(ticket % chunks, t);
          if (finished.fetch_add(1, std::memory_order_acq_rel) + 1 == (t + 1) * chunks) {
            const bool more = pick_and_list(t);
            published.store(more ? t + 1 : k, std::memory_order_release);
          }
        }
      });
    }
    if (p.sorted.data) {
      int32_t* sorted = p.sorted.ptr<int32_t>() + b * k;
      std::copy(order, order + k, sorted);
      std::sort(sorted, sorted + k);
    }
    return Status::Ok();
  });
}

Status mmtok_coverage(const MmtokCoverageParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.vision.on_host()) return Status(Code::kDevice, "cpu::mmtok_coverage needs host tensors");
  const int64_t B = p.vision.shape[0], n = p.vision.shape[1], m = p.text.shape[1], D = p.vision.shape[2];
  const TensorView& aux = p.vision_aux.data ? p.vision_aux : p.vision;
  const int64_t Da = aux.shape[2];
  float* out = p.out.ptr<float>();
  TrimScratch trim;
  for (int64_t b = 0; b < B; ++b) {
    // L2-normalised rows, max(norm, 1e-8) as the reference's F.normalize,
    // packed as panels for the tiles.
    auto normalised = [&](const TensorView& t, int64_t rows, float* dst, const char* name) -> Status {
      const int64_t bad = pack_rows(
          t, b, rows, [](int64_t r) { return r; },
          [](double ss) { return static_cast<float>(1.0 / std::max(std::sqrt(ss), 1e-8)); }, true, dst, nullptr,
          nullptr, true);
      if (bad < 0) return Status::Ok();
      return Status(Code::kRange, std::string("expected finite ") + name + " but row " + std::to_string(bad) +
                                      " of batch " + std::to_string(b) + " holds NaN or Inf");
    };
    std::vector<float> z(static_cast<size_t>(round_up16(m) * D));
    float* v = tl_panels.get(round_up16(n) * D);
    float* a = p.vision_aux.data ? tl_aux_panels.get(round_up16(n) * Da) : v;
    TS_RETURN_IF_ERROR(normalised(p.text, m, z.data(), "text"));
    TS_RETURN_IF_ERROR(normalised(p.vision, n, v, "vision"));
    if (p.vision_aux.data) TS_RETURN_IF_ERROR(normalised(aux, n, a, "visionAux"));
    float* ob = out + b * (m + n) * n;  // [m + n, n]
    // Logits by blocked GEMM straight into the output rows (the vision–vision
    // block symmetric), then an in-place softmax per row.
    gemm_nt(GemmA{z.data(), 0, true}, m, v, n, D, ob, n, /*upper=*/false, true);
    gemm_nt(GemmA{a, 0, true}, n, a, n, Da, ob + m * n, n, /*upper=*/true, true);
    // Rows in tasks of ~8K entries: with one task per row, consecutive rows
    // alternated between the threads (no sequential prefetch) and each paid
    // a hand-off (MMTok: this loop 0.42 ms with one row per task, 0.16 ms
    // with 14). Each row's first pass is the vector max, which takes the
    // cache misses (the product wrote the rows long before) 16 floats per
    // load; max(x)·s is the max of the x·s (rounding is monotone), so the
    // shift has the bits of the max of the scaled row.
    const int64_t rows_per_task = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, n));
    parallel_for((m + n + rows_per_task - 1) / rows_per_task, [&](int64_t task) {
      for (int64_t r = task * rows_per_task; r < std::min(m + n, (task + 1) * rows_per_task); ++r) {
        float* row = ob + r * n;
        const bool text = r < m;
        const float inv_tau = static_cast<float>(1.0 / (text ? p.tau_tv : p.tau_vv));
        const float shift = isa().max(row, n, nullptr) * inv_tau;
        isa().scale(row, inv_tau, n, row);
        const float sum = isa().exp_shift_sum(row, n, shift);
        const float scale =
            static_cast<float>((text ? 1.0 / static_cast<double>(m) : p.alpha / static_cast<double>(n)) / sum);
        isa().scale(row, scale, n, row);
      }
    });
  }
  return Status::Ok();
}

}  // namespace cpu
}  // namespace tokensieve
