/**
 * `npx tokensieve bench` / `npm run bench`: runs the declarative trials of
 * bench/trials.ts, and prints for each the median time, the work done, the
 * fraction of this machine's roof (measured in the same run) and the speed-up
 * over a plain TypeScript baseline and over PyTorch eager (when
 * /usr/bin/python3 has torch).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  attentionScores,
  attentionScoresSync,
  blockAttentionMassSync,
  blockSparseAttentionSync,
  BlockMaskLike,
  getThreads,
  info,
  kCenterSync,
  kMedoidsSync,
  maxCoverageSync,
  mmTokSync,
  QuerySelection,
  quantizeSync,
  setThreads,
  Tensor,
  toHalfBits,
  topkSync,
} from '../lib';
import { native } from '../lib/native';
import { attentionScoresTs, contextualTs, kCenterTs, maxCoverageTs, quantizeTs, tomeStepTs, topkTs } from './baseline-ts';
import { bipartiteSoftMatchSync, contextualMergeSync, mergeSync } from '../lib';
import { markdownReport, ReportData, ReportRow, roofText, svgPlot } from './report';
import { ALL_TRIALS, AnyTrial, AttentionTrial, BlockSparseTrial, DiversityTrial, isDiversityTrial, isOcrTrial, MergeTrial, QuantTrial, randomBlockLists, selection, Trial, SelectTrial, work, Work } from './trials';
import { runOcrTrials } from './ocr';

interface Options {
  filter?: string;
  quick: boolean;
  /** Evict the caches before every timed run (cold-cache times). */
  cold: boolean;
  device: 'cpu' | 'cuda';
  torch: boolean;
  ts: boolean;
  json?: string;
  markdown?: string;
  plot?: string;
  threads?: number;
}

/** Ceilings the fraction of roof is taken against (bytes/s, FLOP/s, exp/s). */
interface Roof {
  label: string;
  flops: number;
  /** The bf16 dot tile's rate (vdpbf16ps), for the trials whose products run on it; absent elsewhere. */
  bf16Flops?: number;
  exps: number;
  bytes: number;
}

interface Timing {
  medianMs: number;
  /**
   * The mean of the same calls: what a loop of them sustains. Above the
   * median where a few calls pay for many (page faults on fresh outputs,
   * a collection), which the median hides.
   */
  meanMs?: number;
  minMs: number;
  reps: number;
  /** --device cuda: median GPU time of the call by CUDA events (launch gaps hidden, see deviceKernelMs). */
  kernelMs?: number;
}

interface Row {
  trial: Trial;
  shape: string;
  work: Work;
  ours: Timing;
  roofFraction: number;
  bound: string;
  ts?: Timing | { skipped: string };
  torch: Record<string, Timing | { skipped: string }>;
}

const HELP_OPTIONS = `Usage: tokensieve bench [options]
  --filter <text>    only trials whose name contains <text>, or a whole family (e.g. attention)
  --quick            fewer repetitions; skip the largest trials
  --cold             evict CPU caches (64 MiB written) before every timed run
  --device cpu|cuda  where the kernels run (default cpu). On cuda: inputs are
                     generated on the GPU, every trial also reports its kernel
                     time by CUDA events, the roof is measured on the GPU, and
                     the torch baseline runs on the same GPU (no TS baseline)
  --no-torch         skip the PyTorch baseline: the first of $TOKENSIEVE_PYTHON,
                     $TOKENSIEVE_BENCH_PYTHON, /usr/bin/python3 and python3 on
                     PATH (on cuda: PATH first) that imports torch (with CUDA
                     on --device cuda)
  --no-ts            skip the plain TypeScript baseline
  --threads <n>      CPU pool size (default: all cores)
  --json <file>      write every measurement as JSON
  --markdown <file>  write a report: machine, how to read it, a table per family
  --plot <file.svg>  draw tokensieve vs the baselines, a panel per family (SVG)
`;

/** The trials, by family, as --help lists them. */
export function trialList(trials: readonly AnyTrial[] = ALL_TRIALS): string {
  const fams: string[] = [];
  for (const t of trials) if (!fams.includes(t.family)) fams.push(t.family);
  const lines = ['', 'Trials (--filter matches a name or a family; * = skipped by --quick):'];
  for (const f of fams) {
    lines.push(`  ${f}:`);
    for (const t of trials.filter((x) => x.family === f)) lines.push(`    ${t.name}${t.big ? ' *' : ''}`);
  }
  return `${lines.join('\n')}\n`;
}

const HELP = (): string => HELP_OPTIONS + trialList();

/** The trials --filter selects (a name substring, or a family's exact name). */
export function selectTrials(filter: string | undefined, quick: boolean, trials: readonly AnyTrial[] = ALL_TRIALS): AnyTrial[] {
  return trials.filter((t) => (!filter || t.name.includes(filter) || t.family === filter) && !(quick && t.big));
}

function parse(argv: string[]): Options | undefined {
  const o: Options = { quick: false, cold: false, device: 'cpu', torch: true, ts: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--help' || a === '-h') return undefined;
    else if (a === '--filter') o.filter = next();
    else if (a === '--quick') o.quick = true;
    else if (a === '--cold') o.cold = true;
    else if (a === '--device') {
      const d = next();
      if (d !== 'cpu' && d !== 'cuda') throw new Error(`--device must be cpu or cuda, not ${d}`);
      o.device = d;
    } else if (a === '--no-torch') o.torch = false;
    else if (a === '--no-ts') o.ts = false;
    else if (a === '--json') o.json = next();
    else if (a === '--markdown') o.markdown = next();
    else if (a === '--plot') o.plot = next();
    else if (a === '--threads') o.threads = Number(next());
    else throw new Error(`unknown option ${a}`);
  }
  // On the GPU the comparison that matters is torch on the same device; a
  // plain-TS pass over video-sized inputs would take minutes of host time.
  if (o.device === 'cuda') o.ts = false;
  return o;
}

/**
 * Median and minimum of repeated runs: a warm-up of about 50 ms (caches,
 * thread-pool wake-ups, clock ramp), then at least `min` runs and more until
 * the budget is spent (up to 1000 for microsecond kernels).
 */
let evictBeforeRuns = false;
/** --device cuda: also time every call by CUDA events (see deviceKernelMs). */
let deviceTiming = false;
const evictBuffer = new Float64Array(8 << 20); // 64 MiB: more than any L3 here
function evictCaches(): void {
  for (let i = 0; i < evictBuffer.length; i += 8) evictBuffer[i] += 1;
}

/**
 * Warm-up before timing: at least 50 ms and, up to 300 ms, at least 32
 * calls. A process's first calls with a large host output fault in fresh
 * pages: ToMe's 1.8 MB merge output took 436 page faults (3.4 ms on a PVM
 * guest, 8 µs a fault) per call for its first ~30 calls, then none (glibc's
 * mmap threshold adapting, as far as we can tell; a forced GC after 10 calls
 * did not end it sooner). Timed from the first call, such a trial reported
 * 5× its steady time.
 */
const kWarmMinMs = 50;
const kWarmCalls = 32;
const kWarmMaxMs = 300;
function warmedUp(calls: number, start: number): boolean {
  const ms = performance.now() - start;
  return ms >= kWarmMinMs && (calls >= kWarmCalls || ms >= kWarmMaxMs);
}

function time(fn: () => void, quick: boolean, estimateMs?: number, cold = evictBeforeRuns): Timing {
  const slow = (estimateMs ?? 0) > 500;
  const warmStart = performance.now();
  let warmCalls = 0;
  do {
    fn();
    warmCalls++;
  } while (!slow && !warmedUp(warmCalls, warmStart));
  const min = slow ? 2 : quick ? 3 : 5;
  const max = slow ? 3 : 1000;
  const budgetMs = quick ? 150 : 500;
  const times: number[] = [];
  const start = performance.now();
  let spent = 0;
  while (times.length < min || (times.length < max && spent < budgetMs)) {
    if (cold) evictCaches();
    const t0 = performance.now();
    fn();
    const dt = performance.now() - t0;
    times.push(dt);
    spent = cold ? spent + dt + 2 : performance.now() - start;
  }
  const meanMs = times.reduce((a, b) => a + b, 0) / times.length;
  times.sort((a, b) => a - b);
  const kernelMs = deviceTiming ? deviceKernelMs(fn, Math.min(times.length, 30)) : undefined;
  return { medianMs: times[times.length >> 1], meanMs, minMs: times[0], reps: times.length, kernelMs };
}

/**
 * The GPU time of a call, median of `reps`: CUDA events on the default
 * stream around it, with a 200 µs spin kernel queued first so that the host
 * has enqueued the call's kernels before the start event fires; the interval
 * is then the kernels back to back, without the host's launch overhead (the
 * wall time minus this is the call overhead). Calls that synchronize inside
 * (a NaN-flag read) still show that gap.
 */
function deviceKernelMs(fn: () => void, reps: number): number {
  const n = native();
  const times: number[] = [];
  for (let i = 0; i < Math.max(3, reps); i++) {
    n.startTimer(0, undefined, 200);
    fn();
    times.push(n.stopTimer(0, undefined));
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1];
}

/**
 * A bench input on cuda:0, filled on the GPU (bench.h fillUniform: values in
 * [-2, 2)·scale from a hash of (seed, index)), so no host array is built or
 * uploaded: large video trials used to spend most of their time here.
 */
function deviceInput(shape: number[], dtype: 'f32' | 'f16' | 'bf16', seed: number, scale = 1): Tensor {
  const t = Tensor.empty(shape, dtype, 'cuda:0');
  const d = t.descriptor('input');
  const r = native().fillUniform(d.meta, d.mem, seed, -2 * scale, 2 * scale, undefined, false);
  if (r !== undefined && (r as { then?: unknown }).then !== undefined) throw new Error('fillUniform: unexpected Promise');
  return t;
}

async function timeAsync(fn: () => Promise<unknown>, quick: boolean): Promise<Timing> {
  const warmStart = performance.now();
  let warmCalls = 0;
  do {
    await fn();
    warmCalls++;
  } while (!warmedUp(warmCalls, warmStart));
  const times: number[] = [];
  const start = performance.now();
  let spent = 0;
  while (times.length < (quick ? 3 : 5) || (times.length < 1000 && spent < (quick ? 150 : 500))) {
    if (evictBeforeRuns) evictCaches();
    const t0 = performance.now();
    await fn();
    const dt = performance.now() - t0;
    times.push(dt);
    spent = evictBeforeRuns ? spent + dt + 2 : performance.now() - start;
  }
  const meanMs = times.reduce((a, b) => a + b, 0) / times.length;
  times.sort((a, b) => a - b);
  return { medianMs: times[times.length >> 1], meanMs, minMs: times[0], reps: times.length };
}

/** Deterministic values in [-2, 2) (the timing does not depend on them). */
function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = ((x >>> 0) / 4294967296) * 4 - 2;
  }
  return out;
}

/**
 * Whether a CPU trial's products run on the bf16 dot tile (info().cpu.isa
 * 'avx512-bf16…'): ToMe's bf16 scores, attention logits of bf16 operands in
 * row tiles (not the CLS or last row alone, which take the f32 path), and
 * block-sparse attention and block mass on bf16 inputs (not INT8).
 */
function onBf16Dot(t: Trial, roof: Roof): boolean {
  if (roof.bf16Flops === undefined) return false;
  if (t.family === 'merge') return t.kind === 'tome' && t.precision === 'bf16';
  if (t.family === 'blocksparse') return t.precision === 'bf16';
  return t.family === 'attention' && !t.int8 && t.dtype === 'bf16' && t.rows === 'all';
}

function roofFraction(w: Work, ms: number, roof: Roof, bf16Dot = false): { fraction: number; bound: string } {
  const floors: Array<[string, number]> = [
    [bf16Dot ? 'compute, bf16 dot' : 'compute', w.flops / (bf16Dot ? roof.bf16Flops! : roof.flops)],
    ['exp', w.exps / roof.exps],
    ['memory', w.bytes / roof.bytes],
  ];
  floors.sort((a, b) => b[1] - a[1]);
  return { fraction: floors[0][1] / (ms / 1e3), bound: floors[0][0] };
}

interface TorchResult {
  name: string;
  variant: string;
  median_ms?: number;
  min_ms?: number;
  reps?: number;
  skipped?: string;
}

/**
 * The python that runs the torch baseline: $TOKENSIEVE_PYTHON,
 * $TOKENSIEVE_BENCH_PYTHON, then /usr/bin/python3 and `python3` on PATH (PATH
 * first on cuda: GPU hosts keep CUDA torch in a virtualenv), the first that
 * imports torch (with a CUDA device on --device cuda).
 */
export function findTorchPython(device: 'cpu' | 'cuda'): { python?: string; tried: string[] } {
  const env = [process.env.TOKENSIEVE_PYTHON, process.env.TOKENSIEVE_BENCH_PYTHON].filter((p): p is string => !!p);
  const system = device === 'cuda' ? ['python3', '/usr/bin/python3'] : ['/usr/bin/python3', 'python3'];
  const tried: string[] = [];
  const probe = device === 'cuda' ? 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' : 'import torch';
  for (const p of [...env, ...system]) {
    if (tried.includes(p)) continue;
    tried.push(p);
    const r = spawnSync(p, ['-c', probe], { encoding: 'utf8', timeout: 120000 });
    if (r.status === 0) return { python: p, tried };
  }
  return { tried };
}

function runTorch(trials: Trial[], threads: number, quick: boolean, device: 'cpu' | 'cuda'): { header: string; results: TorchResult[] } {
  const { python, tried } = findTorchPython(device);
  if (!python) return { header: `torch: none of ${tried.join(', ')} imports torch${device === 'cuda' ? ' with CUDA' : ''}`, results: [] };
  const script = [path.join(__dirname, 'baseline_torch.py'), path.join(__dirname, '..', '..', 'bench', 'baseline_torch.py')].find((p) => fs.existsSync(p));
  if (!script) return { header: 'torch: baseline_torch.py not found', results: [] };
  const specs = trials
    .filter((t) => !(quick && t.big))
    .map((t) => ({ ...t, threads, device }));
  const r = spawnSync(python, [script], { input: JSON.stringify(specs), encoding: 'utf8', maxBuffer: 1 << 24, timeout: 1800000 });
  const lines = (r.stdout || '').split('\n').filter(Boolean).map((l) => JSON.parse(l) as TorchResult & { error?: string; torch?: string; blas?: string; device?: string });
  if (lines.length === 0) return { header: `torch: no output (${(r.stderr || '').trim().split('\n').pop()})`, results: [] };
  if (lines[0].error) return { header: `torch: ${lines[0].error}`, results: [] };
  const head = lines[0];
  const where = device === 'cuda' ? `CUDA, same GPU (${head.device ?? 'unknown'}), a synchronize per call` : `CPU, ${threads} threads; BLAS: ${head.blas}`;
  return { header: `torch ${head.torch} via ${python} (eager, ${where})`, results: lines.slice(1) as TorchResult[] };
}

function describeShape(t: Trial): string {
  if (t.family === 'blocksparse' && t.kind === 'mass') return `B${t.B} H${t.H} N${t.N} D${t.D} bf16, mass per 64×64 block`;
  if (t.family === 'blocksparse') return `B${t.B} H${t.H} N${t.N} D${t.D} bf16${t.precision === 'int8' ? ' (QK int8)' : ''}, 64×64 blocks`;
  if (isDiversityTrial(t)) {
    if (t.kind === 'coverage') return `R${(t.m ?? 0) + t.N} n${t.N} k${t.k}`;
    if (t.kind === 'mmtok') return `m${t.m} n${t.N} D${t.C} k${t.k}`;
    return `N${t.N} C${t.C} k${t.k}${t.segments > 1 ? ` × ${t.segments} segments` : ''} f32`;
  }
  if (t.family === 'select') return `B${t.B} N${t.N} k${t.k}`;
  if (t.family === 'merge') return t.kind === 'tome' ? `B${t.B} N${t.N} C${t.C} r${t.r}${t.precision === 'bf16' ? ' bf16 scores' : ''}` : `B${t.B} N${t.N} C${t.C} c${t.r}`;
  if (t.family === 'quantize') return `${t.R}x${t.C} ${t.dtype} → ${t.bits === 8 ? 'i8' : 'u4'}${t.cold ? ' (cold)' : ''}`;
  return `B${t.B} H${t.H} N${t.N} D${t.D}${t.causal ? ' causal' : ''} ${t.dtype}`;
}

async function runAttention(t: AttentionTrial, o: Options): Promise<{ ours: Timing; ts?: Timing | { skipped: string } }> {
  const n = t.B * t.H * t.N * t.D;
  const cuda = o.device === 'cuda';
  const qv = cuda ? new Float32Array(0) : values(n, 1);
  const kv = cuda ? new Float32Array(0) : values(n, 2);
  const shape = [t.B, t.H, t.N, t.D];
  const host = (v: Float32Array) =>
    t.dtype === 'f32' ? Tensor.from({ data: v, shape }) : Tensor.from({ data: toHalfBits(v, t.dtype), shape, dtype: t.dtype });
  const q = cuda ? deviceInput(shape, t.dtype, 1) : host(qv);
  const k = cuda ? deviceInput(shape, t.dtype, 2) : host(kv);
  const { rows, keyStart } = selection(t);
  const queries: QuerySelection = t.rows === 'cls' ? 0 : t.rows === 'one' ? -1 : 'all';
  const out = Tensor.empty([t.B, t.N - keyStart], 'f32', o.device === 'cuda' ? 'cuda:0' : 'cpu');
  const opts = { queries, keys: { start: keyStart }, causal: t.causal, out, ...(t.int8 ? { precision: 'int8' as const } : {}) };
  const w = work(t);
  const estimate = (w.flops / 40e9) * 1e3; // rough ms at this CPU's speed
  const ours = t.viaPromise
    ? await timeAsync(() => attentionScores(q, k, opts), o.quick)
    : time(() => attentionScoresSync(q, k, opts), o.quick, estimate);
  let ts: Timing | { skipped: string } | undefined;
  if (o.ts) {
    const estS = w.flops / 1e9; // plain JS does about 1 GFLOP/s
    ts = estS > 20
      ? { skipped: `est. ${estS.toFixed(0)} s` }
      : time(() => attentionScoresTs(qv, kv, t.B, t.H, t.N, t.D, rows, keyStart, t.causal), true, estS * 1e3);
  }
  if (o.device === 'cuda') {
    q.dispose();
    k.dispose();
    out.dispose();
  }
  return { ours, ts };
}

// Block-sparse attention on a random 64×64 block mask (density 1: the
// 'dense' path); the mask lists live on the bench's device.
function runBlockSparse(t: BlockSparseTrial, o: Options): { ours: Timing; ts?: Timing | { skipped: string } } {
  const shape = [t.B, t.H, t.N, t.D];
  const n = t.B * t.H * t.N * t.D;
  const make = (seed: number) =>
    o.device === 'cuda' ? deviceInput(shape, 'bf16', seed, 0.5) : Tensor.from({ data: toHalfBits(values(n, seed).map((x) => x * 0.5), 'bf16'), shape, dtype: 'bf16' });
  const q = make(11), k = make(12), v = make(13);
  if (t.kind === 'mass') {
    const estimateMass = o.device === 'cuda' ? undefined : (work(t).flops / 40e9) * 1e3;
    const ours = time(() => release(blockAttentionMassSync(q, k)), o.quick, estimateMass);
    release(q, k, v);
    return { ours, ts: { skipped: 'no TS baseline' } };
  }
  const nB = Math.ceil(t.N / 64);
  let mask: BlockMaskLike | 'dense' = 'dense';
  const lists: Tensor[] = [];
  if (t.density < 1) {
    const l = randomBlockLists(t.H, nB, nB, t.density, 7);
    lists.push(onDevice(Tensor.from({ data: l.counts, shape: [1, t.H, nB] }), o), onDevice(Tensor.from({ data: l.indices, shape: [1, t.H, nB, l.kept] }), o));
    mask = { blockQ: 64, blockK: 64, seqLens: [t.N, t.N], kvNumBlocks: lists[0], kvIndices: lists[1] };
  }
  const estimate = o.device === 'cuda' ? undefined : (work(t).flops / 40e9) * 1e3;
  const precision = t.precision === 'int8' ? ('int8' as const) : ('native' as const);
  // The output allocated once and reused (opts.out), as a runtime would: a
  // fresh 4 MB host output costs ~900 first-touch page faults per call,
  // which would be timed as attention.
  const out = { out: blockSparseAttentionSync(q, k, v, mask, { precision }).out };
  const ours = time(() => blockSparseAttentionSync(q, k, v, mask, { precision, out }), o.quick, estimate);
  release(q, k, v, out.out, ...lists);
  return { ours, ts: { skipped: 'no TS baseline' } };
}

function runTopk(t: SelectTrial, o: Options): { ours: Timing; ts?: Timing } {
  const cuda = o.device === 'cuda';
  const s = cuda ? new Float32Array(0) : values(t.B * t.N, 3);
  const scores = cuda ? deviceInput([t.B, t.N], 'f32', 3) : Tensor.from({ data: s, shape: [t.B, t.N] });
  const ours = time(() => release(...Object.values(topkSync(scores, t.k))), o.quick);
  const ts = o.ts ? time(() => topkTs(s, t.B, t.N, t.k), true) : undefined;
  if (o.device === 'cuda') scores.dispose();
  return { ours, ts };
}

// A host tensor on the bench's device (a copy on cuda:0), and a disposer for
// results: outputs are disposed after every timed call, as a runtime done with
// them would (and as PyTorch frees a tensor when its last reference goes).
// Device memory then does not grow with the repetitions (the GC would free it,
// late), and a host output's memory is reused by the next call instead of
// being fresh pages (lib/hostpool.ts).
function onDevice(t: Tensor, o: Options): Tensor {
  return o.device === 'cuda' ? t.to('cuda:0') : t;
}
function release(...ts: Array<Tensor | undefined>): void {
  for (const t of ts) t?.dispose();
}

// One ToMe step (match + merge_wavg, CLS protected; scores in the trial's
// precision), or VisionZip's contextual merge.
function runMerge(t: MergeTrial, o: Options): { ours: Timing; ts?: Timing | { skipped: string } } {
  if (t.kind === 'visionzip') {
    const x = values(t.N * t.C, 5);
    const m = values(t.N * 64, 6);
    const kept = Int32Array.from({ length: 162 }, (_, i) => Math.floor((i * t.N) / 162));
    const rem = Int32Array.from(Array.from({ length: t.N }, (_, i) => i).filter((i) => !kept.includes(i)));
    const xt = onDevice(Tensor.from({ data: x, shape: [1, t.N, t.C] }), o);
    const mt = onDevice(Tensor.from({ data: m, shape: [1, t.N, 64] }), o);
    const keep = { keptIndices: onDevice(Tensor.from({ data: kept, shape: [1, 162] }), o) };
    const ours = time(() => release(contextualMergeSync(xt, mt, keep, t.r)), o.quick);
    const ts = o.ts ? time(() => contextualTs(x, m, t.N, t.C, 64, rem, t.r), true) : undefined;
    release(xt, mt, keep.keptIndices);
    return { ours, ts };
  }
  const x = o.device === 'cuda' ? new Float32Array(0) : values(t.B * t.N * t.C, 5);
  const xt = o.device === 'cuda' ? deviceInput([t.B, t.N, t.C], 'f32', 5) : Tensor.from({ data: x, shape: [t.B, t.N, t.C] });
  // With reuseOut, the outputs of a first call are written again by every
  // timed call (`out`), as a runtime reusing its buffers would.
  let out: { x: Tensor; sizes: Tensor } | undefined;
  if (t.reuseOut) {
    const plan = bipartiteSoftMatchSync(xt, t.r, { protect: { cls: true }, precision: t.precision ?? 'f32' });
    const first = mergeSync(plan, xt, { mode: 'wavg' });
    plan.dispose();
    out = { x: first.x, sizes: first.sizes as Tensor };
  }
  const ours = time(() => {
    const plan = bipartiteSoftMatchSync(xt, t.r, { protect: { cls: true }, precision: t.precision ?? 'f32' });
    const merged = mergeSync(plan, xt, { mode: 'wavg', out });
    if (!out) release(merged.x, merged.sizes);
    plan.dispose();
  }, o.quick);
  if (out) release(out.x, out.sizes);
  const tsWork = t.B * t.N * t.N * t.C;
  const ts = !o.ts ? undefined : tsWork > 4e9 ? { skipped: 'too slow' } : time(() => tomeStepTs(x, t.B, t.N, t.C, t.r), true);
  release(xt);
  return { ours, ts };
}

function runQuant(t: QuantTrial, o: Options): { ours: Timing; ts?: Timing | { skipped: string } } {
  const cuda = o.device === 'cuda';
  const v = cuda ? new Float32Array(0) : values(t.R * t.C, 4);
  const x = cuda
    ? deviceInput([t.R, t.C], t.dtype, 4)
    : t.dtype === 'f32' ? Tensor.from({ data: v, shape: [t.R, t.C] }) : Tensor.from({ data: toHalfBits(v, t.dtype), shape: [t.R, t.C], dtype: t.dtype });
  const granularity = t.granularity === 'token' ? ('token' as const) : { group: t.granularity };
  const cold = t.cold || o.cold;
  // Outputs allocated once and reused, as a runtime would: a fresh 50 MB
  // output costs ~12,500 first-touch page faults per call on the CPU, which
  // would be timed as quantization.
  const first = quantizeSync(x, { bits: t.bits, granularity });
  const out = { data: first.data, scales: first.scales };
  const ours = time(() => quantizeSync(x, { bits: t.bits, granularity, out }), o.quick, undefined, cold);
  if (o.device === 'cuda') {
    first.data.dispose();
    first.scales.dispose();
  }
  const group = t.granularity === 'token' ? t.C : t.granularity;
  const ts = o.ts ? time(() => quantizeTs(v, t.R, t.C, t.bits, group), true, (t.R * t.C) / 5e4, cold) : undefined;
  if (o.device === 'cuda') x.dispose();
  return { ours, ts };
}

function runDiversity(t: DiversityTrial, o: Options): { ours: Timing; ts?: Timing | { skipped: string } } {
  const w = work(t);
  const estimate = o.device === 'cuda' ? undefined : (w.flops / 40e9) * 1e3;
  if (t.kind === 'kcenter' || t.kind === 'kmedoids') {
    const v = o.device === 'cuda' ? new Float32Array(0) : values(t.N * t.C, 5);
    const x = o.device === 'cuda' ? deviceInput([1, t.N, t.C], 'f32', 5) : Tensor.from({ data: v, shape: [1, t.N, t.C] });
    if (t.kind === 'kmedoids') {
      const ours = time(() => {
        const r = kMedoidsSync(x, t.k, { segments: t.segments });
        release(r.medoids, r.assignments, r.iterations);
      }, o.quick, estimate);
      release(x);
      return { ours, ts: { skipped: 'no TS baseline' } };
    }
    const ours = time(() => {
      const r = kCenterSync(x, t.k, { segments: t.segments });
      release(r.indices, r.order, r.distances);
    }, o.quick, estimate);
    release(x);
    const S = t.N / t.segments;
    const estS = w.flops / 1e9;
    const ts = !o.ts ? undefined : estS > 20 ? { skipped: `est. ${estS.toFixed(0)} s` } : time(() => {
      for (let g = 0; g < t.segments; g++) kCenterTs(v, S, t.C, t.k, g * S);
    }, true, estS * 1e3);
    return { ours, ts };
  }
  const m = t.m ?? 16;
  const R = m + t.N;
  if (t.kind === 'coverage') {
    // Softmax-like rows (non-negative, each summing to ~1/rows) as MMTok builds them.
    const v = values(R * t.N, 6).map((a) => Math.exp(4 * a));
    for (let r = 0; r < R; r++) {
      let s = 0;
      for (let j = 0; j < t.N; j++) s += v[r * t.N + j];
      for (let j = 0; j < t.N; j++) v[r * t.N + j] /= s * R;
    }
    const cov = onDevice(Tensor.from({ data: v, shape: [1, R, t.N] }), o);
    const ours = time(() => {
      const r = maxCoverageSync(cov, t.k);
      release(r.indices, r.order, r.gains);
    }, o.quick);
    release(cov);
    const ts = o.ts ? time(() => maxCoverageTs(v, R, t.N, t.k), true) : undefined;
    return { ours, ts };
  }
  const text = o.device === 'cuda' ? deviceInput([1, m, t.C], 'f32', 7) : Tensor.from({ data: values(m * t.C, 7), shape: [1, m, t.C] });
  const vision = o.device === 'cuda' ? deviceInput([1, t.N, t.C], 'f32', 8) : Tensor.from({ data: values(t.N * t.C, 8), shape: [1, t.N, t.C] });
  const ours = time(() => {
    const r = mmTokSync({ text, vision }, { keep: t.k });
    release(r.indices, r.order, r.gains);
  }, o.quick, estimate);
  release(text, vision);
  return { ours, ts: { skipped: 'no TS baseline' } };
}

const fmtMs = (ms: number): string => (ms >= 100 ? ms.toFixed(0) : ms >= 1 ? ms.toFixed(2) : ms.toFixed(3));
const speedup = (base: Timing | { skipped: string } | undefined, ours: Timing): string => {
  if (!base) return '-';
  if ('skipped' in base) return `(${base.skipped})`;
  return `${fmtMs(base.medianMs)} (${(base.medianMs / ours.medianMs).toFixed(1)}×)`;
};

function workText(r: Row): { workCol: string; rate: string } {
    const w = r.work;
    const workCol = r.trial.family === 'merge' || isDiversityTrial(r.trial)
      ? `${(w.flops / 1e6).toFixed(0)} MFLOP, ${(w.bytes / 1e6).toFixed(1)} MB`
      : r.trial.family === 'select'
      ? `${(w.bytes / 1e6).toFixed(2)} MB, ${(w.compares! / 1e6).toFixed(2)} M cmp`
      : r.trial.family === 'blocksparse'
        ? `${(w.flops / 1e9).toFixed(1)} GFLOP, ${(w.exps / 1e6).toFixed(0)} M exp`
      : r.trial.family === 'quantize'
        ? `${(w.bytes / 1e6).toFixed(1)} MB`
        : `${(w.flops / 1e6).toFixed(0)} MFLOP, ${(w.exps / 1e6).toFixed(2)} M exp, ${(w.bytes / 1e6).toFixed(1)} MB`;
    const s = (r.ours.kernelMs ?? r.ours.medianMs) / 1e3;
    const rate = r.trial.family === 'attention' || r.trial.family === 'merge' || r.trial.family === 'blocksparse' || isDiversityTrial(r.trial) ? `${(w.flops / s / 1e9).toFixed(1)} GFLOP/s` : `${(w.bytes / s / 1e9).toFixed(2)} GB/s`;
    return { workCol, rate };
}

function table(rows: Row[], torchVariants: string[]): string[] {
  const gpu = rows.some((r) => r.ours.kernelMs !== undefined);
  const head = ['trial', 'shape', 'median ms', 'mean ms', ...(gpu ? ['GPU ms', 'overhead µs'] : []), 'work', 'rate', 'roof', 'plain TS ms (×)', ...torchVariants.map((v) => `${v} ms (×)`)];
  const body = rows.map((r) => {
    const { workCol, rate } = workText(r);
    const k = r.ours.kernelMs;
    const gpuCols = !gpu ? [] : k === undefined ? ['-', '-'] : [fmtMs(k), ((r.ours.medianMs - k) * 1e3).toFixed(0)];
    return [
      r.trial.name, r.shape, fmtMs(r.ours.medianMs), r.ours.meanMs === undefined ? '-' : fmtMs(r.ours.meanMs), ...gpuCols, workCol, rate, roofText(r.roofFraction, r.bound),
      speedup(r.ts, r.ours), ...torchVariants.map((v) => speedup(r.torch[v], r.ours)),
    ];
  });
  return [head, ...body].map((cols) => cols.join(' | '));
}

function reportRow(r: Row, torchVariants: string[]): ReportRow {
  const { workCol, rate } = workText(r);
  const baselines: ReportRow['baselines'] = { 'plain TS': r.ts };
  for (const v of torchVariants) baselines[v] = r.torch[v];
  return { name: r.trial.name, family: r.trial.family, shape: r.shape, oursMs: r.ours.medianMs, oursMeanMs: r.ours.meanMs, work: workCol, rate, roofFraction: r.roofFraction, bound: r.bound, baselines };
}

function machine(): string[] {
  const i = info();
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  return [
    `${cpu}, ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.type()} ${os.release()}, Node ${process.version}`,
    `tokensieve ${i.version}: ${i.cpu.isa} CPU kernels, ${getThreads()} threads; CUDA: ${i.cuda.available ? i.cuda.devices.map((d) => d.name).join(', ') : `unavailable (${i.cuda.reason})`}`,
  ];
}

export async function main(argv: string[]): Promise<number> {
  let o: Options | undefined;
  try {
    o = parse(argv);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n\n${HELP()}`);
    return 1;
  }
  if (!o) {
    process.stdout.write(HELP());
    return 0;
  }
  const before = getThreads();
  if (o.threads !== undefined) setThreads(o.threads);
  evictBeforeRuns = o.cold;
  try {
    return await runAll(o, argv);
  } finally {
    setThreads(before);
  }
}

async function runAll(o: Options, argv: string[]): Promise<number> {
  const chosen = selectTrials(o.filter, o.quick);
  // A whole video-DiT layer takes minutes per run on the CPU: GPU only.
  const selected = o.device === 'cuda' ? chosen : chosen.filter((t) => !(t.family === 'blocksparse' && t.gpuOnly));
  if (selected.length < chosen.length) process.stderr.write(`skipping ${chosen.length - selected.length} GPU-only blocksparse trial(s) on the CPU\n`);
  if (selected.length === 0) {
    const why = o.filter !== undefined && selectTrials(o.filter, false).length > 0 ? ' (its trials are all skipped by --quick)' : '';
    process.stderr.write(`tokensieve bench: no trial matches --filter ${JSON.stringify(o.filter ?? '')}${why}\n${trialList()}`);
    return 1;
  }
  if (o.device === 'cuda' && !info().cuda.available) {
    process.stderr.write(`--device cuda: CUDA is unavailable: ${info().cuda.reason}\n`);
    return 1;
  }
  const lines: string[] = [];
  const say = (s = ''): void => {
    process.stdout.write(`${s}\n`);
    lines.push(s);
  };
  const header = machine();
  header.forEach((h) => say(h));
  // End-to-end trials (examples/ocr) are not kernel timings: they print their own table after the kernels'.
  const trials = selected.filter((t): t is Trial => !isOcrTrial(t));
  const ocrTrials = selected.filter(isOcrTrial);
  if (trials.length === 0) {
    await runOcrTrials(ocrTrials, o, say);
    return 0;
  }
  let roof: Roof;
  if (o.device === 'cuda') {
    const g = native().measureDeviceRoof(0);
    roof = {
      label: `measured now on ${info().cuda.devices[0].name}: ${(g.copyBytesPerSecond / 1e12).toFixed(2)} TB/s device copy (read + write), ` +
        `${(g.bf16MmaFlops / 1e12).toFixed(0)} TFLOP/s bf16 mma.sync, ${(g.tf32MmaFlops / 1e12).toFixed(0)} TFLOP/s tf32 mma.sync, ` +
        `${(g.expPerSecond / 1e12).toFixed(2)} T exp/s; compute fractions against bf16 mma.sync, GPU fractions from kernel time (CUDA events)`,
      flops: g.bf16MmaFlops,
      exps: g.expPerSecond,
      bytes: g.copyBytesPerSecond,
    };
    deviceTiming = true;
  } else {
    const r = native().measureRoof();
    const dot = r.bf16DotGflops > 0 ? `, ${r.bf16DotGflops.toFixed(1)} GFLOP/s bf16 dot (vdpbf16ps)` : '';
    roof = {
      label: `measured now: ${r.fmaGflops.toFixed(1)} GFLOP/s FMA${dot}, ${(r.expPerSecond / 1e9).toFixed(2)} G exp/s, ${r.copyGBps.toFixed(1)} GB/s copy (read + write), ${r.threads} threads`,
      flops: r.fmaGflops * 1e9,
      ...(r.bf16DotGflops > 0 ? { bf16Flops: r.bf16DotGflops * 1e9 } : {}),
      exps: r.expPerSecond,
      bytes: r.copyGBps * 1e9,
    };
  }
  say(`roof: ${roof.label}`);
  say(`caches: ${o.cold ? 'cold (64 MiB evicted before every timed run)' : 'warm (inputs stay cached between runs when they fit)'}`);
  const rows: Row[] = [];
  const started = performance.now();
  process.stderr.write(`running ${trials.length} trial${trials.length === 1 ? '' : 's'} (progress on stderr, the table on stdout at the end)\n`);
  for (const [i, t] of trials.entries()) {
    process.stderr.write(`  [${i + 1}/${trials.length}] ${t.name} ...`);
    const w = work(t);
    const { ours, ts } = t.family === 'attention' ? await runAttention(t, o) : t.family === 'select' ? runTopk(t, o) : t.family === 'merge' ? runMerge(t, o) : t.family === 'blocksparse' ? runBlockSparse(t, o) : isDiversityTrial(t) ? runDiversity(t, o) : runQuant(t, o);
    const ms = ours.kernelMs ?? ours.medianMs;
    const { fraction, bound } = t.family === 'attention' || t.family === 'merge' || t.family === 'blocksparse' || isDiversityTrial(t)
      ? roofFraction(w, ms, roof, onBf16Dot(t, roof))
      : { fraction: w.bytes / roof.bytes / (ms / 1e3), bound: 'memory' };
    rows.push({ trial: t, shape: describeShape(t), work: w, ours, roofFraction: fraction, bound, ts, torch: {} });
    const gpu = ours.kernelMs === undefined ? '' : `, ${fmtMs(ours.kernelMs)} ms on the GPU`;
    process.stderr.write(` ${fmtMs(ours.medianMs)} ms${gpu} (${((performance.now() - started) / 1e3).toFixed(0)} s elapsed)\n`);
  }
  let torchHeader = 'torch: skipped (--no-torch)';
  const torchVariants = new Set<string>();
  if (o.torch) {
    process.stderr.write('  running the PyTorch baseline (one process for all trials; this can take minutes)...\n');
    const t = runTorch(trials.filter((x) => !x.name.includes('Promise')), getThreads(), o.quick, o.device);
    torchHeader = t.header;
    for (const res of t.results) {
      const row = rows.find((r) => r.trial.name === res.name);
      if (!row) continue;
      torchVariants.add(res.variant);
      row.torch[res.variant] = res.skipped ? { skipped: res.skipped } : { medianMs: res.median_ms!, minMs: res.min_ms!, reps: res.reps! };
    }
    for (const row of rows.filter((r) => r.trial.name.includes('Promise'))) {
      const twin = rows.find((r) => r.trial.name === row.trial.name.replace(' (Promise API)', ''));
      if (twin) row.torch = twin.torch;
    }
  }
  say(torchHeader);
  say();
  const tbl = table(rows, [...torchVariants]);
  tbl.forEach((l) => say(l));
  if (ocrTrials.length) await runOcrTrials(ocrTrials, o, say);
  if (o.json) {
    fs.writeFileSync(o.json, JSON.stringify({ machine: header, roof, torch: torchHeader, rows }, null, 2));
  }
  const caches = o.cold ? 'cold (64 MiB evicted before every timed run)' : 'warm (inputs stay cached between runs when they fit)';
  const report: ReportData = {
    machine: header, roof: roof.label, torch: torchHeader, caches,
    rows: rows.map((r) => reportRow(r, [...torchVariants])),
    command: ['npx tokensieve bench', ...argv].join(' '),
    date: new Date().toISOString().slice(0, 10),
  };
  if (o.markdown) {
    fs.writeFileSync(o.markdown, markdownReport(report));
    process.stderr.write(`wrote ${o.markdown}\n`);
  }
  if (o.plot) {
    fs.writeFileSync(o.plot, svgPlot(report));
    process.stderr.write(`wrote ${o.plot}\n`);
  }
  return 0;
}
