// Run by test/reliability.test.ts in a child process (a crash must not take
// jest down): every async entry point, with its host inputs (and the
// user-provided outputs) detached or shrunk right after the call starts.
// Prints one JSON line: per case, whether the result equals the Sync result
// on untouched data, or the error code it rejected with.
'use strict';
const t = require(process.argv[2]);
const mode = process.argv[3]; // 'transfer' | 'resize'

let seed = 1;
function rand() { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 - 0.5; }
// Data in a buffer JS can take away: a plain ArrayBuffer (transfer) or a resizable one (resize).
function f32(n) {
  const ab = mode === 'resize' ? new ArrayBuffer(n * 4, { maxByteLength: n * 4 }) : new ArrayBuffer(n * 4);
  const a = new Float32Array(ab, 0, n);
  for (let i = 0; i < n; i++) a[i] = rand();
  return a;
}
function take(arrays) {
  for (const a of arrays) {
    if (mode === 'resize') a.buffer.resize(0);
    else structuredClone(a.buffer, { transfer: [a.buffer] }); // the clone is dropped: its memory is freed by the GC
  }
  global.gc();
}
function copy(a) { return Float32Array.from(a); }
function flat(r) {
  if (r instanceof t.Tensor) return r.toArray();
  if (r instanceof t.MergePlan) return [r.assign, r.sources, r.destinations, r.unmerged].flatMap((x) => (x ? x.toArray() : []));
  if (Array.isArray(r)) return r.flatMap(flat);
  if (r && typeof r === 'object') return Object.keys(r).sort().flatMap((k) => (r[k] instanceof t.Tensor || (r[k] && typeof r[k] === 'object') ? flat(r[k]) : []));
  return [];
}

const B = 2, H = 4, N = 301, D = 64, C = 96;
const cases = {
  attentionScores: { make: () => [f32(B * H * N * D), f32(B * H * N * D)], run: (a, [q, k]) => (a ? t.attentionScores : t.attentionScoresSync)({ data: q, shape: [B, H, N, D] }, { data: k, shape: [B, H, N, D] }, { queries: 0, keys: { start: 1 } }) },
  'attentionScores out': {
    make: () => [f32(B * H * N * D), f32(B * H * N * D), f32(B * (N - 1))],
    run: (a, [q, k, out]) => (a ? t.attentionScores : t.attentionScoresSync)({ data: q, shape: [B, H, N, D] }, { data: k, shape: [B, H, N, D] }, { queries: 0, keys: { start: 1 }, out: { data: out, shape: [B, N - 1] } }),
  },
  reduceAttention: { make: () => [f32(B * H * N * N)], run: (a, [p]) => (a ? t.reduceAttention : t.reduceAttentionSync)({ data: p, shape: [B, H, N, N] }, { queries: 0 }) },
  topk: { make: () => [f32(B * 4099)], run: (a, [s]) => (a ? t.topk : t.topkSync)({ data: s, shape: [B, 4099] }, 577) },
  gather: { make: () => [f32(B * N * C)], run: (a, [x]) => (a ? t.gather : t.gatherSync)({ data: x, shape: [B, N, C] }, { data: Int32Array.from({ length: B * 50 }, (_, i) => (i * 7) % N), shape: [B, 50] }) },
  quantize: { make: () => [f32(B * N * C)], run: (a, [x]) => (a ? t.quantize : t.quantizeSync)({ data: x, shape: [B, N, C] }, { bits: 4, granularity: { group: 32 } }) },
  bipartiteSoftMatch: { make: () => [f32(B * N * C)], run: (a, [m]) => (a ? t.bipartiteSoftMatch : t.bipartiteSoftMatchSync)({ data: m, shape: [B, N, C] }, 100, { protect: { cls: true } }) },
  merge: {
    make: () => [f32(B * N * C)],
    run: (a, [x]) => { const plan = t.bipartiteSoftMatchSync({ data: Float32Array.from({ length: B * N * 8 }, (_, i) => Math.sin(i)), shape: [B, N, 8] }, 100); return (a ? t.merge : t.mergeSync)(plan, { data: x, shape: [B, N, C] }, { mode: 'mean' }); },
  },
  contextualMerge: { make: () => [f32(B * N * C), f32(B * N * C)], run: (a, [x, m]) => (a ? t.contextualMerge : t.contextualMergeSync)({ data: x, shape: [B, N, C] }, { data: m, shape: [B, N, C] }, { keptIndices: { data: Int32Array.from({ length: B * 100 }, (_, i) => (i * 3) % N), shape: [B, 100] } }, 10) },
  kCenter: { make: () => [f32(B * N * C)], run: (a, [x]) => (a ? t.kCenter : t.kCenterSync)({ data: x, shape: [B, N, C] }, 60) },
  kMedoids: { make: () => [f32(B * N * C)], run: (a, [x]) => (a ? t.kMedoids : t.kMedoidsSync)({ data: x, shape: [B, N, C] }, 20) },
  maxCoverage: { make: () => [f32(B * 97 * N)], run: (a, [c]) => (a ? t.maxCoverage : t.maxCoverageSync)({ data: c, shape: [B, 97, N] }, 40) },
  mmtokCoverage: { make: () => [f32(B * 37 * C), f32(B * N * C)], run: (a, [tx, v]) => (a ? t.mmtokCoverage : t.mmtokCoverageSync)({ text: { data: tx, shape: [B, 37, C] }, vision: { data: v, shape: [B, N, C] } }) },
  stcScores: { make: () => [f32(4 * 77 * C)], run: (a, [x]) => (a ? t.stcScores : t.stcScoresSync)({ data: x, shape: [4, 77, C] }) },
  fasterVLM: { make: () => [f32(B * H * N * D)], run: (a, [q]) => (a ? t.fasterVLM : t.fasterVLMSync)({ q: { data: q, shape: [B, H, N, D] }, k: { data: q, shape: [B, H, N, D] } }, { keep: 64 }) },
  divPrune: { make: () => [f32(B * N * C)], run: (a, [x]) => (a ? t.divPrune : t.divPruneSync)({ data: x, shape: [B, N, C] }, { keep: 64 }) },
  tomesd: { make: () => [f32(1 * 576 * C)], run: (a, [x]) => (a ? t.tomesd : t.tomesdSync)({ data: x, shape: [1, 576, C] }, { ratio: 0.5, w: 24, h: 24 }) },
};

(async () => {
  const out = {};
  for (const [name, c] of Object.entries(cases)) {
    try {
      const data = c.make();
      const want = flat(c.run(false, data.map(copy)));
      const p = c.run(true, data);
      take(data);
      try {
        const got = flat(await p);
        out[name] = got.length === want.length && got.every((v, i) => Object.is(v, want[i])) ? 'equal' : 'DIFFERENT';
      } catch (e) {
        out[name] = `rejected ${e.code}`;
      }
    } catch (e) {
      out[name] = `SETUP ${e.code} ${e.message}`;
    }
  }
  process.stdout.write(JSON.stringify(out));
})();
