// Run by test/leak.test.ts with --expose-gc: CALLS calls of one op per
// family, half of them failing (in the kernel after outputs were allocated,
// or in the checks), one in 8 through the Promise API. Prints one JSON line:
// per family, the least-squares slope of RSS and of external memory (bytes
// per call) over the samples taken after the warm-up (the smallest of three
// windows, see windowSlope).
'use strict';
const t = require(process.argv[2]);
const CALLS = Number(process.argv[3] || 100000);
const WARMUP = Math.floor(CALLS / 2);
const SAMPLES = 9;
// LEAK_TEST_RETAIN=1 keeps every result: a deliberate leak, to show the measure sees one.
const retain = process.env.LEAK_TEST_RETAIN === '1';
const kept = [];

const f32 = (n, seed, poison) => {
  const a = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.7 + seed));
  if (poison) a[1] = NaN;
  return a;
};
const x3 = (B, N, C, poison) => ({ data: f32(B * N * C, N, poison), shape: [B, N, C] });
const qk = (poison) => ({ data: f32(2 * 2 * 17 * 8, 3, poison), shape: [2, 2, 17, 8] });
const k4 = qk(false);
const plan = t.bipartiteSoftMatchSync(x3(2, 17, 8, false), 4);
// A block mask over 17 tokens in blocks of 8 (3 × 3 blocks), one list broadcast over batch and heads.
const mask = {
  blockQ: 8, blockK: 8, seqLens: [17, 17],
  kvNumBlocks: { data: Int32Array.of(1, 2, 3), shape: [1, 1, 3] },
  kvIndices: { data: Int32Array.of(0, 0, 0, 0, 1, 0, 0, 1, 2), shape: [1, 1, 3, 3] },
};

// [ok(async) , fail(async)]: each returns a value or a promise; failures must throw/reject.
const families = {
  attention: [(a) => (a ? t.attentionScores : t.attentionScoresSync)(qk(false), k4, { queries: 0 }), (a) => (a ? t.attentionScores : t.attentionScoresSync)(qk(true), k4)],
  select: [(a) => (a ? t.topk : t.topkSync)({ data: f32(2 * 300, 1), shape: [2, 300] }, 10), (a) => (a ? t.gather : t.gatherSync)(x3(2, 5, 3, false), { data: Int32Array.of(0, 9), shape: [2, 1] })],
  quantize: [(a) => (a ? t.quantize : t.quantizeSync)(x3(2, 17, 8, false), { bits: 4, granularity: { group: 4 } }), (a) => (a ? t.quantize : t.quantizeSync)(x3(2, 17, 8, true))],
  merge: [(a) => (a ? t.merge : t.mergeSync)(plan, x3(2, 17, 8, false), { mode: 'mean' }), (a) => (a ? t.bipartiteSoftMatch : t.bipartiteSoftMatchSync)(x3(2, 17, 8, true), 4)],
  diversity: [(a) => (a ? t.kCenter : t.kCenterSync)(x3(2, 33, 8, false), 5), (a) => (a ? t.kMedoids : t.kMedoidsSync)(x3(2, 33, 8, true), 5)],
  coverage: [(a) => (a ? t.maxCoverage : t.maxCoverageSync)(x3(2, 9, 33, false), 5), (a) => (a ? t.mmtokCoverage : t.mmtokCoverageSync)({ text: x3(2, 3, 8, true), vision: x3(2, 9, 8, false) })],
  stc: [(a) => (a ? t.stcScores : t.stcScoresSync)(x3(2, 17, 8, false)), (a) => (a ? t.stcScores : t.stcScoresSync)(x3(2, 17, 8, true))],
  blocksparse: [(a) => (a ? t.blockSparseAttention : t.blockSparseAttentionSync)(qk(false), k4, k4, mask, { returnLse: true }), (a) => (a ? t.blockSparseAttention : t.blockSparseAttentionSync)(qk(true), k4, k4, mask)],
};

// The smallest slope of three overlapping windows of the samples (0-4, 2-6
// and 4-7 of the 8 taken): a leak grows memory in every window, while a
// one-off step (V8 or the allocator taking a few more MB once, as CI saw:
// 3.5 MB of external memory in one blocksparse run) lies outside at least
// one of them.
function windowSlope(points) {
  return Math.min(slope(points.slice(0, 5)), slope(points.slice(2, 7)), slope(points.slice(4, 9)));
}

function slope(points) {
  const n = points.length;
  const mx = points.reduce((s, p) => s + p[0], 0) / n;
  const my = points.reduce((s, p) => s + p[1], 0) / n;
  let num = 0, den = 0;
  for (const [x, y] of points) { num += (x - mx) * (y - my); den += (x - mx) ** 2; }
  return num / den;
}

(async () => {
  const out = {};
  for (const [name, [ok, fail]] of Object.entries(families)) {
    if (process.argv[4] && !process.argv[4].split(',').includes(name)) continue; // a comma-separated list of families
    const rss = [], ext = [];
    const every = Math.floor((CALLS - WARMUP) / (SAMPLES - 1));
    const t0 = Date.now();
    for (let i = 0; i < CALLS; i++) {
      const async = i % 8 === 7;
      if (i % 2 === 0) {
        const r = ok(async);
        const v = async ? await r : r;
        if (retain) kept.push(v);
      } else {
        let threw = false;
        try { const r = fail(async); if (async) await r; } catch (e) { threw = true; if (typeof e.code !== 'string') throw e; }
        if (!threw) throw new Error(`${name}: the failing call succeeded`);
      }
      if (i >= WARMUP && (i - WARMUP) % every === 0) {
        global.gc();
        const m = process.memoryUsage();
        rss.push([i, m.rss]);
        ext.push([i, m.external + m.arrayBuffers]);
      }
    }
    out[name] = { rssPerCall: windowSlope(rss), externalPerCall: windowSlope(ext), ms: Date.now() - t0 };
  }
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { process.stderr.write(String(e && e.stack)); process.exit(1); });
