/**
 * The benchmark trials, declaratively, and the work each one does.
 * Sizes come from specs/performance.md §C/§E: CLIP-L/336 (577 tokens, 16
 * heads, d 64), SigLIP-so400m (729, 16, 72), the Qwen2.5-VL ViT's full-
 * attention layers (4784, 16, 80), a LLaVA-NeXT LLM layer (3000, 32, 128).
 */
import type { FloatDType } from '../lib';

/**
 * Which query rows: 'cls' = row 0 with the CLS column dropped (FasterVLM,
 * VisionZip); 'one' = the last row of a causal layer (FastV); 'all' = mean
 * over every row (attention received: HiPrune, FoPru).
 */
export type RowSet = 'cls' | 'one' | 'all';

export interface AttentionTrial {
  family: 'attention';
  name: string;
  B: number;
  H: number;
  N: number;
  D: number;
  rows: RowSet;
  causal: boolean;
  dtype: FloatDType;
  /** Time through the Promise API instead of the Sync one. */
  viaPromise?: boolean;
  /** Logits from INT8-quantized q and k (SageAttention style). */
  int8?: boolean;
  /** Skipped with --quick. */
  big?: boolean;
}

export interface SelectTrial {
  family: 'select';
  name: string;
  B: number;
  N: number;
  k: number;
  big?: boolean;
}

/** Quantize an [R, C] tensor (one direction: x → codes + scales). */
export interface QuantTrial {
  family: 'quantize';
  name: string;
  R: number;
  C: number;
  bits: 8 | 4;
  /** 'token' or a group size. */
  granularity: 'token' | number;
  dtype: FloatDType;
  /** Evict the caches before every run. */
  cold?: boolean;
  big?: boolean;
}

/**
 * Token merging: one ToMe merge step (bipartite soft matching on the parity
 * split with CLS protected, then merge_wavg with sizes), metric = x [B, N, C];
 * or VisionZip's contextual merge (577 tokens, 162 dominant, 30 contextual).
 */
export interface MergeTrial {
  family: 'merge';
  name: string;
  kind: 'tome' | 'visionzip';
  B: number;
  N: number;
  C: number;
  r: number;
  /** Score precision of the matching (default 'f32'); 'bf16' runs on the tensor cores on CUDA. */
  precision?: 'f32' | 'bf16';
  big?: boolean;
  /**
   * The merge writes into outputs allocated once (`merge`'s `out`), as a
   * runtime reusing its per-layer buffers would; otherwise each call
   * allocates them, as the earlier sections of RESULTS measured.
   */
  reuseOut?: boolean;
}

/**
 * Diversity / coverage / clustering selection (specs/performance.md D3):
 * 'kcenter' x [1, N, C] (DivPrune's rule, per segment when segments > 1);
 * 'coverage' greedy max coverage over a prebuilt [m + n, n] MMTok matrix;
 * 'mmtok' the builder + greedy; 'kmedoids' CenterCLIP's clustering.
 */
export interface DiversityTrial {
  /** 'diversity' for kcenter and kmedoids, 'coverage' for coverage and mmtok (the kernel families). */
  family: 'diversity' | 'coverage';
  kind: 'kcenter' | 'coverage' | 'mmtok' | 'kmedoids';
  name: string;
  /** Tokens (kcenter, kmedoids) or vision tokens n (coverage, mmtok). */
  N: number;
  /** Channels (kcenter, kmedoids) or embedding width D (mmtok). */
  C: number;
  k: number;
  segments: number;
  /** Text tokens m (coverage, mmtok). */
  m?: number;
  big?: boolean;
}

/**
 * Block-sparse attention (issue 15): q, k, v [B, H, N, D] bf16, a random
 * 64×64 block mask keeping round(density·nK) kv blocks in every q-block row
 * (PARO's bench masks; density 1 is the 'dense' path itself), in the
 * trial's precision. gpuOnly trials (a whole video-DiT layer) are skipped on
 * the CPU, where one run would take minutes.
 */
export interface BlockSparseTrial {
  family: 'blocksparse';
  name: string;
  B: number;
  H: number;
  N: number;
  D: number;
  density: number;
  precision: 'bf16' | 'int8';
  /** 'mass': blockAttentionMass (the q-block × kv-block softmax mass PARO's masks are calibrated from) instead of the attention. */
  kind?: 'mass';
  gpuOnly?: boolean;
  big?: boolean;
}

export type Trial = AttentionTrial | SelectTrial | QuantTrial | MergeTrial | DiversityTrial | BlockSparseTrial;

/**
 * End to end (issue 16): PP-OCRv4's recognizer in onnxruntime-node
 * (examples/ocr) with ToMe or attention-received pruning between its two
 * transformer blocks, on the bundled text lines: CER and time per setting.
 * Not a kernel: bench/run.ts runs it as a special case, and skips it when
 * examples/ocr's own dependencies are not installed.
 */
export interface OcrTrial {
  family: 'ocr';
  name: string;
  method: 'tome' | 'prune';
  big?: boolean;
}

export const OCR_TRIALS: OcrTrial[] = [
  { family: 'ocr', name: 'ocr e2e tome', method: 'tome' },
  { family: 'ocr', name: 'ocr e2e prune', method: 'prune' },
];

/** Every trial, kernels and end to end, as --filter and --help see them. */
export type AnyTrial = Trial | OcrTrial;

/** A trial of the diversity or the coverage family (one trial shape serves both). */
export function isDiversityTrial(t: Trial): t is DiversityTrial {
  return t.family === 'diversity' || t.family === 'coverage';
}

const att = (name: string, B: number, H: number, N: number, D: number, rows: RowSet, extra: Partial<AttentionTrial> = {}): AttentionTrial => ({
  family: 'attention', name, B, H, N, D, rows, causal: false, dtype: 'f32', ...extra,
});

export const TRIALS: Trial[] = [
  // CLS row (FasterVLM / VisionZip): one query row, CLS column dropped
  att('cls CLIP-L b1', 1, 16, 577, 64, 'cls'),
  att('cls CLIP-L b1 (Promise API)', 1, 16, 577, 64, 'cls', { viaPromise: true }),
  att('cls CLIP-L b5', 5, 16, 577, 64, 'cls'),
  att('cls CLIP-L b16', 16, 16, 577, 64, 'cls'),
  att('cls CLIP-L 64 frames', 64, 16, 577, 64, 'cls'),
  att('cls SigLIP b1', 1, 16, 729, 72, 'cls'),
  att('cls Qwen2.5-VL b1', 1, 16, 4784, 80, 'cls'),
  // one row (FastV): the last token of a causal layer
  att('one CLIP-L b1', 1, 16, 577, 64, 'one', { causal: true }),
  att('one LLM 3000x32x128', 1, 32, 3000, 128, 'one', { causal: true }),
  // all rows (attention received: HiPrune, FoPru)
  att('all CLIP-L b1', 1, 16, 577, 64, 'all'),
  att('all CLIP-L b5', 5, 16, 577, 64, 'all'),
  att('all CLIP-L b5 bf16', 5, 16, 577, 64, 'all', { dtype: 'bf16' }),
  att('all CLIP-L b16', 16, 16, 577, 64, 'all', { big: true }),
  att('all SigLIP b1', 1, 16, 729, 72, 'all'),
  att('all Qwen2.5-VL b1', 1, 16, 4784, 80, 'all', { big: true }),
  att('all LLM 3000x32x128 causal', 1, 32, 3000, 128, 'all', { causal: true, big: true }),
  // INT8 logits (SageAttention-style Q per 32 rows, K per 64 rows, smoothed K)
  att('all CLIP-L b1 int8', 1, 16, 577, 64, 'all', { int8: true }),
  att('cls CLIP-L b16 int8', 16, 16, 577, 64, 'cls', { int8: true }),
  att('all Qwen2.5-VL b1 int8', 1, 16, 4784, 80, 'all', { int8: true, big: true }),
  // top-k over one score row per image/frame
  { family: 'select', name: 'topk 576 k144 b1', B: 1, N: 576, k: 144 },
  { family: 'select', name: 'topk 576 k144 b16', B: 16, N: 576, k: 144 },
  { family: 'select', name: 'topk 4784 k1196 b1', B: 1, N: 4784, k: 1196 },
  { family: 'select', name: 'topk 12544 k1254 b1', B: 1, N: 12544, k: 1254 },
  { family: 'select', name: 'topk 196 k60 b64 (video frames)', B: 64, N: 196, k: 60 },
  // quantization (specs/performance.md D5): INT8 per token, INT4 per group
  ...quantTrials(),
  // token merging (issue 3): one ToMe step = bipartite soft matching + merge_wavg
  ...mergeTrials(),
  // diversity selection (specs/performance.md D3)
  ...diversityTrials(),
  // block-sparse attention (issue 15)
  ...blockSparseTrials(),
];

function blockSparseTrials(): BlockSparseTrial[] {
  const t = (name: string, H: number, N: number, D: number, density: number, precision: 'bf16' | 'int8', extra: Partial<BlockSparseTrial> = {}): BlockSparseTrial => ({
    family: 'blocksparse', name: `${name} ${density === 1 ? 'dense' : `rho ${density}`}${precision === 'int8' ? ' int8' : ''}`, B: 1, H, N, D, density, precision, ...extra,
  });
  const out: BlockSparseTrial[] = [];
  // CPU-sized: 4096 tokens, 8 heads; one CogVideoX head.
  for (const rho of [1, 0.3]) out.push(t('blocksparse 4096 H8 d64', 8, 4096, 64, rho, 'bf16'));
  out.push(t('blocksparse 4096 H8 d64', 8, 4096, 64, 0.3, 'int8'));
  out.push({ family: 'blocksparse', name: 'blockmass 4096 H8 d64', B: 1, H: 8, N: 4096, D: 64, density: 1, precision: 'bf16', kind: 'mass' });
  out.push(t('blocksparse CogVideoX 1 head', 1, 17776, 64, 0.2, 'bf16', { big: true }));
  // A CogVideoX layer (13×30×45 + 226 text = 17,776 tokens, 48 heads, d 64) and a Wan 480p layer.
  for (const precision of ['bf16', 'int8'] as const) {
    for (const rho of [1, 0.5, 0.3, 0.2]) out.push(t('blocksparse CogVideoX layer', 48, 17776, 64, rho, precision, { gpuOnly: true, big: true }));
    out.push(t('blocksparse Wan 480p layer', 40, 32760, 128, 0.25, precision, { gpuOnly: true, big: true }));
  }
  out.push(t('blocksparse Wan 480p layer', 40, 32760, 128, 1, 'bf16', { gpuOnly: true, big: true }));
  return out;
}

/**
 * A random block mask as FlexAttention lists: every q-block row of every
 * head keeps round(density·nK) distinct kv blocks (at least 1), sorted.
 */
export function randomBlockLists(H: number, nQ: number, nK: number, density: number, seed: number): { counts: Int32Array; indices: Int32Array; kept: number } {
  const per = Math.max(1, Math.min(nK, Math.round(density * nK)));
  const counts = new Int32Array(H * nQ).fill(per);
  const indices = new Int32Array(H * nQ * per);
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
  const all = Array.from({ length: nK }, (_, i) => i);
  for (let r = 0; r < H * nQ; r++) {
    for (let i = 0; i < per; i++) {
      const j = i + Math.floor(next() * (nK - i));
      [all[i], all[j]] = [all[j], all[i]];
    }
    const chosen = all.slice(0, per).sort((a, b) => a - b);
    indices.set(chosen, r * per);
  }
  return { counts, indices, kept: per };
}

function mergeTrials(): MergeTrial[] {
  const t = (B: number, N: number, C: number, rDiv: number, big = false, precision: 'f32' | 'bf16' = 'f32'): MergeTrial => ({
    family: 'merge', kind: 'tome', name: `tome ${N}x${C} b${B} r=N/${rDiv}${precision === 'bf16' ? ' bf16' : ''}`, B, N, C, r: Math.floor(N / rDiv), precision, big,
  });
  return [
    t(1, 577, 64, 4), t(1, 577, 1024, 8), t(1, 577, 1024, 4), t(1, 577, 1024, 2), t(1, 577, 4096, 4),
    // The same step with the merge's outputs reused: a fresh 1.8 MB output
    // faults in page by page (the merge 0.19–0.34 ms per call, 0.07 reused).
    { ...t(1, 577, 1024, 4), name: 'tome 577x1024 b1 r=N/4 (out reused)', reuseOut: true },
    t(32, 577, 64, 4), t(32, 577, 1024, 4, true),
    // Its 55 MB output is above glibc's largest mmap threshold (32 MiB), so a
    // fresh one is fresh pages on every call: 113 of 137 ms in page faults on
    // the Zen 5 VM (~11 µs per 4 KiB page), 7.9 ms with the output reused.
    { ...t(32, 577, 1024, 4, true), name: 'tome 577x1024 b32 r=N/4 (out reused)', reuseOut: true },
    t(1, 2880, 64, 4), t(1, 2880, 1024, 4), t(1, 2880, 4096, 4, true),
    t(1, 12544, 64, 4, true), t(1, 12544, 1024, 4, true), t(1, 12544, 4096, 4, true),
    // precision 'bf16' (issue 3: the similarity pass on the tensor cores; roof 989 TFLOP/s on H100/H200)
    t(1, 577, 1024, 4, false, 'bf16'), t(1, 12544, 4096, 4, true, 'bf16'),
    { family: 'merge', kind: 'visionzip', name: 'visionzip contextual 577x1024 (162+30)', B: 1, N: 577, C: 1024, r: 30 },
  ];
}

function diversityTrials(): DiversityTrial[] {
  const d = (kind: DiversityTrial['kind'], name: string, N: number, C: number, k: number, segments = 1, extra: Partial<DiversityTrial> = {}): DiversityTrial => ({
    family: kind === 'coverage' || kind === 'mmtok' ? 'coverage' : 'diversity', kind, name, N, C, k, segments, ...extra,
  });
  return [
    d('kcenter', 'kcenter 576x1024 k58', 576, 1024, 58),
    d('kcenter', 'kcenter 576x1024 k64', 576, 1024, 64),
    d('kcenter', 'kcenter 576x1024 k128', 576, 1024, 128),
    d('kcenter', 'kcenter 576x4096 k56 (DivPrune LLaVA-1.5)', 576, 4096, 56),
    d('kcenter', 'kcenter 2880x1024 k288', 2880, 1024, 288),
    d('kcenter', 'kcenter 2880x4096 k288', 2880, 4096, 288, 1, { big: true }),
    // 12544 = 64 frames × 196 tokens; 20 per frame (1280 in all, the nearest
    // per-segment count to the issue's 1254).
    d('kcenter', 'kcenter 12544x1152 64 segments k20/seg', 12544, 1152, 20, 64),
    d('coverage', 'maxcoverage MMTok n576 m16 k64', 576, 0, 64, 1, { m: 16 }),
    d('mmtok', 'mmtok build+select n576 m16 D4096 k64', 576, 4096, 64, 1, { m: 16 }),
    d('kmedoids', 'kmedoids 12 frames x49 x768 K49 (6 segments)', 588, 768, 49, 6),
  ];
}

function quantTrials(): QuantTrial[] {
  const sizes: Array<[number, number, boolean]> = [[576, 4096, false], [2880, 4096, false], [12544, 4096, true], [2048, 16384, true]];
  const out: QuantTrial[] = [];
  for (const [R, C, big] of sizes) {
    const q = (bits: 8 | 4, granularity: 'token' | number, extra: Partial<QuantTrial> = {}): QuantTrial => ({
      family: 'quantize',
      name: `quant ${R}x${C} ${bits === 8 ? 'int8 token' : `int4 g${granularity}`}${extra.dtype === 'bf16' ? ' bf16' : ''}${extra.cold ? ' cold' : ''}`,
      R, C, bits, granularity, dtype: 'f32', big, ...extra,
    });
    out.push(q(8, 'token'), q(8, 'token', { cold: true }), q(4, 32), q(4, 64), q(4, 64, { cold: true }), q(4, 128));
    if (R === 12544) out.push(q(8, 'token', { dtype: 'bf16' }), q(4, 64, { dtype: 'bf16' }));
  }
  return out;
}

export interface Work {
  /** Floating-point operations (2 per multiply-add of q·k). */
  flops: number;
  /** Exponentials. */
  exps: number;
  /** Bytes that must move: inputs read once, output written once. */
  bytes: number;
  /** Comparisons (top-k), reported instead of FLOPs. */
  compares?: number;
}

/** Selected query rows and the key range a trial asks for. */
export function selection(t: AttentionTrial): { rows: number[]; keyStart: number } {
  if (t.rows === 'cls') return { rows: [0], keyStart: 1 };
  if (t.rows === 'one') return { rows: [t.N - 1], keyStart: 0 };
  return { rows: Array.from({ length: t.N }, (_, i) => i), keyStart: 0 };
}

const DTYPE_BYTES: Record<FloatDType, number> = { f32: 4, f16: 2, bf16: 2 };

/**
 * The minimal work: every logit a selected row needs (its visible keys),
 * one exp per logit, q rows and k read once, the output written once.
 */
export function work(t: Trial): Work {
  if (t.family === 'blocksparse' && t.kind === 'mass') {
    // Every logit (2 FLOPs per multiply-add of QKᵀ) and its exp; q and k read once (bf16).
    const logits = t.B * t.H * t.N * t.N;
    return { flops: 2 * t.D * logits, exps: logits, bytes: 2 * 2 * t.B * t.H * t.N * t.D };
  }
  if (t.family === 'blocksparse') {
    // Kept keys per row ≈ kept blocks × 64 (the mask's blocks; tails aside):
    // 2 FLOPs per multiply-add in QKᵀ and in PV, one exp per kept logit,
    // q, k, v read and out written once (bf16).
    const nK = Math.ceil(t.N / 64);
    const keys = Math.min(t.N, Math.max(1, Math.round(t.density * nK)) * 64);
    const logits = t.B * t.H * t.N * keys;
    return { flops: 4 * t.D * logits, exps: logits, bytes: 2 * 4 * t.B * t.H * t.N * t.D };
  }
  if (isDiversityTrial(t)) {
    const S = t.N / t.segments;
    if (t.kind === 'kcenter') {
      // Nearest-neighbour pass: every pair once (S²/2 dots of 2C FLOPs).
      return { flops: t.segments * S * S * t.C, exps: 0, bytes: 4 * t.N * t.C };
    }
    if (t.kind === 'kmedoids') return { flops: t.segments * S * S * t.C, exps: 0, bytes: 4 * t.N * t.C };
    const R = (t.m ?? 0) + t.N;
    // The greedy's gains are updated pick by pick, not recomputed (only the
    // rows a pick raises change them: data-dependent, ~7% per step on
    // MMTok's matrix), so its minimal work is one pass over the [R, n]
    // matrix for the step-0 gains (a subtract-max and an add per entry).
    if (t.kind === 'coverage') return { flops: 2 * R * t.N, exps: 0, bytes: 4 * R * t.N };
    // MMTok: text-vision similarities (2mnD), the symmetric vision-vision
    // ones once per pair (n²D), a softmax exp per entry, and the greedy's
    // pass over the [m + n, n] matrix.
    const m = t.m ?? 0;
    return {
      flops: 2 * m * t.N * t.C + t.N * t.N * t.C + 2 * R * t.N,
      exps: R * t.N,
      bytes: 4 * R * t.N + 4 * R * t.C,
    };
  }
  if (t.family === 'quantize') {
    const n = t.R * t.C;
    const scales = t.granularity === 'token' ? t.R : t.R * Math.ceil(t.C / t.granularity);
    return { flops: 0, exps: 0, bytes: DTYPE_BYTES[t.dtype] * n + (t.bits === 8 ? n : t.R * Math.ceil(t.C / 2)) + 4 * scales };
  }
  if (t.family === 'merge') {
    if (t.kind === 'visionzip') {
      // 415 remaining tokens against 30 targets on 64-channel keys, hidden 1024
      const nr = t.N - 162;
      return { flops: 2 * t.B * nr * t.r * 64, exps: 0, bytes: 4 * t.B * (t.N * 64 + nr * t.C + t.r * t.C) };
    }
    const na = Math.ceil(t.N / 2);
    const nb = Math.floor(t.N / 2);
    // similarity a·bᵀ over C, plus metric and x read once and the merged x written
    return { flops: 2 * t.B * na * nb * t.C, exps: 0, bytes: 4 * t.B * (2 * t.N * t.C + (t.N - t.r) * t.C) };
  }
  if (t.family === 'select') {
    return { flops: 0, exps: 0, bytes: 4 * t.B * t.N + 8 * t.B * t.k, compares: t.B * t.N * Math.log2(Math.max(2, t.k)) };
  }
  const { rows, keyStart } = selection(t);
  let logits = 0;
  for (const r of rows) logits += t.causal ? r + 1 : t.N;
  logits *= t.B * t.H;
  const e = DTYPE_BYTES[t.dtype];
  const bytes = e * t.B * t.H * (rows.length + t.N) * t.D + 4 * t.B * (t.N - keyStart);
  return { flops: 2 * t.D * logits, exps: logits, bytes };
}

/** Every trial, kernels first. */
export const ALL_TRIALS: AnyTrial[] = [...TRIALS, ...OCR_TRIALS];

export function isOcrTrial(t: AnyTrial): t is OcrTrial {
  return t.family === 'ocr';
}
