// CPU INT8/INT4 quantization and dequantization (layouts in quantize.h).
//
// Block maxima of |x − mean| (max is order-independent, so scales are
// bit-identical to the CUDA path), then q = clamp(round(v / scale)) with an
// IEEE f32 division and round-half-away-from-zero — the same expression on
// both back ends, which is what makes their data byte-equal. Per-token and
// per-group scales take one pass over each row; tensor and channel scales
// two. The smoothing mean is summed in double in kMeanChunk-token chunks (the
// order quantize.h fixes) and stored as f32.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "cpu/isa.h"
#include "cpu/smooth_mean.h"
#include "cpu/thread_pool.h"
#include "tokensieve/quantize.h"

namespace tokensieve {
namespace cpu {
namespace {

struct Geometry {
  int64_t R = 0, C = 0;          // rows, last dim
  int64_t B = 1, H = 1, N = 1;   // when x is [B, H, N, D]
  int64_t groups = 1;            // kGroup: scales per row
  int64_t blocks = 1;            // kRows: scales per (b, h)
  int64_t nscales = 1;
};

Geometry geometry(const TensorView& x, const QuantScheme& s) {
  Geometry g;
  g.C = x.shape[x.ndim - 1];
  g.R = x.numel() / g.C;
  if (x.ndim == 4) {
    g.B = x.shape[0];
    g.H = x.shape[1];
    g.N = x.shape[2];
  }
  switch (s.granularity) {
    case Granularity::kTensor: g.nscales = 1; break;
    case Granularity::kToken: g.nscales = g.R; break;
    case Granularity::kChannel: g.nscales = g.C; break;
    case Granularity::kGroup:
      g.groups = (g.C + s.block - 1) / s.block;
      g.nscales = g.R * g.groups;
      break;
    case Granularity::kRows:
      g.blocks = (g.N + s.block - 1) / s.block;
      g.nscales = g.B * g.H * g.blocks;
      break;
  }
  return g;
}

// Index of the scale of element (row, c).
inline int64_t scale_index(const Geometry& g, const QuantScheme& s, int64_t row, int64_t c) {
  switch (s.granularity) {
    case Granularity::kTensor: return 0;
    case Granularity::kToken: return row;
    case Granularity::kChannel: return c;
    case Granularity::kGroup: return row * g.groups + c / s.block;
    case Granularity::kRows: return (row / g.N) * g.blocks + (row % g.N) / s.block;
  }
  return 0;
}

inline float qmax(int bits) { return bits == 8 ? 127.0f : 7.0f; }

// One row of x as f32, minus the smoothing mean of its (b, h) when given.
void load_row(const TensorView& x, const Geometry& g, const float* mean, int64_t row, float* dst) {
  const size_t esize = dtype_size(x.dtype);
  isa().to_f32(static_cast<const char*>(x.data) + row * g.C * static_cast<int64_t>(esize), x.dtype, g.C, dst);
  // x + (−1)·m is x − m exactly, on vectors (a loop here is baseline x86-64).
  if (mean != nullptr) isa().axpy(-1.0f, mean + (row / g.N) * g.C, dst, g.C);
}

// Codes of one row (C values, f32) with the given scale(s) into data row r.
void store_codes(const QuantizeParams& p, const Geometry& g, int64_t r, const float* v, const float* scale,
                 int64_t scale_step, float Q, int8_t* tmp) {
  const IsaKernels& K = isa();
  if (p.scheme.bits == 8) {
    K.quantize_codes(v, g.C, scale, scale_step, Q, p.data.ptr<int8_t>() + r * g.C);
    return;
  }
  K.quantize_codes(v, g.C, scale, scale_step, Q, tmp);
  K.pack_int4(tmp, g.C, p.data.ptr<uint8_t>() + r * ((g.C + 1) / 2));
}

// Row r as f32 minus the mean: a pointer into x when nothing needs changing
// (f32, no mean), else the values in `buf`.
const float* row_values(const QuantizeParams& p, const Geometry& g, const float* mean, int64_t r, float* buf) {
  if (p.x.dtype == DType::kF32 && mean == nullptr) return p.x.ptr<const float>() + r * g.C;
  load_row(p.x, g, mean, r, buf);
  return buf;
}

}  // namespace

Status quantize(const QuantizeParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.x.on_host()) return Status(Code::kDevice, "cpu::quantize needs host tensors");
  const IsaKernels& K = isa();
  const QuantScheme& s = p.scheme;
  const Geometry g = geometry(p.x, s);
  const float Q = qmax(s.bits);
  const int64_t rows_per_task = std::max<int64_t>(1, 16384 / g.C);
  const int64_t tasks = (g.R + rows_per_task - 1) / rows_per_task;
  auto task_rows = [&](int64_t t) { return std::make_pair(t * rows_per_task, std::min(g.R, (t + 1) * rows_per_task)); };

  // NaN/Inf: found by the maxima passes (the finite check rides along), or
  // up front when the mean would have to read x first.
  std::vector<char> bad(static_cast<size_t>(std::max(tasks, g.nscales)), 0);
  auto failed = [&]() { return std::find(bad.begin(), bad.end(), 1) != bad.end(); };
  const Status nonfinite(Code::kRange, "expected finite values in x but found NaN or Infinity");
  if (p.check_finite && p.smooth) {
    parallel_for(tasks, [&](int64_t t) {
      std::vector<float> buf(static_cast<size_t>(g.C));
      bool finite = true;
      const auto [r0, r1] = task_rows(t);
      for (int64_t r = r0; r < r1; ++r) K.amax(row_values(p, g, nullptr, r, buf.data()), g.C, &finite);
      if (!finite) bad[static_cast<size_t>(t)] = 1;
    });
    if (failed()) return nonfinite;
  }

  // The smoothing mean, [B, H, 1, D]: summed in double over the N tokens.
  float* mean = p.smooth ? p.mean.ptr<float>() : nullptr;
  if (mean != nullptr) {
    parallel_for(g.B * g.H, [&](int64_t bh) {
      const int64_t r0 = bh * g.N;
      std::vector<float> buf(p.x.dtype == DType::kF32 ? 0 : static_cast<size_t>(g.C));
      auto rows = [&](int64_t n, int most) {
        if (p.x.dtype == DType::kF32) return RowRun{p.x.ptr<const float>() + (r0 + n) * g.C, g.C, most};
        load_row(p.x, g, nullptr, r0 + n, buf.data());
        return RowRun{buf.data(), g.C, 1};
      };
      smoothing_mean(rows, g.N, g.C, mean + bh * g.C);
    });
  }

  float* scales = p.scales.ptr<float>();
  auto to_scale = [&](float amax) { return std::max(amax, kAmaxFloor) / Q; };

  if (s.granularity == Granularity::kToken || s.granularity == Granularity::kGroup) {
    // One pass: a row's scales depend on that row only.
    const int64_t gsize = s.granularity == Granularity::kToken ? g.C : s.block;
    parallel_for(tasks, [&](int64_t t) {
      std::vector<float> buf(static_cast<size_t>(g.C));
      std::vector<int8_t> tmp(static_cast<size_t>(g.C));
      bool finite = true;
      const auto [r0, r1] = task_rows(t);
      for (int64_t r = r0; r < r1; ++r) {
        const float* v = row_values(p, g, mean, r, buf.data());
        if (s.granularity == Granularity::kToken) {
          const float scale = to_scale(K.amax(v, g.C, &finite));
          scales[r] = scale;
          store_codes(p, g, r, v, &scale, 0, Q, tmp.data());
          continue;
        }
        int8_t* codes = s.bits == 8 ? p.data.ptr<int8_t>() + r * g.C : tmp.data();
        K.quantize_groups(v, g.C, gsize, Q, kAmaxFloor, scales + r * g.groups, codes, &finite);
        if (s.bits == 4) K.pack_int4(tmp.data(), g.C, p.data.ptr<uint8_t>() + r * ((g.C + 1) / 2));
      }
      if (!finite) bad[static_cast<size_t>(t)] = 1;
    });
    return p.check_finite && failed() ? nonfinite : Status::Ok();
  }

  if (s.granularity == Granularity::kRows) {
    // One task per (b, h, block of rows): its maximum, then its codes.
    parallel_for(g.nscales, [&](int64_t i) {
      std::vector<float> buf(static_cast<size_t>(g.C));
      std::vector<int8_t> tmp(static_cast<size_t>(g.C));
      const int64_t bh = i / g.blocks, blk = i % g.blocks;
      const int64_t n0 = blk * s.block, n1 = std::min(g.N, n0 + s.block);
      float m = 0.0f;
      bool finite = true;
      for (int64_t n = n0; n < n1; ++n) m = std::max(m, K.amax(row_values(p, g, mean, bh * g.N + n, buf.data()), g.C, &finite));
      if (!finite) bad[static_cast<size_t>(i)] = 1;
      const float scale = to_scale(m);
      scales[i] = scale;
      for (int64_t n = n0; n < n1; ++n) {
        const int64_t r = bh * g.N + n;
        store_codes(p, g, r, row_values(p, g, mean, r, buf.data()), &scale, 0, Q, tmp.data());
      }
    });
    return p.check_finite && failed() ? nonfinite : Status::Ok();
  }

  // kTensor / kChannel: maxima per task (merged afterwards; max is exact in
  // any order), then the codes.
  std::vector<std::vector<float>> partial(static_cast<size_t>(tasks));
  parallel_for(tasks, [&](int64_t t) {
    std::vector<float> buf(static_cast<size_t>(g.C));
    std::vector<float>& local = partial[static_cast<size_t>(t)];
    local.assign(static_cast<size_t>(g.nscales), 0.0f);
    bool finite = true;
    const auto [r0, r1] = task_rows(t);
    for (int64_t r = r0; r < r1; ++r) {
      const float* v = row_values(p, g, mean, r, buf.data());
      const float m = K.amax(v, g.C, &finite);
      if (s.granularity == Granularity::kTensor) {
        local[0] = std::max(local[0], m);
      } else {
        for (int64_t c = 0; c < g.C; ++c) local[static_cast<size_t>(c)] = std::max(local[static_cast<size_t>(c)], std::fabs(v[c]));
      }
    }
    if (!finite) bad[static_cast<size_t>(t)] = 1;
  });
  if (p.check_finite && failed()) return nonfinite;
  for (int64_t i = 0; i < g.nscales; ++i) {
    float m = 0.0f;
    for (const auto& part : partial) m = std::max(m, part[static_cast<size_t>(i)]);
    scales[i] = to_scale(m);
  }
  parallel_for(tasks, [&](int64_t t) {
    std::vector<float> buf(static_cast<size_t>(g.C));
    std::vector<int8_t> tmp(static_cast<size_t>(g.C));
    const auto [r0, r1] = task_rows(t);
    for (int64_t r = r0; r < r1; ++r) {
      const float* v = row_values(p, g, mean, r, buf.data());
      store_codes(p, g, r, v, scales, s.granularity == Granularity::kTensor ? 0 : 1, Q, tmp.data());
    }
  });
  return Status::Ok();
}

Status dequantize(const DequantizeParams& p) {
  TS_RETURN_IF_ERROR(validate(p));
  if (!p.out.on_host()) return Status(Code::kDevice, "cpu::dequantize needs host tensors");
  const QuantScheme& s = p.scheme;
  const Geometry g = geometry(p.out, s);
  const float* scales = p.scales.ptr<float>();
  const float* mean = p.add_mean ? p.mean.ptr<float>() : nullptr;
  const int64_t rows_per_task = std::max<int64_t>(1, 16384 / g.C);
  const int64_t tasks = (g.R + rows_per_task - 1) / rows_per_task;
  parallel_for(tasks, [&](int64_t t) {
    std::vector<float> row(static_cast<size_t>(g.C));
    for (int64_t r = t * rows_per_task; r < std::min(g.R, (t + 1) * rows_per_task); ++r) {
      for (int64_t c = 0; c < g.C; ++c) {
        int q;
        if (s.bits == 8) {
          q = p.data.ptr<const int8_t>()[r * g.C + c];
        } else {
          const uint8_t byte = p.data.ptr<const uint8_t>()[r * ((g.C + 1) / 2) + c / 2];
          const int nib = (c & 1) ? (byte >> 4) : (byte & 0xf);
          q = nib >= 8 ? nib - 16 : nib;  // 4-bit two's complement
        }
        float v = static_cast<float>(q) * scales[scale_index(g, s, r, c)];
        if (mean != nullptr) v += mean[(r / g.N) * g.C + c];
        row[static_cast<size_t>(c)] = v;
      }
      char* dst = static_cast<char*>(p.out.data) + r * g.C * static_cast<int64_t>(dtype_size(p.out.dtype));
      switch (p.out.dtype) {
        case DType::kF32:
          std::memcpy(dst, row.data(), static_cast<size_t>(g.C) * 4);
          break;
        case DType::kF16:
          for (int64_t c = 0; c < g.C; ++c) reinterpret_cast<uint16_t*>(dst)[c] = f32_to_f16(row[static_cast<size_t>(c)]);
          break;
        case DType::kBF16:
          for (int64_t c = 0; c < g.C; ++c) reinterpret_cast<uint16_t*>(dst)[c] = f32_to_bf16(row[static_cast<size_t>(c)]);
          break;
        default:
          break;
      }
    }
  });
  return Status::Ok();
}

}  // namespace cpu
}  // namespace tokensieve
