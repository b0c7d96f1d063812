/**
 * The public API as a user meets it: errors name the function called (never
 * an internal step), hints for common slips, one error class to catch, the
 * CLS convention of the pruning methods (`tokenIndices`), one keep/ratio
 * vocabulary, and the NaN check covering exactly the rows a kernel reads.
 */
import {
  attentionScoresSync,
  centerClip,
  centerClipSync,
  divPrune,
  divPruneSync,
  fastV,
  fastVSync,
  fasterVLM,
  fasterVLMSync,
  foPru,
  foPruSync,
  gather,
  gatherSync,
  hiPrune,
  hiPruneSync,
  info,
  isTokenSieveError,
  kCenterSync,
  mmTok,
  mmTokSync,
  quantizeSync,
  reduceAttentionSync,
  stc,
  stcSync,
  StreamPruner,
  Tensor,
  toDRE,
  toDRESync,
  TokenSieveError,
  toMe,
  tomesd,
  tomesdSync,
  topkSync,
  visionDrop,
  visionDropSync,
  visionZip,
  visionZipSync,
  vtcCls,
  vtcClsSync,
} from '../lib';

/** Deterministic values in (-1, 1), with NaN at the given flat positions. */
function values(n: number, nanAt: number[] = []): Float32Array {
  const a = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 1.7 + 0.3));
  for (const i of nanAt) a[i] = NaN;
  return a;
}
const host = (shape: number[], nanAt: number[] = []) => ({ data: values(shape.reduce((a, b) => a * b, 1), nanAt), shape });

// q and k that disagree in D: passes every method's own checks, fails in the attention kernel.
const qBad = host([1, 2, 9, 4]);
const kBad = host([1, 2, 9, 8]);
const badSrc = { q: qBad, k: kBad };
const nanFeatures = host([1, 8, 4], [5]);

/** Internal names that must never show in a method's error. */
const INTERNAL = /attentionScores|reduceAttention|topk|kCenter|kMedoids|maxCoverage|mmtokCoverage|stcScores|bipartiteSoftMatch|mergeSync|contextualMerge|Tensor\.empty/;

type Case = [name: string, sync: () => unknown, async: () => Promise<unknown>];
const cases: Case[] = [
  ['fasterVLM', () => fasterVLMSync(badSrc, { keep: 2 }), () => fasterVLM(badSrc, { keep: 2 })],
  ['vtcCls', () => vtcClsSync([badSrc, badSrc], { keep: 2, startLayer: 0 }), () => vtcCls([badSrc, badSrc], { keep: 2, startLayer: 0 })],
  ['fastV', () => fastVSync(badSrc, { imageStart: 1, imageLength: 6, keep: 2 }), () => fastV(badSrc, { imageStart: 1, imageLength: 6, keep: 2 })],
  ['hiPrune', () => hiPruneSync(badSrc, badSrc, { keep: 2, gridWidth: 2 }), () => hiPrune(badSrc, badSrc, { keep: 2, gridWidth: 2 })],
  ['foPru', () => foPruSync(badSrc, { strategy: 'rank', keep: 2 }), () => foPru(badSrc, { strategy: 'rank', keep: 2 })],
  ['ToMe.step', () => toMe({ layers: 1, r: 2 }).stepSync(host([1, 8, 4]), nanFeatures), () => toMe({ layers: 1, r: 2 }).step(host([1, 8, 4]), nanFeatures)],
  ['tomesd', () => tomesdSync(host([2, 16, 4], [3]), { w: 4, h: 4 }), () => tomesd(host([2, 16, 4], [3]), { w: 4, h: 4 })],
  ['visionZip', () => visionZipSync(badSrc, host([1, 9, 4]), host([1, 9, 4]), { dominant: 3, contextual: 2 }),
    () => visionZip(badSrc, host([1, 9, 4]), host([1, 9, 4]), { dominant: 3, contextual: 2 })],
  ['visionDrop', () => visionDropSync(qBad, kBad, host([1, 6, 4]), host([1, 6, 4]), { imageStart: 2, imageCount: 6, dominant: 2, contextual: 1 }),
    () => visionDrop(qBad, kBad, host([1, 6, 4]), host([1, 6, 4]), { imageStart: 2, imageCount: 6, dominant: 2, contextual: 1 })],
  ['divPrune', () => divPruneSync(nanFeatures, { keep: 2 }), () => divPrune(nanFeatures, { keep: 2 })],
  ['toDRE', () => toDRESync(nanFeatures, { keep: 2 }), () => toDRE(nanFeatures, { keep: 2 })],
  ['mmTok', () => mmTokSync({ text: host([1, 2, 4], [1]), vision: host([1, 8, 4]) }, { keep: 2 }),
    () => mmTok({ text: host([1, 2, 4], [1]), vision: host([1, 8, 4]) }, { keep: 2 })],
  ['centerClip', () => centerClipSync(host([1, 2, 5, 4], [6]), { frameDuration: 2, clusters: 2 }),
    () => centerClip(host([1, 2, 5, 4], [6]), { frameDuration: 2, clusters: 2 })],
  ['StreamPruner.push', () => new StreamPruner({ tokensPerFrame: 2 }).pushSync(host([1, 8, 4], [2])),
    () => new StreamPruner({ tokensPerFrame: 2 }).push(host([1, 8, 4], [2]))],
  ['stc', () => stcSync([host([1, 8, 4], [2])], { tokensPerFrame: 2 }), () => stc([host([1, 8, 4], [2])], { tokensPerFrame: 2 })],
];

function caught(fn: () => unknown): Error & { code?: string } {
  try {
    fn();
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('expected a throw');
}

describe('a method names itself in its errors, not the kernels it runs', () => {
  test.each(cases)('%s', async (name, sync, async) => {
    const e = caught(sync);
    expect(isTokenSieveError(e)).toBe(true);
    const syncName = name.endsWith('.push') ? `${name}Sync` : name === 'ToMe.step' ? 'ToMe.stepSync' : `${name}Sync`;
    expect(e.message.startsWith(`${syncName}: `)).toBe(true);
    expect(e.message).not.toMatch(INTERNAL);
    expect(e.stack?.split('\n')[0]).toContain(e.message);
    let r: (Error & { code?: string }) | undefined;
    await async().catch((x) => (r = x));
    expect(r).toBeDefined();
    expect(isTokenSieveError(r)).toBe(true);
    expect(r!.code).toBe(e.code);
    expect(r!.message.startsWith(`${name}: `)).toBe(true);
    expect(r!.message).not.toMatch(INTERNAL);
    expect(r!.stack).toContain('api.test'); // the rejection's stack runs through the caller's code
  });

  test('the same input through the kernel names the kernel', () => {
    expect(caught(() => attentionScoresSync(qBad, kBad)).message).toMatch(/^attentionScoresSync: /);
    expect(caught(() => kCenterSync(nanFeatures, 2)).message).toMatch(/^kCenterSync: /);
    expect(caught(() => topkSync(host([1, 6]), 7)).message).toMatch(/^topkSync: /);
    expect(caught(() => gatherSync(host([1, 6, 4]), host([1, 2]))).message).toMatch(/^gatherSync: /);
  });

  test('the stack names the function once, as the message does', () => {
    // A renamed error whose stack V8 had not formatted yet once read
    // "TypeError: topkSync: topkSync: Expected ...".
    for (const f of [() => topkSync({} as never, 3), () => attentionScoresSync(1 as never, 2 as never), () => kCenterSync(nanFeatures, 2)]) {
      const e = caught(f);
      const head = e.stack!.split('\n')[0];
      expect(head).toContain(e.message);
      expect(head.split(e.message.slice(0, e.message.indexOf(':') + 1)).length).toBe(2);
    }
  });

  test('a device transfer names Tensor.to', () => {
    const e = caught(() => Tensor.from(host([2, 3])).to('cuda:0'));
    if (info().cuda.available) return; // (a GPU takes the copy)
    expect(e.message).toMatch(/^Tensor\.to/);
    expect(e.message).not.toMatch(/Tensor\.empty/);
  });
});

describe('hints for common slips', () => {
  const q = host([1, 2, 5, 4]);
  test('a tensor where the options belong', () => {
    // fasterVLM(q, k, { keep }): the second argument is taken as the options.
    const e = caught(() => (fasterVLMSync as unknown as (a: unknown, b: unknown, c: unknown) => unknown)(q, q, { keep: 2 }));
    expect(e.code).toBe('ERR_ARG');
    expect(e.message).toMatch(/^fasterVLMSync: expected an options object .* but received a tensor/);
    expect(e.message).not.toMatch(/unknown option/);
    const t = caught(() => fasterVLMSync({ q, k: q }, Tensor.from(q) as never));
    expect(t.message).toMatch(/expected an options object .* but received a Tensor/);
    expect(caught(() => kCenterSync(nanFeatures, 2, host([1, 8]) as never)).message).toMatch(/options object/);
  });
  test('a tensor where the attention source belongs', () => {
    const e = caught(() => fasterVLMSync(q as never, { keep: 2 }));
    expect(e.message).toMatch(/^fasterVLMSync: expected the attention as \{ q, k \} or \{ probs \} but received a tensor/);
  });
  test('a topk result passed to gather hints .indices', async () => {
    const x = host([1, 6, 4]);
    const top = topkSync(host([1, 6]), 2);
    const e = caught(() => gatherSync(x, top as never));
    expect(e.code).toBe('ERR_ARG');
    expect(e.message).toMatch(/pass its \.indices/);
    await expect(gather(x, top as never)).rejects.toThrow(/pass its \.indices/);
    expect(gatherSync(x, top.indices).shape).toEqual([1, 2, 4]);
  });
});

describe('every coded error is a TokenSieveError', () => {
  test('TypeError and RangeError from the TS checks', () => {
    const te = caught(() => topkSync(host([1, 6]), 1.5));
    expect(te).toBeInstanceOf(TypeError);
    expect(te).toBeInstanceOf(TokenSieveError);
    expect(isTokenSieveError(te)).toBe(true);
    expect(te.name).toBe('TypeError');
    const re = caught(() => topkSync(host([1, 6]), 7));
    expect(re).toBeInstanceOf(RangeError);
    expect(re).toBeInstanceOf(TokenSieveError);
    expect(re.code).toBe('ERR_RANGE');
  });
  test('errors raised by the native kernels (sync and async)', async () => {
    const e = caught(() => quantizeSync(nanFeatures));
    expect(e.code).toBe('ERR_RANGE');
    expect(e).toBeInstanceOf(RangeError);
    expect(e).toBeInstanceOf(TokenSieveError);
    const r = await divPrune(nanFeatures, { keep: 2 }).catch((x: unknown) => x);
    expect(r).toBeInstanceOf(RangeError);
    expect(r).toBeInstanceOf(TokenSieveError);
    expect(isTokenSieveError(r)).toBe(true);
  });
  test('other errors are not', () => {
    expect(new Error('x')).not.toBeInstanceOf(TokenSieveError);
    expect(new RangeError('x')).not.toBeInstanceOf(TokenSieveError);
    expect(isTokenSieveError({ code: 'ERR_RANGE', message: 'forged' })).toBe(false);
    expect(isTokenSieveError(null)).toBe(false);
  });
  test('TokenSieveError instances still are; a subclass keeps the ordinary test', () => {
    const e = new TokenSieveError('ERR_CUDA', 'x');
    expect(e).toBeInstanceOf(TokenSieveError);
    expect(e).toBeInstanceOf(Error);
    expect(isTokenSieveError(e)).toBe(true);
    class Mine extends TokenSieveError {}
    expect(new Mine('ERR_CUDA', 'y')).toBeInstanceOf(Mine);
    expect(new Mine('ERR_CUDA', 'y')).toBeInstanceOf(TokenSieveError);
    expect(e).not.toBeInstanceOf(Mine);
    expect(caught(() => topkSync(host([1, 6]), 7))).not.toBeInstanceOf(Mine);
  });
});

describe('CLS: patch indices by default, token positions with tokenIndices', () => {
  // CLS + 4 patches, 1 head, D = 2. The CLS query points along e0; patch 2 (token 3)
  // has the largest key along e0, patch 0 (token 1) the next: FasterVLM keeps patch 2, then 0.
  const N = 5;
  const q = { data: new Float32Array(N * 2), shape: [1, 1, N, 2] };
  q.data[0] = 4; // CLS row: (4, 0)
  const k = { data: new Float32Array(N * 2), shape: [1, 1, N, 2] };
  const kx = [0, 1, 0, 2, -1]; // tokens 0..4 (token 0 = CLS)
  kx.forEach((v, i) => (k.data[i * 2] = v));
  // features that include CLS: row i holds 100 + i
  const C = 3;
  const features = { data: Float32Array.from({ length: N * C }, (_, i) => 100 + Math.floor(i / C)), shape: [1, N, C] };

  test('fasterVLM', async () => {
    expect(fasterVLMSync({ q, k }, { keep: 1 }).indices.toArray()).toEqual([2]);
    expect(fasterVLMSync({ q, k }, { keep: 2 }).indices.toArray()).toEqual([0, 2]);
    const { indices } = await fasterVLM({ q, k }, { keep: 2, tokenIndices: true });
    expect(indices.toArray()).toEqual([1, 3]);
    expect(indices.dtype).toBe('i32');
    // gathered rows are tokens 1 and 3 (patches 0 and 2), not the rows after them
    expect((await gather(features, indices)).toArray()).toEqual([101, 101, 101, 103, 103, 103]);
    expect(caught(() => fasterVLMSync({ q, k }, { keep: 2, tokenIndices: 1 as never })).code).toBe('ERR_ARG');
  });
  test('vtcCls', () => {
    expect(vtcClsSync([{ q, k }, { q, k }], { keep: 2, startLayer: 0, endLayer: 1 }).indices.toArray()).toEqual([0, 2]);
    expect(vtcClsSync([{ q, k }, { q, k }], { keep: 2, startLayer: 0, endLayer: 1, tokenIndices: true }).indices.toArray()).toEqual([1, 3]);
  });
  test('hiPrune', () => {
    const base = { alpha: 0, gridWidth: 2 };
    const patch = hiPruneSync({ q, k }, { q, k }, { ...base, keep: 2 }).indices.toArray();
    const tok = hiPruneSync({ q, k }, { q, k }, { ...base, keep: 2, tokenIndices: true }).indices.toArray();
    expect(tok).toEqual(patch.map((i) => i + 1));
    expect(caught(() => hiPruneSync({ q, k }, { q, k }, { ...base, keep: 2, cls: false, tokenIndices: true })).message).toMatch(/tokenIndices needs cls: true/);
  });
});

describe('keep / ratio across methods', () => {
  const src = { q: host([2, 2, 17, 4]), k: host([2, 2, 17, 4], []) };
  test('hiPrune: keep, retention (alias) and ratio (fraction kept)', () => {
    const byKeep = hiPruneSync(src, src, { keep: 8, gridWidth: 4 }).indices.toArray();
    expect(hiPruneSync(src, src, { retention: 8, gridWidth: 4 }).indices.toArray()).toEqual(byKeep);
    expect(hiPruneSync(src, src, { ratio: 0.5, gridWidth: 4 }).indices.toArray()).toEqual(byKeep); // round(0.5·16) = 8
    expect(caught(() => hiPruneSync(src, src, { keep: 8, retention: 8 })).message).toMatch(/exactly one of keep .* ratio .* retention/);
    expect(caught(() => hiPruneSync(src, src, {} as never)).code).toBe('ERR_ARG');
    expect(caught(() => hiPruneSync(src, src, { ratio: 1.5 })).message).toMatch(/fraction of patches kept/);
  });
  test("tomesd's ratio keeps its upstream meaning (fraction merged) and says so", () => {
    const x = host([2, 16, 4]);
    expect(tomesdSync(x, { w: 4, h: 4, ratio: 0.25 }).merged.shape).toEqual([2, 12, 4]);
    expect(caught(() => tomesdSync(x, { w: 4, h: 4, ratio: 1 })).message).toMatch(/fraction of tokens merged, as in tomesd/);
  });
});

describe('the NaN check covers exactly the rows a kernel reads', () => {
  const B = 1, H = 2, N = 6, D = 4;
  const at = (h: number, n: number) => (h * N + n) * D;
  const clean = host([B, H, N, D]);
  test('attentionScores: only the selected query rows of q', () => {
    // queries: 0 reads q row 0 only: NaN in row 3 is not reported, NaN in row 0 is
    expect(() => attentionScoresSync(host([B, H, N, D], [at(1, 3)]), clean, { queries: 0 })).not.toThrow();
    expect(caught(() => attentionScoresSync(host([B, H, N, D], [at(1, 0)]), clean, { queries: 0 })).code).toBe('ERR_RANGE');
    expect(() => attentionScoresSync(host([B, H, N, D], [at(0, 5)]), clean, { queries: { start: 0, end: 2 } })).not.toThrow();
  });
  test('attentionScores: every key row a selected row sees (the softmax spans all keys, whatever `keys` returns)', () => {
    expect(caught(() => attentionScoresSync(clean, host([B, H, N, D], [at(1, 4)]), { queries: 0, keys: { start: 0, end: 2 } })).code).toBe('ERR_RANGE');
    // causal: query row 0 (offset 0) sees key 0 only, so NaN in key 5 is never read
    expect(() => attentionScoresSync(clean, host([B, H, N, D], [at(0, 5)]), { queries: 0, causal: true })).not.toThrow();
    expect(caught(() => attentionScoresSync(clean, host([B, H, N, D], [at(0, 0)]), { queries: 0, causal: true })).code).toBe('ERR_RANGE');
  });
  test('reduceAttention: the selected rows, the returned key columns', () => {
    const p = (r: number, c: number) => ({ data: values(B * H * N * N, [(0 * N + r) * N + c]), shape: [B, H, N, N] });
    expect(() => reduceAttentionSync(p(3, 1), { queries: 0 })).not.toThrow();
    expect(() => reduceAttentionSync(p(0, 5), { queries: 0, keys: { start: 0, end: 2 } })).not.toThrow();
    expect(caught(() => reduceAttentionSync(p(0, 1), { queries: 0, keys: { start: 0, end: 2 } })).code).toBe('ERR_RANGE');
  });
  test('kCenter: every token not excluded', () => {
    const x = host([1, 6, 4], [3]); // token 0
    expect(caught(() => kCenterSync(x, 2)).code).toBe('ERR_RANGE');
    expect(() => kCenterSync(x, 2, { exclude: { data: Uint8Array.of(1, 0, 0, 0, 0, 0), shape: [1, 6] } })).not.toThrow();
  });
  test('topk ranks NaN last and gather copies any value: no check', () => {
    expect(topkSync(host([1, 6], [2]), 6, { order: 'score' }).indices.toArray().at(-1)).toBe(2);
    expect(Number.isNaN(gatherSync(host([1, 6, 4], [4]), { data: Int32Array.of(1), shape: [1, 1] }).toArray()[0])).toBe(true);
  });
});

describe('no #private, yet private state stays out of sight', () => {
  test('Tensor, ToMe and StreamPruner enumerate only their public fields', () => {
    const t = Tensor.from({ data: new Float32Array(3), shape: [3] });
    expect(Object.keys(t)).toEqual(['dtype', 'shape', 'strides', 'offset', 'device', 'stream']);
    expect(JSON.parse(JSON.stringify(t))).toEqual({ dtype: 'f32', shape: [3], strides: [1], offset: 0, device: 'cpu' });
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(Object.keys(toMe({ layers: 2, r: 1 })).some((k) => k.startsWith('_'))).toBe(false);
    expect(Object.keys(new StreamPruner()).some((k) => k.startsWith('_'))).toBe(false);
  });
});

describe('info without a GPU', () => {
  test('says plainly that the CPU kernels are used and nothing needs doing', () => {
    const i = info();
    if (i.cuda.available) {
      expect(i.summary).toMatch(/CUDA/);
      return;
    }
    expect(i.summary).toMatch(/^Using the CPU kernels \([\w-]+, \d+ threads\)\. CUDA is not available \(.+\); nothing needs doing/);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { execFileSync } = require('child_process') as typeof import('child_process');
    const out = execFileSync(process.execPath, [require.resolve('../bin/tokensieve.js'), 'info'], { encoding: 'utf8' });
    expect(out).toMatch(/^Nothing needs doing: tokensieve runs every kernel and method on its CPU kernels/m);
    expect(out).toMatch(/CUDA: +not available: /);
  });
});
