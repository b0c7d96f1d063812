/**
 * Float64 transcriptions of the reference code of each method, on dense
 * probability maps [B, H, N, N] (what HF `output_attentions` gives), written
 * step by step as the authors' PyTorch does it (specs/methods.md), batch by
 * batch. torch.topk ties are taken as "lower index first", the convention
 * tokensieve pins.
 */
import { refTopkRow } from './select';

// Globals as module bindings, read ~100× faster under jest (why: test/helpers.ts).
const Math = globalThis.Math;

export interface Probs {
  p: ArrayLike<number>;
  B: number;
  H: number;
  N: number;
}

const at = (a: Probs, b: number, h: number, i: number, j: number) => a.p[((b * a.H + h) * a.N + i) * a.N + j];

/** Python round (half to even). */
export function pyRoundRef(x: number): number {
  const f = Math.floor(x);
  if (x - f !== 0.5) return Math.round(x);
  return f % 2 === 0 ? f : f + 1;
}

/** FasterVLM: attn[:, :, 0, 1:].mean(1) → topk → mask → raster order. */
export function refFasterVLM(a: Probs, keep: number): { indices: number[][]; scores: number[][] } {
  const indices: number[][] = [];
  const scores: number[][] = [];
  for (let b = 0; b < a.B; b++) {
    const s = Array.from({ length: a.N - 1 }, (_, j) => {
      let v = 0;
      for (let h = 0; h < a.H; h++) v += at(a, b, h, 0, j + 1);
      return v / a.H;
    });
    scores.push(s);
    indices.push(refTopkRow(s, keep, 'index'));
  }
  return { indices, scores };
}

/** VTC-CLS: Σ over layers[start:end] of attn.mean(heads)[0, 1:] → topk → sorted. */
export function refVtcCls(layers: Probs[], start: number, end: number, keep: number): number[][] {
  const { B, N } = layers[0];
  const out: number[][] = [];
  for (let b = 0; b < B; b++) {
    const s = new Array<number>(N - 1).fill(0);
    for (let l = start; l < end; l++) {
      const a = layers[l];
      for (let j = 0; j < N - 1; j++) {
        let v = 0;
        for (let h = 0; h < a.H; h++) v += at(a, b, h, 0, j + 1);
        s[j] += v / a.H;
      }
    }
    out.push(refTopkRow(s, keep, 'index'));
  }
  return out;
}

/** FastV: attn.mean(heads)[-1, start:start+n] → topk(R) → keep = prefix ∪ start+topk ∪ suffix, sorted. */
export function refFastV(a: Probs, start: number, n: number, keep: number): { image: number[][]; sequence: number[][] } {
  const image: number[][] = [];
  const sequence: number[][] = [];
  for (let b = 0; b < a.B; b++) {
    const s = Array.from({ length: n }, (_, j) => {
      let v = 0;
      for (let h = 0; h < a.H; h++) v += at(a, b, h, a.N - 1, start + j);
      return v / a.H;
    });
    const top = refTopkRow(s, keep, 'score');
    const seq = [...Array(start).keys(), ...top.map((i) => start + i), ...Array.from({ length: a.N - start - n }, (_, i) => start + n + i)];
    image.push(top.slice().sort((x, y) => x - y));
    sequence.push(seq.sort((x, y) => x - y));
  }
  return { image, sequence };
}

/** HiPrune encode_images, literally: global score, anchors, ±1/±W buffers with clamp, unique, deep -= mask, registers. */
export function refHiPrune(shallow: Probs, deep: Probs, T: number, alpha: number, W: number): number[][] {
  const B = deep.B;
  const N = deep.N - 1;
  const Tc = Math.floor(T / B);
  const global = (a: Probs, b: number): number[] => {
    // attn.mean(dim=heads).mean(dim=queries)[1:]
    const col = new Array<number>(a.N).fill(0);
    for (let i = 0; i < a.N; i++) {
      for (let j = 0; j < a.N; j++) {
        let v = 0;
        for (let h = 0; h < a.H; h++) v += at(a, b, h, i, j);
        col[j] += v / a.H / a.N;
      }
    }
    return col.slice(1);
  };
  const out: number[][] = [];
  for (let b = 0; b < B; b++) {
    const sh = global(shallow, b);
    const dp = global(deep, b);
    const nA = pyRoundRef((Tc * alpha) / 5);
    const anchors = refTopkRow(sh, nA, 'score');
    const buffers = anchors.flatMap((i) => [i - 1, i + 1, i - W, i + W]).map((i) => Math.min(N - 1, Math.max(0, i)));
    const combined = [...new Set([...anchors, ...buffers])].sort((x, y) => x - y);
    const nR = Tc - combined.length;
    const masked = dp.slice();
    for (const i of combined) masked[i] -= 1;
    const registers = nR > 0 ? refTopkRow(masked, nR, 'score') : [];
    out.push([...combined, ...registers].sort((x, y) => x - y));
  }
  return out;
}

/** FoPru: s1 = column mean of head-mean attention; 'rank' top n sorted; 'row' top rows by row sum, whole rows. */
export function refFoPru(a: Probs, strategy: 'rank' | 'row', n: number): number[][] {
  const out: number[][] = [];
  for (let b = 0; b < a.B; b++) {
    const s1 = new Array<number>(a.N).fill(0);
    for (let i = 0; i < a.N; i++) {
      for (let j = 0; j < a.N; j++) {
        let v = 0;
        for (let h = 0; h < a.H; h++) v += at(a, b, h, i, j);
        s1[j] += v / a.H / a.N;
      }
    }
    if (strategy === 'rank') {
      out.push(refTopkRow(s1, n, 'index'));
    } else {
      const w = Math.round(Math.sqrt(a.N));
      const rows = Array.from({ length: w }, (_, r) => s1.slice(r * w, (r + 1) * w).reduce((x, y) => x + y, 0));
      const keep = refTopkRow(rows, n, 'index');
      out.push(keep.flatMap((r) => Array.from({ length: w }, (_, c) => r * w + c)));
    }
  }
  return out;
}
