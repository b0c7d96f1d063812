/**
 * Reference quantizer: the arithmetic of include/tokensieve/quantize.h done
 * in JS with f32 rounding where the contract says f32 (Math.fround), so the
 * expected codes are exact, not approximate.
 */

// Globals as module bindings, read ~100× faster under jest (why: test/helpers.ts).
const Math = globalThis.Math;
export type RefGranularity = 'tensor' | 'token' | 'channel' | { group: number } | { rows: number };

export interface RefQuantized {
  codes: number[]; // one per element, row-major
  scales: number[];
  mean?: number[]; // [B, H, D]
  packed?: number[]; // 4 bits: bytes
}

const FLOOR = Math.fround(1e-20);

export function roundHalfAway(x: number): number {
  return Math.sign(x) * Math.floor(Math.abs(x) + 0.5);
}

export function refQuantize(values: ArrayLike<number>, shape: number[], bits: 8 | 4, g: RefGranularity, smooth = false): RefQuantized {
  const C = shape[shape.length - 1];
  const R = values.length / C;
  const Q = bits === 8 ? 127 : 7;
  const v = Array.from(values, (x) => Math.fround(x));
  let mean: number[] | undefined;
  if (smooth) {
    const [B, H, N, D] = shape;
    mean = [];
    for (let bh = 0; bh < B * H; bh++) {
      for (let d = 0; d < D; d++) {
        // Double sums over chunks of 64 tokens, added in order (quantize.h).
        let sum = 0;
        for (let n0 = 0; n0 < N; n0 += 64) {
          let chunk = 0;
          for (let n = n0; n < Math.min(N, n0 + 64); n++) chunk += v[(bh * N + n) * D + d];
          sum += chunk;
        }
        mean.push(Math.fround(sum / N));
      }
    }
    for (let r = 0; r < R; r++) {
      const bh = Math.floor(r / N);
      for (let d = 0; d < D; d++) v[r * D + d] = Math.fround(v[r * D + d] - mean[bh * D + d]);
    }
  }
  const index = (r: number, c: number): number => {
    if (g === 'tensor') return 0;
    if (g === 'token') return r;
    if (g === 'channel') return c;
    if ('group' in g) return r * Math.ceil(C / g.group) + Math.floor(c / g.group);
    const N = shape[2];
    return Math.floor(r / N) * Math.ceil(N / g.rows) + Math.floor((r % N) / g.rows);
  };
  const nscales =
    g === 'tensor' ? 1 : g === 'token' ? R : g === 'channel' ? C : 'group' in g ? R * Math.ceil(C / g.group) : shape[0] * shape[1] * Math.ceil(shape[2] / g.rows);
  const amax = new Array<number>(nscales).fill(0);
  for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) {
    const i = index(r, c);
    amax[i] = Math.max(amax[i], Math.abs(v[r * C + c]));
  }
  const scales = amax.map((a) => Math.fround(Math.max(a, FLOOR) / Q));
  const codes: number[] = [];
  for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) {
    const q = roundHalfAway(Math.fround(v[r * C + c] / scales[index(r, c)]));
    codes.push(Math.max(-Q, Math.min(Q, q)) + 0); // + 0: no -0 codes
  }
  const out: RefQuantized = { codes, scales, mean };
  if (bits === 4) {
    const bytes = Math.ceil(C / 2);
    out.packed = [];
    for (let r = 0; r < R; r++) for (let b = 0; b < bytes; b++) {
      const lo = codes[r * C + 2 * b];
      const hi = 2 * b + 1 < C ? codes[r * C + 2 * b + 1] : 0;
      out.packed.push((lo & 0xf) | ((hi & 0xf) << 4));
    }
  }
  return out;
}

/** codes · scale (+ mean), f32. */
export function refDequantize(q: RefQuantized, shape: number[], g: RefGranularity, addMean: boolean): number[] {
  const C = shape[shape.length - 1];
  const R = q.codes.length / C;
  const index = (r: number, c: number): number => {
    if (g === 'tensor') return 0;
    if (g === 'token') return r;
    if (g === 'channel') return c;
    if ('group' in g) return r * Math.ceil(C / g.group) + Math.floor(c / g.group);
    const N = shape[2];
    return Math.floor(r / N) * Math.ceil(N / g.rows) + Math.floor((r % N) / g.rows);
  };
  const out: number[] = [];
  for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) {
    let x = Math.fround(q.codes[r * C + c] * q.scales[index(r, c)]);
    if (addMean && q.mean) x = Math.fround(x + q.mean[Math.floor(r / shape[2]) * C + c]);
    out.push(x);
  }
  return out;
}
