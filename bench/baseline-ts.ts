/**
 * Plain TypeScript baselines: the obvious f32 loops a user would write
 * without tokensieve. Same results as the kernels (to rounding).
 */

/**
 * Head-mean of softmax(q·kᵀ·scale) over the selected rows, for keys
 * [keyStart, N). q, k: [B, H, N, D] f32 contiguous.
 */
export function attentionScoresTs(
  q: Float32Array, k: Float32Array, B: number, H: number, N: number, D: number,
  rows: readonly number[], keyStart: number, causal: boolean,
): Float32Array {
  const W = N - keyStart;
  const out = new Float32Array(B * W);
  const logits = new Float32Array(N);
  const scale = 1 / Math.sqrt(D);
  const w = 1 / (rows.length * H);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const base = (b * H + h) * N * D;
      for (const i of rows) {
        const visible = causal ? i + 1 : N;
        let max = -Infinity;
        for (let j = 0; j < visible; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[base + i * D + d] * k[base + j * D + d];
          logits[j] = dot * scale;
          if (logits[j] > max) max = logits[j];
        }
        let sum = 0;
        for (let j = 0; j < visible; j++) {
          logits[j] = Math.exp(logits[j] - max);
          sum += logits[j];
        }
        const inv = w / sum;
        for (let j = keyStart; j < visible; j++) out[b * W + j - keyStart] += logits[j] * inv;
      }
    }
  }
  return out;
}

/** Top-k of each row: sort all indices (stable on ties), keep k, back to index order. */
export function topkTs(scores: Float32Array, B: number, N: number, k: number): Int32Array {
  const out = new Int32Array(B * k);
  const idx = new Array<number>(N);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < N; i++) idx[i] = i;
    const row = scores.subarray(b * N, (b + 1) * N);
    idx.sort((x, y) => row[y] - row[x] || x - y);
    const top = idx.slice(0, k).sort((x, y) => x - y);
    out.set(top, b * k);
  }
  return out;
}

/** Symmetric quantization of [R, C] rows, one scale per `group` elements (C for per token); INT4 packed low nibble first. */
export function quantizeTs(x: Float32Array, R: number, C: number, bits: 8 | 4, group: number): { data: Int8Array | Uint8Array; scales: Float32Array } {
  const Q = bits === 8 ? 127 : 7;
  const groups = Math.ceil(C / group);
  const scales = new Float32Array(R * groups);
  const codes = new Int8Array(R * C);
  for (let r = 0; r < R; r++) {
    for (let g = 0; g < groups; g++) {
      let amax = 0;
      const end = Math.min(C, (g + 1) * group);
      for (let c = g * group; c < end; c++) amax = Math.max(amax, Math.abs(x[r * C + c]));
      const scale = Math.max(amax, 1e-20) / Q;
      scales[r * groups + g] = scale;
      for (let c = g * group; c < end; c++) {
        const v = x[r * C + c] / scale;
        codes[r * C + c] = Math.max(-Q, Math.min(Q, Math.sign(v) * Math.floor(Math.abs(v) + 0.5)));
      }
    }
  }
  if (bits === 8) return { data: codes, scales };
  const bytes = Math.ceil(C / 2);
  const packed = new Uint8Array(R * bytes);
  for (let r = 0; r < R; r++) {
    for (let b = 0; b < bytes; b++) {
      const lo = codes[r * C + 2 * b];
      const hi = 2 * b + 1 < C ? codes[r * C + 2 * b + 1] : 0;
      packed[r * bytes + b] = (lo & 0xf) | ((hi & 0xf) << 4);
    }
  }
  return { data: packed, scales };
}

/**
 * One ToMe merge step in plain TS (parity split, CLS protected, r merged,
 * merge_wavg with unit sizes): metric = x [B, N, C]. Returns the merged x.
 */
export function tomeStepTs(x: Float32Array, B: number, N: number, C: number, r: number): Float32Array {
  const na = Math.ceil(N / 2);
  const nb = Math.floor(N / 2);
  const out = new Float32Array(B * (N - r) * C);
  const norm = new Float32Array(N * C);
  for (let b = 0; b < B; b++) {
    const xb = x.subarray(b * N * C, (b + 1) * N * C);
    for (let i = 0; i < N; i++) {
      let ss = 0;
      for (let d = 0; d < C; d++) ss += xb[i * C + d] * xb[i * C + d];
      const n = Math.sqrt(ss) || 1;
      for (let d = 0; d < C; d++) norm[i * C + d] = xb[i * C + d] / n;
    }
    const best = new Float64Array(na).fill(-Infinity);
    const arg = new Int32Array(na);
    for (let i = 1; i < na; i++) {
      for (let j = 0; j < nb; j++) {
        let dot = 0;
        for (let d = 0; d < C; d++) dot += norm[2 * i * C + d] * norm[(2 * j + 1) * C + d];
        if (dot > best[i]) {
          best[i] = dot;
          arg[i] = j;
        }
      }
    }
    const order = Array.from({ length: na }, (_, i) => i).sort((p, q) => best[q] - best[p] || p - q);
    const unm = order.slice(r).sort((p, q) => p - q);
    const acc = new Float32Array(nb * C);
    const size = new Float32Array(nb).fill(1);
    for (let j = 0; j < nb; j++) for (let d = 0; d < C; d++) acc[j * C + d] = xb[(2 * j + 1) * C + d];
    for (let k = 0; k < r; k++) {
      const i = order[k];
      const j = arg[i];
      for (let d = 0; d < C; d++) acc[j * C + d] += xb[2 * i * C + d];
      size[j]++;
    }
    const ob = out.subarray(b * (N - r) * C);
    unm.forEach((i, k) => ob.set(xb.subarray(2 * i * C, (2 * i + 1) * C), k * C));
    for (let j = 0; j < nb; j++) for (let d = 0; d < C; d++) ob[(unm.length + j) * C + d] = acc[j * C + d] / size[j];
  }
  return out;
}

/** VisionZip's contextual merge in plain TS: remaining [Nr] rows of x [N, C] / metric [N, Cm] into c tokens. */
export function contextualTs(x: Float32Array, metric: Float32Array, N: number, C: number, Cm: number, remaining: Int32Array, c: number): Float32Array {
  const nr = remaining.length;
  const step = Math.max(1, Math.floor(nr / c));
  const isT = new Uint8Array(nr);
  for (let k = 0; k < c; k++) isT[k * step] = 1;
  const nrm = (t: number): Float32Array => {
    const v = metric.slice(t * Cm, (t + 1) * Cm);
    let ss = 0;
    for (let d = 0; d < Cm; d++) ss += v[d] * v[d];
    const n = Math.sqrt(ss) || 1;
    for (let d = 0; d < Cm; d++) v[d] /= n;
    return v;
  };
  const targets = Array.from({ length: c }, (_, k) => nrm(remaining[k * step]));
  const acc = new Float32Array(c * C);
  const cnt = new Float32Array(c);
  for (let i = 0; i < nr; i++) {
    if (isT[i]) continue;
    const m = nrm(remaining[i]);
    let best = -Infinity;
    let bi = 0;
    for (let k = 0; k < c; k++) {
      let s = 0;
      for (let d = 0; d < Cm; d++) s += m[d] * targets[k][d];
      if (s > best) {
        best = s;
        bi = k;
      }
    }
    cnt[bi]++;
    for (let d = 0; d < C; d++) acc[bi * C + d] += x[remaining[i] * C + d];
  }
  const out = new Float32Array(c * C);
  for (let k = 0; k < c; k++) for (let d = 0; d < C; d++) out[k * C + d] = x[remaining[k * step] * C + d] + acc[k * C + d] / Math.max(1, cnt[k]);
  return out;
}

/** DivPrune in plain TS: the 1 − cos matrix, then the authors' greedy loop (one segment). */
export function kCenterTs(x: Float32Array, N: number, C: number, k: number, base = 0): Int32Array {
  const xn = new Float32Array(N * C);
  for (let i = 0; i < N; i++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += x[(base + i) * C + c] ** 2;
    const inv = 1 / Math.sqrt(s);
    for (let c = 0; c < C; c++) xn[i * C + c] = x[(base + i) * C + c] * inv;
  }
  const D = new Float32Array(N * N);
  for (let i = 0; i < N; i++)
    for (let j = i; j < N; j++) {
      let s = 0;
      for (let c = 0; c < C; c++) s += xn[i * C + c] * xn[j * C + c];
      D[i * N + j] = D[j * N + i] = 1 - s;
    }
  const out = new Int32Array(k);
  const mind = new Float32Array(N).fill(Infinity);
  let seed = 0, best = -Infinity;
  for (let i = 0; i < N; i++) {
    let m = Infinity;
    for (let j = 0; j < N; j++) if (j !== i && D[i * N + j] < m) m = D[i * N + j];
    if (m > best) { best = m; seed = i; }
  }
  out[0] = seed;
  for (let t = 1; t <= k; t++) {
    const p = out[t - 1];
    for (let j = 0; j < N; j++) if (D[p * N + j] < mind[j]) mind[j] = D[p * N + j];
    if (t === k) break;
    let arg = 0;
    for (let j = 1; j < N; j++) if (mind[j] > mind[arg]) arg = j;
    out[t] = arg;
  }
  return out;
}

/** MMTok's greedy maximum coverage in plain TS over cov [R, N]. */
export function maxCoverageTs(cov: Float32Array, R: number, N: number, k: number): Int32Array {
  const best = new Float32Array(R);
  const used = new Uint8Array(N);
  const out = new Int32Array(k);
  const gain = new Float32Array(N);
  for (let t = 0; t < k; t++) {
    gain.fill(0);
    for (let r = 0; r < R; r++) {
      const b = best[r];
      for (let j = 0; j < N; j++) {
        const g = cov[r * N + j] - b;
        if (g > 0) gain[j] += g;
      }
    }
    let arg = -1;
    for (let j = 0; j < N; j++) if (!used[j] && (arg < 0 || gain[j] > gain[arg])) arg = j;
    used[arg] = 1;
    out[t] = arg;
    for (let r = 0; r < R; r++) if (cov[r * N + arg] > best[r]) best[r] = cov[r * N + arg];
  }
  return out;
}
