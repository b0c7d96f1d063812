'use strict';
/**
 * Seeded fuzz harness for tokensieve's public API (everything lib/index.ts
 * exports, compiled to dist/lib).
 *
 * Each call i draws its own PRNG from (seed, i), picks a public function,
 * builds a VALID argument set (small shapes, random data) and applies 0–3
 * corruptions. Every corruption is classified:
 *   'invalid' – the documented API must throw / reject,
 *   'maybe'   – either outcome is fine, but an error must carry a code,
 *   'valid'   – the call should work (still: an error must carry a code).
 * A problem is: an error that is not a TypeError/RangeError/TokenSieveError or
 * has no string `code` starting with "ERR_"; an 'invalid' call that returned or
 * resolved; a Promise API that threw synchronously; a call (sync, or async
 * settle time) slower than 10 s; a crash (signal) or hang of the process.
 *
 * CLI:  node test/fuzz/fuzz.js [--calls N] [--seed S] [--start I] [--only I]
 *                             [--exclude fnOrCorruption,...] [--no-fork] [--stats]
 *   Runs the calls in a child process supervised by this one: a native crash
 *   or a hung synchronous call is recorded as a problem (with the call that
 *   caused it) and the run resumes at the next call in a fresh child. Prints
 *   progress to stderr every 10,000 calls and one JSON line to stdout:
 *   {"calls","threw","returned","skipped","problems":[first 50],"problemCount","distinct":[...]}
 *   Exit code 1 when there are problems.
 *   --only I reproduces call I alone (same arguments as in the full run).
 *
 * API:  run({ seed, calls, log, start, exclude }) → Promise<summary> runs in this
 *   process (async calls have a 10 s watchdog; a hung sync call hangs it).
 */
const fs = require('fs');
const path = require('path');
const api = require('../../dist/lib');

const CALL_LIMIT_MS = 10000;
const MAX_PROBLEMS_REPORTED = 50;

// ---------------------------------------------------------------- PRNG

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The PRNG of call i: independent of every other call, so any call can be replayed alone. */
function callRng(seed, i) {
  const h = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul((i + 1) >>> 0, 0x85ebca77) ^ Math.floor(i / 4294967296)) >>> 0;
  const f = mulberry32(h);
  f();
  f();
  const r = {
    f,
    int: (lo, hi) => lo + Math.floor(f() * (hi - lo + 1)),
    pick: (arr) => arr[Math.floor(f() * arr.length)],
    chance: (p) => f() < p,
  };
  return r;
}

// ---------------------------------------------------------------- data

const FLOATS = ['f32', 'f16', 'bf16'];
const ALL_DTYPES = ['f32', 'f16', 'bf16', 'i32', 'i64', 'i8', 'u8'];
const DT_ARR = { f32: Float32Array, f16: Uint16Array, bf16: Uint16Array, i32: Int32Array, i64: BigInt64Array, i8: Int8Array, u8: Uint8Array };

function numel(shape) {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function contiguous(shape) {
  const s = new Array(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

function floatDtype(r) {
  const x = r.f();
  return x < 0.6 ? 'f32' : x < 0.8 ? 'f16' : 'bf16';
}

/** Random host data of a dtype: floats in [-1, 1), integers small. */
function randomData(r, dtype, n, lo = -8, hi = 8) {
  if (dtype === 'f32') {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = r.f() * 2 - 1;
    return a;
  }
  if (dtype === 'f16' || dtype === 'bf16') {
    const f = new Float32Array(n);
    for (let i = 0; i < n; i++) f[i] = r.f() * 2 - 1;
    return api.toHalfBits(f, dtype);
  }
  if (dtype === 'i64') {
    const a = new BigInt64Array(n);
    for (let i = 0; i < n; i++) a[i] = BigInt(r.int(lo, hi));
    return a;
  }
  const a = new DT_ARR[dtype](n);
  const l = dtype === 'u8' ? 0 : lo;
  for (let i = 0; i < n; i++) a[i] = r.int(l, hi);
  return a;
}

/** A host tensor-like { data, shape, dtype? } (f32 sometimes without a dtype). */
function ht(r, shape, dtype) {
  const data = randomData(r, dtype, numel(shape));
  const t = { data, shape: shape.slice() };
  if (dtype !== 'f32' && dtype !== 'i32' && dtype !== 'i64' && dtype !== 'i8' && dtype !== 'u8') t.dtype = dtype;
  else if (r.chance(0.3)) t.dtype = dtype;
  return t;
}

/** i32 indices in [lo, hi). */
function idx(r, shape, lo, hi) {
  const n = numel(shape);
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = r.int(lo, hi - 1);
  return { data: a, shape: shape.slice() };
}

/** k distinct sorted values of [0, n) (k <= n). */
function distinct(r, n, k) {
  const all = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = r.int(0, i);
    [all[i], all[j]] = [all[j], all[i]];
  }
  return all.slice(0, k).sort((x, y) => x - y);
}

function dtypeOf(t) {
  if (t instanceof api.Tensor) return t.dtype;
  if (t && t.dtype) return t.dtype;
  if (t && t.data instanceof Float32Array) return 'f32';
  if (t && t.data instanceof Int32Array) return 'i32';
  if (t && t.data instanceof BigInt64Array) return 'i64';
  if (t && t.data instanceof Int8Array) return 'i8';
  if (t && t.data instanceof Uint8Array) return 'u8';
  return 'f32';
}

// ---------------------------------------------------------------- paths

function getPath(obj, p) {
  let o = obj;
  for (const k of p) o = o == null ? undefined : o[k];
  return o;
}
function setPath(obj, p, v) {
  let o = obj;
  for (let i = 0; i < p.length - 1; i++) {
    if (o[p[i]] === undefined || o[p[i]] === null || typeof o[p[i]] !== 'object') o[p[i]] = {};
    o = o[p[i]];
  }
  if (v === DELETE) delete o[p[p.length - 1]];
  else o[p[p.length - 1]] = v;
}
const DELETE = Symbol('delete');

// ---------------------------------------------------------------- classification helpers

const V = 'valid';
const M = 'maybe';
const I = 'invalid';

function worst(list) {
  if (list.includes(I)) return I;
  if (list.includes(M)) return M;
  return V;
}

const isInt = (v) => typeof v === 'number' && Number.isInteger(v);
const intIn = (v, lo, hi) => isInt(v) && v >= lo && v <= hi;

/** finite rules: what NaN / Inf / -Inf in a tensor's data must do. */
const FIN = {
  /** rejected unless opts.checkFinite === false */
  rejectCF: (kind, a) => (a.opts && a.opts.checkFinite === false ? M : I),
  reject: () => I,
  allow: () => V,
  maybe: () => M,
  nanOnly: (kind) => (kind === 'nan' ? I : M),
  keyBias: (kind, a) => (kind === '-inf' ? V : a.opts && a.opts.checkFinite === false ? M : I),
};

// ---------------------------------------------------------------- slots
//
// tensor slot: { path, ranks, dtypes, dims (string of 'c' coupled / 'f' free per dim),
//   finite, optional, empty ('invalid' | 'maybe'), gen(r, shape) → host tensor,
//   dtypeCoupled, index: { bad(a) → cls } for i32 index tensors }
// scalar slot: { path, valid(v, a) → true | false | 'maybe', near(a) → [values], kind: 'int' | 'real' }
// opts: { path, known: { name: type }, checked }

function tslot(path, gen, spec) {
  return Object.assign({ path, gen, ranks: [], dtypes: FLOATS, dims: '', finite: FIN.maybe, optional: false, empty: I }, spec);
}

function sslot(path, valid, near = () => [], kind = 'int') {
  return { path, valid, near, kind };
}

// ---------------------------------------------------------------- attention sources

/**
 * An attention source for the methods: { q, k, layout?, scale? } or { probs }.
 * N is the key (token) count; nCoupled: whether N must match other inputs.
 */
function attnSource(r, base, B, N, opt = {}) {
  const H = r.int(1, 3);
  const D = r.int(1, 12);
  const dt = floatDtype(r);
  const slots = [];
  const nDim = opt.nCoupled ? 'c' : 'f';
  const bDim = opt.bCoupled ? 'c' : 'f';
  if (!opt.noProbs && r.chance(0.3)) {
    const Nq = opt.square ? N : r.chance(0.5) ? N : r.int(1, N + 2);
    const src = { probs: ht(r, [B, H, Nq, N], dt) };
    slots.push(tslot([...base, 'probs'], (rr, s) => ht(rr, s, dt), { ranks: [4], dims: bDim + 'f' + (opt.square ? nDim : 'f') + nDim, finite: FIN.reject }));
    return { src, slots, kind: 'probs', H };
  }
  const layout = r.pick([undefined, 'bhnd', 'bnhd']);
  const Nq = opt.square ? N : r.chance(0.6) ? N : r.int(1, N + 2);
  const shp = (n) => (layout === 'bnhd' ? [B, n, H, D] : [B, H, n, D]);
  const src = { q: ht(r, shp(Nq), dt), k: ht(r, shp(N), dt) };
  if (layout) src.layout = layout;
  if (r.chance(0.2)) src.scale = r.f() * 2;
  // q and k must agree in B, H and D; B must also match the other inputs when bCoupled
  const qd = layout === 'bnhd' ? 'c' + (opt.square ? nDim : 'f') + 'cc' : 'cc' + (opt.square ? nDim : 'f') + 'c';
  const kd = layout === 'bnhd' ? 'c' + nDim + 'cc' : 'cc' + nDim + 'c';
  slots.push(tslot([...base, 'q'], (rr, s) => ht(rr, s, dt), { ranks: [4], dims: qd, finite: FIN.reject, dtypeCoupled: true }));
  slots.push(tslot([...base, 'k'], (rr, s) => ht(rr, s, dt), { ranks: [4], dims: kd, finite: FIN.reject, dtypeCoupled: true }));
  return { src, slots, kind: 'qk', H, D, layout };
}

/** visionDrop is causal: when q and k differ in length a row may see no key (nothing read). */
const sameQK = (kind, a) => (a.q && a.k && Array.isArray(a.q.shape) && Array.isArray(a.k.shape) && a.q.shape.join() === a.k.shape.join() ? I : M);

const BOOL = 'bool';
const BIG = 'bigint';
const NUM = 'num';
const ENUM = 'enum';
const INT = 'int';
const ANY = 'any';

const STREAM_OPTS = { stream: BIG, wait: BOOL };

// ---------------------------------------------------------------- builders
//
// Each builder(r, sync) returns a case:
// { fn, a, call(a), slots, scalars, opts, extras: [(c, r) → { name, cls } | null], post(result) }

function twin(base, sync) {
  return sync ? base + 'Sync' : base;
}

function disposePlan(p) {
  if (p && typeof p.dispose === 'function') p.dispose();
}

const builders = {
  attentionScores(r, sync) {
    const B = r.int(1, 2), H = r.int(1, 3), Nq = r.int(1, 12), Nk = r.int(1, 16), D = r.int(1, 16);
    const layout = r.pick([undefined, 'bhnd', 'bnhd']);
    const dt = floatDtype(r);
    const shp = (n) => (layout === 'bnhd' ? [B, n, H, D] : [B, H, n, D]);
    const a = { q: ht(r, shp(Nq), dt), k: ht(r, shp(Nk), dt), opts: {} };
    const o = a.opts;
    if (layout) o.layout = layout;
    const q = r.int(0, 4);
    if (q === 1) o.queries = 'all';
    else if (q === 2) o.queries = r.int(-Nq, Nq - 1);
    else if (q === 3) { const s = r.int(0, Nq - 1); o.queries = { start: s, end: r.int(s + 1, Nq) }; }
    else if (q === 4) o.queries = Array.from({ length: r.int(1, 4) }, () => r.int(-Nq, Nq - 1));
    if (r.chance(0.4)) o.reduce = r.pick(['mean', 'sum']);
    const heads = r.chance(0.5) ? r.pick(['mean', 'sum', 'none']) : undefined;
    if (heads) o.heads = heads;
    let ks = 0, ke = Nk;
    if (r.chance(0.4)) { ks = r.int(0, Nk - 1); ke = r.int(ks + 1, Nk); o.keys = r.chance(0.5) ? { start: ks, end: ke } : { start: ks - Nk, end: ke }; if (o.keys.start === -Nk + ks && ks === 0) o.keys.start = 0; }
    if (r.chance(0.2)) o.scale = r.f() * 4 - 2;
    if (r.chance(0.3)) o.causal = r.chance(0.7);
    if (r.chance(0.15)) o.causalOffset = r.int(-4, 4);
    if (r.chance(0.25)) {
      const kb = ht(r, [B, Nk], 'f32');
      if (r.chance(0.3)) kb.data[r.int(0, kb.data.length - 1)] = -Infinity;
      o.keyBias = kb;
    }
    const W = ke - ks;
    if (r.chance(0.25)) {
      o.out = ht(r, heads === 'none' ? [B, H, W] : [B, W], 'f32');
      if (r.chance(0.5)) o.accumulate = r.chance(0.7);
    }
    if (r.chance(0.2)) o.checkFinite = r.chance(0.5);
    if (r.chance(0.2)) {
      o.precision = 'int8';
      if (r.chance(0.5)) o.qRows = r.int(1, 40);
      if (r.chance(0.5)) o.kRows = r.int(1, 80);
      if (r.chance(0.5)) o.smoothK = r.chance(0.5);
    } else if (r.chance(0.1)) o.precision = 'native';
    if (r.chance(0.1)) o.wait = r.chance(0.5);
    const qd = layout === 'bnhd' ? 'cfcc' : 'ccfc';
    const fn = twin('attentionScores', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.q, a.k, a.opts),
      slots: [
        // with a causal mask a row may see no key at all, and then neither its q row nor k is read
        tslot(['q'], (rr, s) => ht(rr, s, dt), { ranks: [4], dims: qd, finite: (kind, a) => (a.opts && a.opts.causal === true ? M : FIN.rejectCF(kind, a)), dtypeCoupled: true }),
        tslot(['k'], (rr, s) => ht(rr, s, dt), { ranks: [4], dims: qd, finite: (kind, a) => (a.opts && a.opts.causal === true ? M : FIN.rejectCF(kind, a)), dtypeCoupled: true }),
        tslot(['opts', 'keyBias'], (rr, s) => ht(rr, s, 'f32'), { ranks: [2], dtypes: ['f32'], dims: 'cc', finite: FIN.keyBias, optional: true }),
        tslot(['opts', 'out'], (rr, s) => ht(rr, s, 'f32'), { ranks: [heads === 'none' ? 3 : 2], dtypes: ['f32'], dims: 'ccc', finite: FIN.maybe, optional: true }),
      ],
      scalars: [
        sslot(['opts', 'causalOffset'], (v) => v === undefined || intIn(v, -(2 ** 31), 2 ** 31 - 1), () => [2 ** 31, -(2 ** 31) - 1]),
        sslot(['opts', 'qRows'], (v, a) => v === undefined ? true : a.opts.precision !== 'int8' ? false : intIn(v, 1, 2 ** 30), () => [0, 2 ** 30 + 1]),
        sslot(['opts', 'kRows'], (v, a) => v === undefined ? true : a.opts.precision !== 'int8' ? false : intIn(v, 1, 2 ** 30), () => [0, 2 ** 30 + 1]),
        sslot(['opts', 'queries'], (v) => validQueries(v, Nq), () => [Nq, -Nq - 1, { start: 0, end: 0 }, { start: 0, end: Nq + 1 }, [], [Nq], 'first'], 'any'),
        sslot(['opts', 'keys'], (v) => validKeys(v, Nk), () => [{ start: Nk }, { end: 0 }, { start: 0, end: Nk + 1 }, { start: -Nk - 1 }, { start: 1.5 }, 5], 'any'),
        sslot(['opts', 'scale'], (v) => v === undefined || (typeof v === 'number' && Number.isFinite(v)), () => [0, -1, 1e30], 'real'),
        sslot(['opts', 'accumulate'], (v, a) => v === undefined || v === false ? true : v === true ? a.opts.out !== undefined : false, () => [true], 'any'),
      ],
      opts: { path: ['opts'], checked: true, known: { queries: ANY, reduce: ENUM, heads: ENUM, keys: ANY, out: ANY, accumulate: BOOL, checkFinite: BOOL, stream: BIG, wait: BOOL, scale: NUM, causal: BOOL, causalOffset: INT, keyBias: ANY, layout: ENUM, precision: ENUM, qRows: INT, kRows: INT, smoothK: BOOL } },
      extras: [
        (c) => { if (c.a.opts.precision === 'int8' || c.a.opts.smoothK !== undefined) return null; c.a.opts.smoothK = true; return { name: 'smoothK-without-int8', cls: I }; },
        (c, rr) => { c.a.opts.out = c.a.q; return { name: 'out-aliases-q', cls: I }; },
      ],
    };
  },

  reduceAttention(r, sync) {
    const B = r.int(1, 2), H = r.int(1, 3), Nq = r.int(1, 12), Nk = r.int(1, 16);
    const dt = floatDtype(r);
    const a = { probs: ht(r, [B, H, Nq, Nk], dt), opts: r.chance(0.2) ? undefined : {} };
    const o = a.opts || {};
    if (r.chance(0.5)) o.queries = r.pick(['all', r.int(-Nq, Nq - 1), { start: 0, end: Nq }]);
    if (r.chance(0.4)) o.reduce = r.pick(['mean', 'sum']);
    const heads = r.chance(0.5) ? r.pick(['mean', 'sum', 'none']) : undefined;
    if (heads) o.heads = heads;
    let ks = 0, ke = Nk;
    if (r.chance(0.4)) { ks = r.int(0, Nk - 1); ke = r.int(ks + 1, Nk); o.keys = { start: ks, end: ke }; }
    if (r.chance(0.2)) { o.out = ht(r, heads === 'none' ? [B, H, ke - ks] : [B, ke - ks], 'f32'); if (r.chance(0.5)) o.accumulate = true; }
    if (r.chance(0.2)) o.checkFinite = r.chance(0.5);
    if (a.opts === undefined && Object.keys(o).length) a.opts = o;
    const fn = twin('reduceAttention', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.probs, a.opts),
      slots: [
        tslot(['probs'], (rr, s) => ht(rr, s, dt), { ranks: [4], dims: o.out ? (heads === 'none' ? 'ccff' : 'cfff') : 'ffff', finite: FIN.rejectCF }),
        tslot(['opts', 'out'], (rr, s) => ht(rr, s, 'f32'), { ranks: [heads === 'none' ? 3 : 2], dtypes: ['f32'], dims: 'ccc', optional: true }),
      ],
      scalars: [
        sslot(['opts', 'queries'], (v) => validQueries(v, Nq), () => [Nq, -Nq - 1, { start: 2, end: 1 }, []], 'any'),
        sslot(['opts', 'keys'], (v) => validKeys(v, Nk), () => [{ start: Nk }, { start: 0, end: Nk + 1 }], 'any'),
      ],
      opts: { path: ['opts'], checked: true, known: { queries: ANY, reduce: ENUM, heads: ENUM, keys: ANY, out: ANY, accumulate: BOOL, checkFinite: BOOL, stream: BIG, wait: BOOL } },
      extras: [(c) => { if (!c.a.opts) c.a.opts = {}; c.a.opts.accumulate = true; delete c.a.opts.out; return { name: 'accumulate-without-out', cls: I }; }],
    };
  },

  topk(r, sync) {
    const flat = r.chance(0.3);
    const B = r.int(1, 3), N = r.int(1, 40);
    const dt = floatDtype(r);
    const shape = flat ? [N] : [B, N];
    const a = { scores: ht(r, shape, dt), k: r.int(1, N), opts: r.chance(0.4) ? undefined : {} };
    if (a.opts) {
      if (r.chance(0.5)) a.opts.order = r.pick(['index', 'score']);
      if (r.chance(0.4)) a.opts.values = r.chance(0.5);
      if (r.chance(0.1)) a.opts.wait = r.chance(0.5);
    }
    if (r.chance(0.2)) for (let i = 0; i < 3; i++) a.scores.data[r.int(0, a.scores.data.length - 1)] = dt === 'f32' ? NaN : 0x7fc0;
    const fn = twin('topk', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.scores, a.k, a.opts),
      slots: [tslot(['scores'], (rr, s) => ht(rr, s, dt), { ranks: [1, 2], dims: flat ? 'f' : 'ff', finite: FIN.allow })],
      scalars: [sslot(['k'], (v, a) => intIn(v, 1, N), () => [0, N + 1, N])],
      opts: { path: ['opts'], checked: true, known: { order: ENUM, values: BOOL, stream: BIG, wait: BOOL } },
    };
  },

  gather(r, sync) {
    const flat = r.chance(0.25);
    const B = flat ? 1 : r.int(1, 3), N = r.int(1, 30), C = r.int(1, 12), K = r.int(1, 20);
    const dt = r.chance(0.6) ? floatDtype(r) : r.pick(ALL_DTYPES);
    const a = {
      x: ht(r, flat ? [N, C] : [B, N, C], dt),
      indices: idx(r, flat ? [K] : [B, K], 0, N),
      opts: r.chance(0.6) ? undefined : {},
    };
    if (a.opts && r.chance(0.3)) a.opts.checkIndices = true;
    if (a.opts && r.chance(0.2)) a.opts.wait = r.chance(0.5);
    const fn = twin('gather', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.x, a.indices, a.opts),
      slots: [
        tslot(['x'], (rr, s) => ht(rr, s, dt), { ranks: flat ? [2, 3] : [3], dtypes: ALL_DTYPES, dims: flat ? 'ff' : 'cff', finite: FIN.allow, empty: M }),
        tslot(['indices'], (rr, s) => idx(rr, s, 0, N), {
          ranks: flat ? [1, 2] : [2], dtypes: ['i32'], dims: flat ? 'f' : 'cf', empty: M,
          index: { bad: (a) => (a.opts && a.opts.checkIndices === false ? M : I) },
        }),
      ],
      scalars: [],
      opts: { path: ['opts'], checked: true, known: { stream: BIG, wait: BOOL, checkIndices: BOOL } },
      extras: [(c, rr) => {
        // an out-of-range index with the checks turned off: the documented option; must not crash
        const d = c.a.indices.data;
        d[rr.int(0, d.length - 1)] = rr.pick([N, -1, 2 ** 31 - 1, -(2 ** 31), N + 1000000]);
        if (!c.a.opts) c.a.opts = {};
        c.a.opts.checkIndices = false;
        return { name: 'bad-index-checkIndices-false', cls: M };
      }],
    };
  },

  quantize(r, sync) {
    const rank = r.int(1, 4);
    const shape = Array.from({ length: rank }, () => r.int(1, rank === 4 ? 6 : 10));
    const dt = floatDtype(r);
    const C = shape[rank - 1];
    const a = { x: ht(r, shape, dt), opts: r.chance(0.2) ? undefined : {} };
    const o = a.opts || {};
    const bits = r.pick([8, 4]);
    if (r.chance(0.7)) o.bits = bits;
    let gran = 'token';
    const g = r.int(0, 5);
    if (g === 1) gran = 'tensor';
    else if (g === 2) gran = 'channel';
    else if (g === 3) { const divs = []; for (let d = 1; d <= C; d++) if (C % d === 0) divs.push(d); const pad = r.chance(0.4); gran = pad ? { group: r.int(1, C + 2), pad: true } : { group: r.pick(divs) }; }
    else if (g === 4 && rank === 4) { const Nn = shape[2]; const divs = []; for (let d = 1; d <= Nn; d++) if (Nn % d === 0) divs.push(d); const pad = r.chance(0.4); gran = pad ? { rows: r.int(1, Nn + 2), pad: true } : { rows: r.pick(divs) }; }
    else if (g === 5) gran = 'token';
    if (gran !== 'token' || r.chance(0.3)) o.granularity = gran;
    const smooth = rank === 4 && r.chance(0.3);
    if (smooth) o.smooth = true;
    if (r.chance(0.2)) o.checkFinite = r.chance(0.5);
    if (r.chance(0.2)) {
      const lay = quantLayout(shape, bits, gran);
      o.out = { data: ht(r, lay.data, bits === 8 ? 'i8' : 'u8'), scales: ht(r, lay.scales, 'f32') };
      if (smooth) o.out.mean = ht(r, [shape[0], shape[1], 1, shape[3]], 'f32');
      o.bits = bits;
    }
    if (a.opts === undefined && Object.keys(o).length) a.opts = o;
    const fn = twin('quantize', sync);
    const slots = [tslot(['x'], (rr, s) => ht(rr, s, dt), { ranks: [1, 2, 3, 4, 5, 6], dims: 'ffffff', finite: FIN.rejectCF })];
    if (o.out) {
      slots.push(tslot(['opts', 'out', 'data'], (rr, s) => ht(rr, s, bits === 8 ? 'i8' : 'u8'), { ranks: [-1], dtypes: [bits === 8 ? 'i8' : 'u8'], dims: 'cccccc', finite: FIN.allow }));
      slots.push(tslot(['opts', 'out', 'scales'], (rr, s) => ht(rr, s, 'f32'), { ranks: [-1], dtypes: ['f32'], dims: 'cccccc', finite: FIN.allow }));
    }
    return {
      fn, a,
      call: (a) => api[fn](a.x, a.opts),
      slots,
      scalars: [sslot(['opts', 'bits'], (v) => v === undefined || v === 8 || v === 4, () => [2, 16, 0], 'any')],
      opts: { path: ['opts'], checked: true, known: { bits: ANY, granularity: ANY, smooth: BOOL, checkFinite: BOOL, out: ANY, stream: BIG, wait: BOOL } },
      extras: [
        (c, rr) => { setPath(c.a, ['opts', 'granularity'], rr.pick(['row', { group: 0 }, { group: 1.5 }, { rows: 2, group: 2 }, { group: 2, pad: 'yes' }, 5, { group: 2 ** 31 }])); return { name: 'bad-granularity', cls: I }; },
        (c) => { if (rank === 4) return null; setPath(c.a, ['opts', 'smooth'], true); return { name: 'smooth-not-rank4', cls: I }; },
        (c) => { if (!c.a.opts || !c.a.opts.out) return null; c.a.opts.out.scales = c.a.x; return { name: 'out-aliases-x', cls: I }; },
      ],
    };
  },

  dequantize(r, sync) {
    const shape = [r.int(1, 2), r.int(1, 3), r.int(1, 6), r.int(1, 8)];
    const dt = floatDtype(r);
    const x = ht(r, shape, dt);
    const bits = r.pick([8, 4]);
    const smooth = r.chance(0.4);
    const gran = r.pick(['tensor', 'token', 'channel', { group: 1 }, { rows: shape[2] }, { group: 3, pad: true }]);
    const q = api.quantizeSync(x, { bits, granularity: gran, smooth });
    const a = { q, opts: r.chance(0.3) ? undefined : {} };
    if (a.opts) {
      if (r.chance(0.5)) a.opts.dtype = r.pick(FLOATS);
      if (smooth && r.chance(0.5)) a.opts.addMean = true;
      if (r.chance(0.2)) a.opts.out = ht(r, shape, a.opts.dtype || dt);
    }
    const fn = twin('dequantize', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.q, a.opts),
      slots: a.opts && a.opts.out ? [tslot(['opts', 'out'], (rr, s) => ht(rr, s, (a.opts.dtype || dt)), { ranks: [4], dims: 'cccc', dtypes: [a.opts.dtype || dt], finite: FIN.allow, optional: true })] : [],
      scalars: [sslot(['opts', 'dtype'], (v) => v === undefined || FLOATS.includes(v), () => ['i8', 'f64', 1], 'any')],
      opts: { path: ['opts'], checked: true, known: { dtype: ANY, addMean: BOOL, out: ANY, stream: BIG, wait: BOOL } },
      extras: [
        (c, rr) => { c.a.q = Object.assign({}, c.a.q, { bits: rr.pick([2, 16, '8', undefined]) }); return { name: 'q.bits', cls: c.a.q.bits === undefined ? M : I }; },
        (c, rr) => { c.a.q = Object.assign({}, c.a.q, { granularity: rr.pick(['rows', { group: 0 }, 7, { group: shape[3] + 1 }]) }); return { name: 'q.granularity', cls: I }; },
        (c, rr) => { c.a.q = Object.assign({}, c.a.q, { shape: rr.pick([[], [2 ** 31], shape.map((d) => d + 1), [...shape, 1], [NaN, 1, 1, 1], 'abc']) }); return { name: 'q.shape', cls: I }; },
        (c) => { const t = api.Tensor.from(c.a.q.data); t.dispose(); c.a.q = Object.assign({}, c.a.q, { data: t }); return { name: 'q.data-disposed', cls: I }; },
        (c) => { c.a.q = Object.assign({}, c.a.q, { data: c.a.q.scales, scales: c.a.q.data }); return { name: 'q.data<->scales', cls: I }; },
        (c, rr) => { c.a.q = rr.pick([null, {}, 5, 'q', { data: 1, scales: 2, shape: [] }]); return { name: 'q-not-quantized', cls: I }; },
        (c) => { if (smooth) return null; setPath(c.a, ['opts', 'addMean'], true); return { name: 'addMean-without-smooth', cls: I }; },
        (c, rr) => { c.a.q = Object.assign({}, c.a.q, { dtype: rr.pick(['i8', 'f64', undefined]) }); if (c.a.opts && c.a.opts.dtype) return { name: 'q.dtype', cls: M }; return { name: 'q.dtype', cls: I }; },
        (c) => { c.a.q = Object.assign({}, c.a.q, { data: api.Tensor.from({ data: new Int8Array(c.a.q.data.numel), shape: c.a.q.data.shape.slice(), dtype: 'i8' }) }); return { name: 'q.data-retyped-i8', cls: bits === 8 ? V : M }; },
      ],
    };
  },

  errorReport(r) {
    const shape = Array.from({ length: r.int(1, 3) }, () => r.int(1, 8));
    const dt = floatDtype(r);
    const a = { x: ht(r, shape, dt) };
    let isQ = false;
    if (r.chance(0.4)) { a.approx = api.quantizeSync(a.x, { bits: r.pick([8, 4]) }); isQ = true; }
    else a.approx = ht(r, r.chance(0.5) ? shape : [numel(shape)], r.chance(0.7) ? dt : r.pick(ALL_DTYPES));
    const adt = isQ ? 'f32' : dtypeOf(a.approx);
    const slots = [tslot(['x'], (rr, s) => ht(rr, s, dt), { ranks: [0, 1, 2, 3, 4, 5, 6], dtypes: ALL_DTYPES, dims: 'cccccc', empty: M })];
    if (!isQ) slots.push(tslot(['approx'], (rr, s) => ht(rr, s, adt), { ranks: [0, 1, 2, 3, 4, 5, 6], dtypes: ALL_DTYPES, dims: 'cccccc', empty: M }));
    return { fn: 'errorReport', a, call: (a) => api.errorReport(a.x, a.approx), slots, scalars: [], opts: null };
  },

  bipartiteSoftMatch(r, sync) {
    const B = r.int(1, 2), C = r.int(1, 12);
    const useGrid = r.chance(0.3);
    let N, w, h;
    if (useGrid) { w = r.int(1, 6); h = r.int(1, 6); if (w * h < 2) w = 2; N = w * h; } else N = r.int(1, 40);
    const dt = floatDtype(r);
    const a = { metric: ht(r, [B, N, C], dt), r: r.int(0, Math.ceil(N / 2) + 2), opts: r.chance(0.3) ? undefined : {} };
    if (a.opts) {
      if (useGrid) {
        const sx = r.int(1, w), sy = r.int(1, h);
        const s2 = { w, h, sx: sx * sy < 2 ? (w >= 2 ? 2 : 1) : sx, sy: sx * sy < 2 && w < 2 ? 2 : sy };
        a.opts.split = r.chance(0.5) ? { grid2d: s2 } : { random2d: Object.assign({ seed: r.int(0, 2 ** 32 - 1) }, s2) };
      } else {
        if (r.chance(0.3)) a.opts.split = 'parity';
        if (r.chance(0.5)) a.opts.protect = { cls: r.chance(0.5), distill: r.chance(0.3) };
      }
      if (r.chance(0.3)) a.opts.precision = r.pick(['f32', 'bf16']);
    }
    const fn = twin('bipartiteSoftMatch', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.metric, a.r, a.opts),
      post: disposePlan,
      // r = 0 (or a cap of 0) is ToMe's identity plan: the metric's values are never read
      slots: [tslot(['metric'], (rr, s) => ht(rr, s, dt), { ranks: [3], dims: 'fff', finite: (k, a) => (a.r === 0 || N < 2 + (a.opts && a.opts.protect && a.opts.protect.cls ? 1 : 0) + (a.opts && a.opts.protect && a.opts.protect.distill ? 1 : 0) ? M : I) })],
      scalars: [sslot(['r'], (v) => isInt(v) && v >= 0, () => [-1, N, 2 ** 31, 2 ** 53 - 1])],
      opts: { path: ['opts'], checked: true, known: { protect: ANY, split: ANY, precision: ENUM, stream: BIG, wait: BOOL } },
      extras: [
        (c, rr) => { setPath(c.a, ['opts', 'protect'], rr.pick([{ cls: 1 }, { klass: true }, 'cls', { cls: true, distill: 'no' }])); return { name: 'bad-protect', cls: I }; },
        (c, rr) => {
          setPath(c.a, ['opts', 'split'], rr.pick([
            'grid', { grid2d: { w: N, h: 2, sx: 2, sy: 2 } }, { grid2d: { w: N, h: 1, sx: 1, sy: 1 } }, { grid2d: { w: N, h: 1, sx: N + 1, sy: 1 } },
            { random2d: { w: N, h: 1, sx: 2, sy: 1 } }, { random2d: { w: N, h: 1, sx: 2, sy: 1, seed: -1 } }, { grid2d: { w: N, h: 1, sx: 2, sy: 1, seed: 3 } },
            { grid2d: { w: N, h: 1, sx: 2, sy: 1 }, random2d: {} }, { grid2d: null }, [], { grid2d: { w: 2 ** 31, h: 1, sx: 2, sy: 1 } },
          ]));
          return { name: 'bad-split', cls: I };
        },
        (c) => { if (N < 2) return null; setPath(c.a, ['opts', 'split'], { grid2d: { w: N, h: 1, sx: 2, sy: 1 } }); setPath(c.a, ['opts', 'protect'], { cls: true }); return { name: 'protect-with-2d-split', cls: I }; },
      ],
    };
  },

  merge(r, sync) {
    const B = r.int(1, 2), N = r.int(1, 30), C = r.int(1, 10);
    const dt = floatDtype(r);
    const plan = api.bipartiteSoftMatchSync(ht(r, [B, N, r.int(1, 8)], 'f32'), r.int(0, N), r.chance(0.5) ? { protect: { cls: true } } : undefined);
    const mode = r.pick([undefined, 'mean', 'sum', 'amax', 'wavg']);
    const a = { plan, x: ht(r, [B, N, C], dt), opts: mode ? { mode } : undefined };
    if (mode === 'wavg' && r.chance(0.6)) {
      const s = ht(r, [B, N, 1], 'f32');
      for (let i = 0; i < s.data.length; i++) s.data[i] = 1 + r.int(0, 4);
      a.opts.sizes = s;
    }
    const fn = twin('merge', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.plan, a.x, a.opts),
      post: () => plan.dispose(),
      cleanup: () => plan.dispose(),
      slots: [
        tslot(['x'], (rr, s) => ht(rr, s, dt), { ranks: [3], dims: 'ccf', finite: FIN.maybe }),
        tslot(['opts', 'sizes'], (rr, s) => ht(rr, s, 'f32'), { ranks: [3], dtypes: ['f32'], dims: 'ccc', finite: FIN.maybe, optional: true }),
      ],
      scalars: [sslot(['opts', 'mode'], (v) => v === undefined || ['wavg', 'mean', 'sum', 'amax'].includes(v), () => ['avg', 'max'], 'any')],
      opts: { path: ['opts'], checked: true, known: { mode: ENUM, sizes: ANY, stream: BIG, wait: BOOL } },
      extras: planExtras().concat([
        (c, rr) => { if (mode === 'wavg' || mode === undefined) return null; setPath(c.a, ['opts', 'sizes'], ht(rr, [B, N, 1], 'f32')); return { name: 'sizes-without-wavg', cls: I }; },
      ]),
    };
  },

  unmerge(r, sync) {
    const B = r.int(1, 2), N = r.int(1, 30), C = r.int(1, 10);
    const dt = r.chance(0.7) ? floatDtype(r) : r.pick(ALL_DTYPES);
    const plan = api.bipartiteSoftMatchSync(ht(r, [B, N, r.int(1, 8)], 'f32'), r.int(0, N));
    const a = { plan, x: ht(r, [B, plan.nOut, C], dt), opts: r.chance(0.8) ? undefined : { wait: true } };
    const fn = twin('unmerge', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.plan, a.x, a.opts),
      post: () => plan.dispose(),
      cleanup: () => plan.dispose(),
      slots: [tslot(['x'], (rr, s) => ht(rr, s, dt), { ranks: [3], dtypes: ALL_DTYPES, dims: 'ccf', finite: FIN.allow })],
      scalars: [],
      opts: { path: ['opts'], checked: true, known: STREAM_OPTS },
      extras: planExtras(),
    };
  },

  mergeSource(r, sync) {
    const B = r.int(1, 2), N = r.int(1, 30);
    const plan = api.bipartiteSoftMatchSync(ht(r, [B, N, r.int(1, 8)], 'f32'), r.int(0, N));
    const P = r.int(1, 40);
    const a = { plan, source: r.chance(0.3) ? undefined : idx(r, [B, P], 0, N) };
    const fn = twin('mergeSource', sync);
    return {
      fn, a,
      call: (a) => (a.source === undefined ? api[fn](a.plan) : api[fn](a.plan, a.source)),
      post: () => plan.dispose(),
      cleanup: () => plan.dispose(),
      slots: a.source ? [tslot(['source'], (rr, s) => idx(rr, s, 0, N), { ranks: [2], dtypes: ['i32'], dims: 'cf', optional: true, index: { bad: () => I } })] : [],
      scalars: [],
      opts: null,
      extras: planExtras(),
    };
  },

  patchMasks(r) {
    const B = r.int(1, 2), P = r.int(1, 30), T = r.int(1, 20);
    const a = { source: idx(r, [B, P], 0, T), n: T };
    return {
      fn: 'patchMasks', a,
      call: (a) => api.patchMasks(a.source, a.n),
      slots: [tslot(['source'], (rr, s) => idx(rr, s, 0, T), { ranks: [2], dtypes: ['i32'], dims: 'ff', empty: M, index: { bad: () => M } })],
      scalars: [sslot(['n'], (v, a) => { if (!intIn(v, 1, 2 ** 31 - 1)) return false; const d = a.source && a.source.data; if (d instanceof Int32Array) { for (const t of d) if (t >= v) return false; } return v > 2 ** 20 ? M : true; }, () => [0, 2 ** 31 - 1, 2 ** 31, 2 ** 28])],
      opts: null,
    };
  },

  contextualMerge(r, sync) {
    const B = r.int(1, 2), N = r.int(2, 30), C = r.int(1, 10), Cm = r.int(1, 8);
    const dt = floatDtype(r);
    const kept = r.int(0, N - 1);
    const Nr = N - kept;
    const a = { x: ht(r, [B, N, C], dt), metric: ht(r, [B, N, Cm], floatDtype(r)), keep: null, c: r.int(1, Nr), opts: r.chance(0.8) ? undefined : { wait: true } };
    const rows = Array.from({ length: B }, () => distinct(r, N, kept));
    if (r.chance(0.5)) {
      const d = new Int32Array(B * kept);
      rows.forEach((row, b) => row.forEach((t, j) => (d[b * kept + j] = t)));
      a.keep = { keptIndices: { data: d, shape: [B, kept] } };
    } else {
      const mdt = r.pick(['u8', 'f32', 'i32']);
      const m = new DT_ARR[mdt](B * N);
      rows.forEach((row, b) => row.forEach((t) => (m[b * N + t] = 1)));
      a.keep = { keepMask: { data: m, shape: [B, N] } };
    }
    const fn = twin('contextualMerge', sync);
    const slots = [
      tslot(['x'], (rr, s) => ht(rr, s, dt), { ranks: [3], dims: 'ccf', finite: FIN.maybe }),
      tslot(['metric'], (rr, s) => ht(rr, s, 'f32'), { ranks: [3], dims: 'ccf', finite: FIN.reject }),
    ];
    if (a.keep.keptIndices) slots.push(tslot(['keep', 'keptIndices'], null, { ranks: [2], dtypes: ['i32'], dims: 'cm', empty: M, index: { bad: () => I } }));
    return {
      fn, a,
      call: (a) => api[fn](a.x, a.metric, a.keep, a.c, a.opts),
      slots,
      scalars: [sslot(['c'], (v) => intIn(v, 1, Nr), () => [0, Nr + 1, Nr])],
      opts: { path: ['opts'], checked: true, known: STREAM_OPTS },
      extras: [
        (c, rr) => { c.a.keep = rr.pick([null, {}, { keepMask: c.a.x, keptIndices: c.a.x }, { kept: [0] }, 'all']); return { name: 'bad-keep', cls: I }; },
        (c) => { const m = new Uint8Array(B * N).fill(1); c.a.keep = { keepMask: { data: m, shape: [B, N] } }; return { name: 'keep-everything', cls: I }; },
        (c) => { if (B < 2) return null; const m = new Uint8Array(B * N); m[0] = 1; c.a.keep = { keepMask: { data: m, shape: [B, N] } }; return { name: 'unequal-keep-rows', cls: I }; },
      ],
    };
  },

  kCenter(r, sync) {
    const flat = r.chance(0.2);
    const B = flat ? 1 : r.int(1, 2), C = r.int(1, 12);
    const noOpts = r.chance(0.3);
    const segments = !noOpts && r.chance(0.3) ? r.int(1, 4) : 1;
    const S = r.int(1, 12);
    const N = segments * S;
    const dt = floatDtype(r);
    const a = { x: ht(r, flat ? [N, C] : [B, N, C], dt), k: r.int(1, S), opts: noOpts ? undefined : {} };
    if (a.opts) {
      if (segments > 1 || r.chance(0.2)) a.opts.segments = segments;
      if (r.chance(0.4)) a.opts.metric = r.pick(['cosine', 'l2']);
      if (r.chance(0.4)) a.opts.seed = r.pick(['isolated', 'maxnorm', r.int(0, S - 1)]);
      if (r.chance(0.2) && S - a.k >= 1) {
        const m = new Uint8Array(B * N);
        const seedIdx = typeof a.opts.seed === 'number' ? a.opts.seed : -1;
        for (let b = 0; b < B; b++) for (let s = 0; s < segments; s++) { const j = r.int(0, S - 1); if (j !== seedIdx) m[b * N + s * S + j] = 1; }
        a.opts.exclude = { data: m, shape: flat ? [N] : [B, N] };
      }
    }
    const fn = twin('kCenter', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.x, a.k, a.opts),
      slots: [
        tslot(['x'], (rr, s) => ht(rr, s, dt), { ranks: [2, 3], dims: 'fff', finite: FIN.reject }),
        tslot(['opts', 'exclude'], null, { ranks: B === 1 ? [1, 2] : [2], dtypes: ['u8'], dims: 'cc', optional: true }),
      ],
      scalars: [
        sslot(['k'], (v) => intIn(v, 1, S), () => [0, S + 1, S]),
        sslot(['opts', 'segments'], (v, a) => (v === undefined ? (segments === 1 ? true : M) : v === segments ? true : intIn(v, 1, N) ? M : false), () => [0, N + 1, N]),
        // An index past the generated segment (S) is valid again when a corruption also changed segments.
        sslot(['opts', 'seed'], (v, a) => (v === undefined || v === 'isolated' || v === 'maxnorm' || intIn(v, 0, S - 1) ? true : intIn(v, 0, N - 1) && a.opts && a.opts.segments !== segments ? M : false), () => [S, -1, 'random', 1.5]),
      ],
      opts: { path: ['opts'], checked: true, known: { metric: ENUM, seed: ANY, exclude: ANY, segments: INT, stream: BIG, wait: BOOL } },
      // Invalid only while that mask is still the exclude (a later corruption may replace it).
      extras: [(c) => {
        const t = { data: new Uint8Array(B * N).fill(1), shape: flat ? [N] : [B, N] };
        setPath(c.a, ['opts', 'exclude'], t);
        return { name: 'exclude-everything', cls: I, judge: () => { try { return getPath(c.a, ['opts', 'exclude']) === t ? I : M; } catch (e) { return M; } } };
      }],
    };
  },

  kMedoids(r, sync) {
    const flat = r.chance(0.2);
    const B = flat ? 1 : r.int(1, 2), C = r.int(1, 10);
    const noOpts = r.chance(0.3);
    const segments = !noOpts && r.chance(0.3) ? r.int(1, 3) : 1;
    const S = r.int(1, 12);
    const N = segments * S;
    const dt = floatDtype(r);
    const a = { x: ht(r, flat ? [N, C] : [B, N, C], dt), k: r.int(1, S), opts: noOpts ? undefined : {} };
    if (a.opts) {
      if (segments > 1 || r.chance(0.2)) a.opts.segments = segments;
      if (r.chance(0.4)) a.opts.metric = r.pick(['cosine', 'l2']);
      if (r.chance(0.4)) a.opts.maxIters = r.int(0, 20);
      if (r.chance(0.3)) a.opts.tol = r.pick([0, 1e-6, 0.5, Infinity]);
    }
    const fn = twin('kMedoids', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.x, a.k, a.opts),
      slots: [tslot(['x'], (rr, s) => ht(rr, s, dt), { ranks: [2, 3], dims: 'fff', finite: FIN.reject })],
      scalars: [
        sslot(['k'], (v) => intIn(v, 1, S), () => [0, S + 1]),
        sslot(['opts', 'maxIters'], (v) => v === undefined || (intIn(v, 0, 1e6) ? (v > 1000 ? M : true) : false), () => [-1, 1e6 + 1, 1e6]),
        sslot(['opts', 'tol'], (v) => v === undefined || (typeof v === 'number' && v >= 0), () => [-1, -Infinity, NaN], 'real'),
        sslot(['opts', 'segments'], (v) => (v === undefined ? (segments === 1 ? true : M) : v === segments ? true : intIn(v, 1, N) ? M : false), () => [0, N + 1]),
      ],
      opts: { path: ['opts'], checked: true, known: { metric: ENUM, segments: INT, maxIters: INT, tol: NUM, stream: BIG, wait: BOOL } },
    };
  },

  maxCoverage(r, sync) {
    const flat = r.chance(0.2);
    const B = flat ? 1 : r.int(1, 2), R = r.int(1, 12), N = r.int(1, 30);
    const dt = floatDtype(r);
    const a = { coverage: ht(r, flat ? [R, N] : [B, R, N], dt), k: r.int(1, N), opts: undefined };
    if (r.chance(0.3) && N > a.k) {
      const m = new Uint8Array(B * N);
      m[r.int(0, N - 1)] = 1;
      a.opts = { exclude: { data: m, shape: flat ? [N] : [B, N] } };
    }
    const fn = twin('maxCoverage', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.coverage, a.k, a.opts),
      slots: [
        tslot(['coverage'], (rr, s) => ht(rr, s, dt), { ranks: [2, 3], dims: 'fff', finite: FIN.reject }),
        tslot(['opts', 'exclude'], null, { ranks: B === 1 ? [1, 2] : [2], dtypes: ['u8'], dims: 'cc', optional: true }),
      ],
      scalars: [sslot(['k'], (v) => intIn(v, 1, N), () => [0, N + 1, N])],
      opts: { path: ['opts'], checked: true, known: { exclude: ANY, stream: BIG, wait: BOOL } },
    };
  },

  mmtokCoverage(r, sync) {
    const B = r.int(1, 2), m = r.int(1, 8), n = r.int(1, 20), D = r.int(1, 12);
    const dt = floatDtype(r);
    const a = { inputs: { text: ht(r, [B, m, D], dt), vision: ht(r, [B, n, D], dt) }, opts: r.chance(0.4) ? undefined : {} };
    if (r.chance(0.3)) a.inputs.visionAux = ht(r, [B, n, r.int(1, 8)], floatDtype(r));
    if (a.opts) {
      if (r.chance(0.5)) a.opts.tauTV = r.f() + 0.01;
      if (r.chance(0.5)) a.opts.tauVV = r.f() + 0.01;
      if (r.chance(0.5)) a.opts.alpha = r.pick([0, r.f()]);
    }
    const fn = twin('mmtokCoverage', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.inputs, a.opts),
      slots: [
        tslot(['inputs', 'text'], (rr, s) => ht(rr, s, dt), { ranks: B === 1 ? [2, 3] : [3], dims: 'cfc', finite: FIN.reject }),
        tslot(['inputs', 'vision'], (rr, s) => ht(rr, s, dt), { ranks: B === 1 ? [2, 3] : [3], dims: a.inputs.visionAux ? 'ccc' : 'cfc', finite: FIN.reject }),
        tslot(['inputs', 'visionAux'], (rr, s) => ht(rr, s, 'f32'), { ranks: B === 1 ? [2, 3] : [3], dims: 'ccf', finite: FIN.reject, optional: true }),
      ],
      scalars: [
        sslot(['opts', 'tauTV'], (v) => v === undefined || (typeof v === 'number' && Number.isFinite(v) && v > 0), () => [0, -1, Infinity, NaN], 'real'),
        sslot(['opts', 'tauVV'], (v) => v === undefined || (typeof v === 'number' && Number.isFinite(v) && v > 0), () => [0, -1e-9], 'real'),
        sslot(['opts', 'alpha'], (v) => v === undefined || (typeof v === 'number' && Number.isFinite(v) && v >= 0), () => [-1, Infinity], 'real'),
      ],
      opts: { path: ['opts'], checked: true, known: { tauTV: NUM, tauVV: NUM, alpha: NUM, stream: BIG, wait: BOOL } },
      extras: [(c, rr) => { c.a.inputs = rr.pick([null, 5, { text: c.a.inputs.text }, { vision: c.a.inputs.vision }]); return { name: 'bad-inputs', cls: I }; }],
    };
  },

  stcScores(r, sync) {
    const F = r.int(1, 3), T = r.int(1, 12), C = r.int(1, 12);
    const dt = floatDtype(r);
    const mode = r.pick([undefined, 'authors', 'aligned']);
    const Cm = mode === 'aligned' ? C : Math.max(1, Math.floor(C / 2));
    const a = { x: ht(r, [F, T, C], dt), opts: r.chance(0.3) ? undefined : {} };
    if (a.opts) {
      if (mode) a.opts.memory = mode;
      if (r.chance(0.5)) { a.opts.memorySum = ht(r, [Cm], 'f32'); a.opts.memoryCount = r.int(0, 5); }
    }
    const fn = twin('stcScores', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.x, a.opts),
      slots: [
        tslot(['x'], (rr, s) => ht(rr, s, dt), { ranks: [3], dims: 'fff', finite: FIN.nanOnly }),
        tslot(['opts', 'memorySum'], (rr, s) => ht(rr, s, 'f32'), { ranks: [1], dtypes: ['f32'], dims: 'c', finite: FIN.maybe, optional: true }),
      ],
      scalars: [sslot(['opts', 'memoryCount'], (v, a) => v === undefined || (intIn(v, 0, Number.MAX_SAFE_INTEGER) && (v === 0 || (a.opts && a.opts.memorySum !== undefined))), () => [-1, 1.5, 2 ** 53])],
      opts: { path: ['opts'], checked: true, known: { memorySum: ANY, memoryCount: INT, memory: ENUM, stream: BIG, wait: BOOL } },
    };
  },

  // ------------------------------------------------------------ methods

  fasterVLM(r, sync) {
    const B = r.int(1, 2), N = r.int(2, 30);
    const s = attnSource(r, ['src'], B, N);
    const a = { src: s.src, opts: r.chance(0.6) ? { keep: r.int(1, N - 1) } : { reduction: r.pick([0, 0.5, 0.9, r.f() * 0.99]) } };
    const fn = twin('fasterVLM', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.src, a.opts),
      slots: s.slots,
      scalars: [keepOrReduction(N - 1)],
      opts: { path: ['opts'], checked: true, known: { keep: INT, reduction: NUM } },
      extras: [srcExtra(['src'])],
    };
  },

  vtcCls(r, sync) {
    const B = r.int(1, 2), N = r.int(2, 20), L = r.int(1, 4);
    const start = r.int(0, L - 1), end = r.int(start + 1, L);
    const first = attnSource(r, ['layers', 0], B, N, { nCoupled: end - start > 1, bCoupled: end - start > 1 });
    const layers = [first.src];
    for (let l = 1; l < L; l++) layers.push(cloneSource(r, first.src));
    const a = { layers, opts: { startLayer: start, endLayer: end } };
    if (r.chance(0.6)) a.opts.keep = r.int(1, N - 1); else a.opts.reduction = r.f() * 0.9;
    const fn = twin('vtcCls', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.layers, a.opts),
      slots: start === 0 ? first.slots : [],
      scalars: [
        keepOrReduction(N - 1),
        sslot(['opts', 'startLayer'], (v, a) => { const e = a.opts.endLayer === undefined ? L - 1 : a.opts.endLayer; const s0 = v === undefined ? 16 : v; return isInt(s0) && isInt(e) && s0 >= 0 && e <= L && s0 < e; }, () => [-1, L, end, 1.5], 'any'),
        sslot(['opts', 'endLayer'], (v, a) => { const s0 = a.opts.startLayer === undefined ? 16 : a.opts.startLayer; const e = v === undefined ? L - 1 : v; return isInt(s0) && isInt(e) && s0 >= 0 && e <= L && s0 < e; }, () => [L + 1, start, 0, 2 ** 31], 'any'),
      ],
      opts: { path: ['opts'], checked: true, known: { keep: INT, reduction: NUM, startLayer: INT, endLayer: INT } },
      extras: [(c, rr) => { c.a.layers = rr.pick([[], null, 'layers', [null], [{}]]); return { name: 'bad-layers', cls: I }; }],
    };
  },

  fastV(r, sync) {
    const B = r.int(1, 2), L = r.int(2, 24);
    const s = attnSource(r, ['src'], B, L);
    // Causal (the default) with more query rows than keys: the query row may
    // see no key, and then neither q nor k is read (as for visionDrop).
    const causalQK = (kind, a) => (a.opts && a.opts.causal === false ? I : sameQK(kind, a.src || {}));
    if (s.kind === 'qk') for (const sl of s.slots) sl.finite = causalQK;
    const start = r.int(0, L - 1), n = r.int(1, L - start);
    const a = { src: s.src, opts: { imageStart: start, imageLength: n } };
    if (r.chance(0.6)) a.opts.keep = r.int(1, n); else a.opts.reduction = r.f() * 0.9;
    if (r.chance(0.3)) a.opts.queryRow = r.int(-1, 0);
    if (r.chance(0.3)) a.opts.causal = r.chance(0.5);
    const fn = twin('fastV', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.src, a.opts),
      slots: s.slots,
      scalars: [
        sslot(['opts', 'imageStart'], (v, a) => intIn(v, 0, L - 1) && (!isInt(a.opts.imageLength) || v + a.opts.imageLength <= L), () => [-1, L, L - 1]),
        sslot(['opts', 'imageLength'], (v, a) => intIn(v, 1, L) && (!intIn(a.opts.imageStart, 0, L - 1) || a.opts.imageStart + v <= L), () => [0, L - start + 1, 2 ** 31]),
        keepOrReduction(null, (a) => a.opts.imageLength),
      ],
      // causal is documented as ignored for precomputed probabilities
      opts: { path: ['opts'], checked: true, known: { imageStart: INT, imageLength: INT, keep: INT, reduction: NUM, queryRow: INT, causal: s.kind === 'probs' ? ANY : BOOL } },
      extras: [srcExtra(['src'])],
    };
  },

  hiPrune(r, sync) {
    const B = r.int(1, 2), N = r.int(2, 30);
    const sh = attnSource(r, ['shallow'], B, N, { nCoupled: true, bCoupled: true });
    const dp = attnSource(r, ['deep'], B, N, { nCoupled: true, bCoupled: true });
    const cls = r.chance(0.7);
    const P = cls ? N - 1 : N;
    const crops = r.chance(0.2) ? r.int(1, 3) : 1;
    const a = { shallow: sh.src, deep: dp.src, opts: { retention: r.int(crops, P * crops) } };
    if (!cls) a.opts.cls = false; else if (r.chance(0.2)) a.opts.cls = true;
    if (crops > 1 || r.chance(0.1)) a.opts.crops = crops;
    if (r.chance(0.4)) a.opts.alpha = r.pick([0, 1, r.f()]);
    if (r.chance(0.4)) a.opts.gridWidth = r.int(1, P);
    if (r.chance(0.3)) a.opts.neighbors = r.pick(['reference', 'grid']);
    const fn = twin('hiPrune', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.shallow, a.deep, a.opts),
      slots: sh.slots.concat(dp.slots),
      scalars: [
        sslot(['opts', 'retention'], (v, a) => { const cr = a.opts.crops === undefined ? 1 : a.opts.crops; return intIn(v, 1, P * cr) && Math.floor(v / cr) >= 1 && Math.floor(v / cr) <= P; }, () => [0, P * crops + 1, crops - 1]),
        sslot(['opts', 'alpha'], (v) => v === undefined || (typeof v === 'number' && v >= 0 && v <= 1), () => [-0.1, 1.1, NaN], 'real'),
        sslot(['opts', 'gridWidth'], (v) => v === undefined || intIn(v, 1, P), () => [0, P + 1]),
        sslot(['opts', 'crops'], (v, a) => v === undefined ? Math.floor(a.opts.retention / 1) <= P : intIn(v, 1, 1 << 20) && (intIn(a.opts.retention, 1, P * v) && Math.floor(a.opts.retention / v) >= 1 && Math.floor(a.opts.retention / v) <= P), () => [0, (1 << 20) + 1]),
      ],
      opts: { path: ['opts'], checked: true, known: { retention: INT, alpha: NUM, gridWidth: INT, crops: INT, cls: BOOL, neighbors: ENUM } },
      extras: [srcExtra(['deep'])],
    };
  },

  foPru(r, sync) {
    const B = r.int(1, 2);
    const strategy = r.pick([undefined, 'rank', 'row']);
    const cls = r.chance(0.4);
    const w = r.int(1, 5);
    const P = strategy === 'row' ? w * w : r.int(1, 25);
    const N = cls ? P + 1 : P;
    const s = attnSource(r, ['src'], B, N);
    const a = { src: s.src, opts: {} };
    if (strategy) a.opts.strategy = strategy;
    if (cls || r.chance(0.2)) a.opts.cls = cls;
    const which = strategy === 'row' ? r.pick(['keep', 'ratio', 'rows']) : r.pick(['keep', 'ratio']);
    if (which === 'keep') a.opts.keep = strategy === 'row' ? r.int(w, P) : r.int(1, P);
    else if (which === 'ratio') a.opts.ratio = strategy === 'row' ? r.pick([1, 0.99]) : r.pick([1, 0.5 + r.f() * 0.5]);
    else a.opts.rows = r.int(1, w);
    if (which === 'ratio' && strategy !== 'row' && Math.floor(P * a.opts.ratio) < 1) a.opts.ratio = 1;
    const fn = twin('foPru', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.src, a.opts),
      slots: s.slots,
      scalars: [
        sslot(['opts', 'keep'], (v) => (v === undefined ? which !== 'keep' : which !== 'keep' ? false : strategy === 'row' ? intIn(v, w, P) : intIn(v, 1, P)), () => [0, P + 1]),
        sslot(['opts', 'ratio'], (v) => (v === undefined ? which !== 'ratio' : which !== 'ratio' ? false : typeof v === 'number' && v > 0 && v <= 1 ? (strategy === 'row' ? Math.floor(w * v) >= 1 : Math.floor(P * v) >= 1) : false), () => [0, 1.01, NaN], 'real'),
        sslot(['opts', 'rows'], (v) => (v === undefined ? which !== 'rows' : which !== 'rows' || strategy !== 'row' ? false : intIn(v, 1, w)), () => [0, w + 1]),
      ],
      opts: { path: ['opts'], checked: true, known: { strategy: ENUM, keep: INT, ratio: NUM, rows: INT, cls: BOOL } },
      extras: [
        srcExtra(['src']),
        (c) => { if (strategy === 'row' || P === 1 || Math.round(Math.sqrt(P)) ** 2 === P) return null; c.a.opts = { strategy: 'row', rows: 1, cls }; return { name: 'row-on-non-square', cls: I }; },
      ],
    };
  },

  toMe(r) {
    const layers = r.int(1, 12);
    const a = { opts: { layers, r: r.pick([r.int(0, 8), { r: r.int(0, 8), inflection: r.pick([-1, 0, 0.5, 1]) }, Array.from({ length: r.int(0, layers) }, () => r.int(0, 4))]) } };
    if (r.chance(0.3)) a.opts.cls = r.chance(0.5);
    if (r.chance(0.2)) a.opts.distill = r.chance(0.5);
    if (r.chance(0.2)) a.opts.propAttn = r.chance(0.5);
    if (r.chance(0.2)) a.opts.traceSource = r.chance(0.5);
    if (r.chance(0.2)) a.opts.precision = r.pick(['f32', 'bf16']);
    const useClass = r.chance(0.3);
    return {
      fn: useClass ? 'new ToMe' : 'toMe', a,
      call: (a) => (useClass ? new api.ToMe(a.opts) : api.toMe(a.opts)),
      slots: [],
      scalars: [
        sslot(['opts', 'layers'], (v) => (intIn(v, 1, 2 ** 20) ? true : isInt(v) && v >= 1 ? M : false), () => [0, -1, 1.5, 2 ** 31, 2 ** 53], 'any'),
        sslot(['opts', 'r'], (v, a) => validSchedule(v, a.opts.layers), () => [1.5, { r: 2 }, { r: 2, inflection: NaN }, [1.5], Array(layers + 1).fill(1), 'r', null], 'any'),
      ],
      opts: { path: ['opts'], checked: true, known: { layers: INT, r: ANY, cls: BOOL, distill: BOOL, propAttn: BOOL, traceSource: BOOL, precision: ENUM } },
      extras: [(c, rr) => { c.a.opts = rr.pick([undefined, null, 5, 'opts', []]); return { name: 'bad-opts-object', cls: I }; }],
    };
  },

  'ToMe.step'(r, sync) {
    const B = r.int(1, 2), N = r.int(2, 30), C = r.int(1, 8), Cm = r.int(1, 8);
    const layers = r.int(1, 4);
    const tome = api.toMe({ layers, r: r.int(0, 6), cls: r.chance(0.7), traceSource: r.chance(0.4), propAttn: r.chance(0.8), precision: r.pick(['f32', 'bf16']) });
    // run some valid steps first, then the (possibly corrupted) one
    let x = ht(r, [B, N, C], 'f32');
    const pre = r.int(0, layers - 1);
    for (let l = 0; l < pre; l++) {
      const n = x instanceof api.Tensor ? x.shape[1] : x.shape[1];
      x = tome.stepSync(x, ht(r, [B, n, Cm], 'f32'));
    }
    const n = x.shape[1];
    const dt = floatDtype(r);
    if (dt !== 'f32' && !(x instanceof api.Tensor)) x = ht(r, [B, n, C], dt);
    const a = { x, metric: ht(r, [B, n, Cm], floatDtype(r)) };
    const op = r.chance(0.15) ? 'keyBias' : r.chance(0.05) ? 'reset' : sync ? 'stepSync' : 'step';
    // a block with r = 0 returns x untouched (ToMe's do_nothing): its inputs are barely read
    const lenient = !(tome.schedule[tome.layer] > 0) || Math.floor((n - (tome.cls ? 1 : 0) - (tome.distill ? 1 : 0)) / 2) <= 0;
    return {
      fn: 'ToMe.' + op, a,
      call: (a) => (op === 'keyBias' ? tome.keyBias() : op === 'reset' ? tome.reset() : tome[op](a.x, a.metric)),
      slots: op === 'keyBias' || op === 'reset' ? [] : [
        tslot(['x'], (rr, s) => ht(rr, s, 'f32'), { ranks: [3], dims: 'ccf', finite: FIN.maybe, lenient }),
        tslot(['metric'], (rr, s) => ht(rr, s, 'f32'), { ranks: [3], dims: 'ccf', finite: FIN.reject, lenient }),
      ],
      scalars: [],
      opts: null,
      extras: op === 'keyBias' || op === 'reset' ? [] : [
        (c) => { for (let l = pre; l < layers; l++) { try { const nn = c.a.x.shape[1]; c.a.x = tome.stepSync(c.a.x, ht(r, [B, nn, Cm], 'f32')); } catch (e) { return null; } } c.a.metric = ht(r, [B, c.a.x.shape[1], Cm], 'f32'); return { name: 'step-past-schedule', cls: I }; },
      ],
    };
  },

  parseR(r) {
    const layers = r.int(1, 16);
    const a = { n: layers, r: r.pick([r.int(-2, 8), { r: r.int(0, 8), inflection: r.pick([-1, 0, 0.5, 2]) }, Array.from({ length: r.int(0, layers) }, () => r.int(0, 4))]) };
    return {
      fn: 'parseR', a,
      call: (a) => api.parseR(a.n, a.r),
      slots: [],
      scalars: [
        sslot(['n'], (v) => (intIn(v, 1, 2 ** 24) ? true : isInt(v) && v >= 1 ? M : false), () => [0, -1, 1.5, 2 ** 31, 2 ** 53, NaN, '3'], 'any'),
        sslot(['r'], (v, a) => validSchedule(v, a.n), () => [1.5, { r: 2 }, { r: 2, inflection: Infinity }, [1.5], 'r', null, undefined], 'any'),
      ],
      opts: null,
    };
  },

  tomesd(r, sync) {
    const B = r.int(1, 2), w = r.int(1, 6), h = r.int(1, 6), C = r.int(1, 8);
    const dt = floatDtype(r);
    const sx = r.int(1, w), sy = r.int(1, h);
    const a = { x: ht(r, [B, w * h, C], dt), opts: { w, h } };
    if (sx * sy >= 2 || r.chance(0.3)) { a.opts.sx = sx; a.opts.sy = sy; }
    if (r.chance(0.5)) a.opts.ratio = r.pick([0, 0.5, r.f() * 0.99]);
    if (r.chance(0.3)) a.opts.useRand = r.chance(0.5);
    if (r.chance(0.3)) a.opts.seed = r.int(0, 100);
    if (r.chance(0.2)) a.opts.precision = r.pick(['f32', 'bf16']);
    const fn = twin('tomesd', sync);
    const win = (a) => { const o = a.opts; const Sx = o.sx ?? 2; const Sy = o.sy ?? 2; return { Sx, Sy }; };
    // (A corruption may have replaced opts by null: the call then throws for opts, whatever x holds.)
    const tomesdRatio = (a) => (a.opts && a.opts.ratio !== undefined ? a.opts.ratio : 0.5);
    return {
      fn, a,
      call: (a) => api[fn](a.x, a.opts),
      post: (res) => res && disposePlan(res.plan),
      slots: [tslot(['x'], (rr, s) => ht(rr, s, dt), { ranks: [3], dims: 'fcf', finite: (k, a) => (Math.trunc(w * h * tomesdRatio(a)) === 0 ? M : I) })],
      scalars: [
        sslot(['opts', 'w'], (v, a) => intIn(v, 1, w * h) && v * a.opts.h === w * h, () => [0, w + 1, w * h + 1]),
        sslot(['opts', 'h'], (v, a) => intIn(v, 1, w * h) && v * a.opts.w === w * h, () => [0, h + 1]),
        sslot(['opts', 'sx'], (v, a) => { const { Sx, Sy } = win(a); return (v == null || isInt(v)) && intIn(Sx, 1, a.opts.w) && intIn(Sy, 1, a.opts.h) && Sx * Sy >= 2 ? true : Math.trunc(w * h * tomesdRatio(a)) <= 0 ? M : false; }, () => [0, w + 1], 'any'),
        sslot(['opts', 'sy'], (v, a) => { const { Sx, Sy } = win(a); return (v == null || isInt(v)) && intIn(Sx, 1, a.opts.w) && intIn(Sy, 1, a.opts.h) && Sx * Sy >= 2 ? true : Math.trunc(w * h * tomesdRatio(a)) <= 0 ? M : false; }, () => [0, h + 1], 'any'),
        sslot(['opts', 'ratio'], (v) => v === undefined || (typeof v === 'number' && v >= 0 && v < 1), () => [1, -0.1, NaN], 'real'),
        sslot(['opts', 'seed'], (v) => (v === undefined || intIn(v, 0, 2 ** 32 - 1) ? true : M), () => [-1, 2 ** 32, 1.5], 'any'),
      ],
      opts: { path: ['opts'], checked: true, known: { w: INT, h: INT, ratio: NUM, sx: INT, sy: INT, useRand: BOOL, seed: ANY, precision: ENUM } },
    };
  },

  visionZip(r, sync) {
    const preset = r.chance(0.1);
    const B = preset ? 1 : r.int(1, 2), N = preset ? r.int(64, 70) : r.int(2, 30), C = r.int(1, 8), Cm = r.int(1, 6);
    const s = attnSource(r, ['src'], B, N, { nCoupled: true, bCoupled: true });
    const dt = floatDtype(r);
    const a = { src: s.src, hidden: ht(r, [B, N, C], dt), metric: ht(r, [B, N, Cm], floatDtype(r)), opts: {} };
    if (preset) a.opts.preset = 64;
    else { const d = r.int(1, N - 1); a.opts.dominant = d; a.opts.contextual = r.int(1, N - d); }
    const fn = twin('visionZip', sync);
    const counts = (a) => { const o = a.opts; if (o.preset !== undefined) return o.dominant === undefined && o.contextual === undefined && (o.preset === 64 || o.preset === '64') && N >= 64 ? { d: 54, c: 10 } : null; return { d: o.dominant, c: o.contextual }; };
    return {
      fn, a,
      call: (a) => api[fn](a.src, a.hidden, a.metric, a.opts),
      slots: s.slots.concat([
        tslot(['hidden'], (rr, ss) => ht(rr, ss, dt), { ranks: [3], dims: 'ccf', finite: FIN.maybe }),
        tslot(['metric'], (rr, ss) => ht(rr, ss, 'f32'), { ranks: [3], dims: 'ccf', finite: FIN.reject }),
      ]),
      scalars: [
        sslot(['opts', 'dominant'], (v, a) => { const k = counts(a); if (!k) return false; return intIn(k.d, 1, N) && intIn(k.c, 1, Math.max(1, N - k.d)) && k.d + k.c <= N && N - k.d >= 1; }, () => [0, N, N + 1], 'any'),
        sslot(['opts', 'contextual'], (v, a) => { const k = counts(a); if (!k) return false; return intIn(k.d, 1, N) && intIn(k.c, 1, Math.max(1, N - k.d)) && k.d + k.c <= N && N - k.d >= 1; }, () => [0, N, N + 1], 'any'),
        sslot(['opts', 'preset'], (v, a) => { const k = counts(a); if (!k) return false; return intIn(k.d, 1, N) && intIn(k.c, 1, Math.max(1, N - k.d)) && k.d + k.c <= N; }, () => [192, 128, 100, '64'], 'any'),
      ],
      opts: { path: ['opts'], checked: true, known: { dominant: INT, contextual: INT, preset: ANY } },
      extras: [srcExtra(['src'])],
    };
  },

  visionDrop(r, sync) {
    const B = r.int(1, 2), L = r.int(3, 30), H = r.int(1, 3), D = r.int(1, 8), C = r.int(1, 8), Cm = r.int(1, 6);
    const start = r.int(0, L - 2), n = r.int(2, L - start);
    const layout = r.pick([undefined, 'bhnd', 'bnhd']);
    const shp = layout === 'bnhd' ? [B, L, H, D] : [B, H, L, D];
    const dt = floatDtype(r);
    const d = r.int(1, n - 1);
    const a = { q: ht(r, shp, dt), k: ht(r, shp, dt), hidden: ht(r, [B, n, C], floatDtype(r)), metric: ht(r, [B, n, Cm], floatDtype(r)), opts: { imageStart: start, imageCount: n, dominant: d, contextual: r.int(1, n - d) } };
    if (layout) a.opts.layout = layout;
    if (r.chance(0.2)) a.opts.scale = r.f();
    const fn = twin('visionDrop', sync);
    const qd = layout === 'bnhd' ? 'cfcc' : 'ccfc';
    const ok = (a) => { const o = a.opts; return intIn(o.imageCount, 1, 2 ** 31 - 1) && o.imageCount === n && intIn(o.imageStart, 0, 2 ** 31 - 1) && o.imageStart + n <= L && intIn(o.dominant, 1, n) && intIn(o.contextual, 1, Math.max(1, n - o.dominant)) && o.dominant + o.contextual <= n; };
    return {
      fn, a,
      call: (a) => api[fn](a.q, a.k, a.hidden, a.metric, a.opts),
      slots: [
        tslot(['q'], (rr, s) => ht(rr, s, dt), { ranks: [4], dims: qd, finite: sameQK, dtypeCoupled: true }),
        tslot(['k'], (rr, s) => ht(rr, s, dt), { ranks: [4], dims: qd, finite: sameQK, dtypeCoupled: true }),
        tslot(['hidden'], (rr, s) => ht(rr, s, 'f32'), { ranks: [3], dims: 'ccf', finite: FIN.maybe }),
        tslot(['metric'], (rr, s) => ht(rr, s, 'f32'), { ranks: [3], dims: 'ccf', finite: FIN.reject }),
      ],
      scalars: ['imageStart', 'imageCount', 'dominant', 'contextual'].map((k) => sslot(['opts', k], (v, a) => ok(a), () => [0, -1, L, n + 1, 2 ** 31])),
      opts: { path: ['opts'], checked: true, known: { imageStart: INT, imageCount: INT, dominant: INT, contextual: INT, layout: ENUM, scale: NUM } },
    };
  },

  divPrune(r, sync) {
    const flat = r.chance(0.2);
    const B = flat ? 1 : r.int(1, 2), N = r.int(1, 30), C = r.int(1, 10);
    const dt = floatDtype(r);
    const a = { x: ht(r, flat ? [N, C] : [B, N, C], dt), opts: r.chance(0.3) ? undefined : {} };
    const which = a.opts ? r.pick(['ratio', 'keep', 'reduction', 'none']) : 'none';
    if (which === 'ratio') a.opts.ratio = r.pick([1, 0.5, 1 / N + 0.01]);
    else if (which === 'keep') a.opts.keep = r.int(1, N);
    else if (which === 'reduction') a.opts.reduction = r.pick([0, 0.5 * r.f()]);
    const fn = twin('divPrune', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.x, a.opts),
      slots: [tslot(['x'], (rr, s) => ht(rr, s, dt), { ranks: [2, 3], dims: 'fff', finite: FIN.reject })],
      scalars: [diversityKeep(N, 0.098)],
      opts: { path: ['opts'], checked: true, known: { ratio: NUM, keep: INT, reduction: NUM, exclude: ANY } },
    };
  },

  toDRE(r, sync) {
    const B = r.int(1, 2), C = r.int(1, 10);
    const segments = r.chance(0.4) ? r.int(1, 3) : undefined;
    const S = r.int(1, 12);
    const N = (segments || 1) * S;
    const dt = floatDtype(r);
    const a = { x: ht(r, [B, N, C], dt), opts: {} };
    if (segments) a.opts.segments = segments;
    const which = r.pick(['ratio', 'keep', 'reduction', 'none']);
    if (which === 'ratio') a.opts.ratio = 1;
    else if (which === 'keep') a.opts.keep = r.int(1, S);
    else if (which === 'reduction') a.opts.reduction = r.pick([0, 0.5 * r.f()]);
    if (r.chance(0.3)) a.opts.metric = r.pick(['cosine', 'l2']);
    if (r.chance(0.3)) a.opts.seed = r.pick(['isolated', 'maxnorm', r.int(0, S - 1)]);
    const fn = twin('toDRE', sync);
    const dk = diversityKeep(S, 0.1);
    return {
      fn, a,
      call: (a) => api[fn](a.x, a.opts),
      slots: [tslot(['x'], (rr, s) => ht(rr, s, dt), { ranks: [2, 3], dims: 'fff', finite: FIN.reject })],
      scalars: [
        Object.assign({}, dk, { valid: (v, a) => (a.opts && a.opts.segments !== segments ? M : dk.valid(v, a)) }),
        sslot(['opts', 'segments'], (v) => (v === segments ? true : v === undefined ? M : intIn(v, 1, N) ? M : false), () => [0, N + 1, 1.5]),
        sslot(['opts', 'seed'], (v, a) => v === undefined || v === 'isolated' || v === 'maxnorm' || intIn(v, 0, S - 1) || (v === null || (intIn(v, 0, N - 1) && a.opts && a.opts.segments !== segments) ? M : false), () => [S, -1, 'first'], 'any'),
      ],
      opts: { path: ['opts'], checked: true, known: { ratio: NUM, keep: INT, reduction: NUM, metric: ENUM, seed: ANY, exclude: ANY, segments: INT } },
    };
  },

  mmTok(r, sync) {
    const B = r.int(1, 2), m = r.int(1, 6), n = r.int(1, 20), D = r.int(1, 10);
    const dt = floatDtype(r);
    const a = { inputs: { text: ht(r, [B, m, D], dt), vision: ht(r, [B, n, D], dt) }, opts: r.chance(0.3) ? undefined : {} };
    if (r.chance(0.3)) a.inputs.visionAux = ht(r, [B, n, r.int(1, 6)], floatDtype(r));
    if (a.opts) {
      if (r.chance(0.7)) a.opts.keep = r.int(1, n + 3);
      if (r.chance(0.3)) a.opts.tauTV = 0.01 + r.f();
      if (r.chance(0.3)) a.opts.alpha = r.f();
      if (r.chance(0.2) && n > 1) { const e = new Uint8Array(B * n); e[r.int(0, n - 1)] = 1; a.opts.exclude = { data: e, shape: [B, n] }; }
    }
    const fn = twin('mmTok', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.inputs, a.opts),
      slots: [
        // keep >= n returns every token without computing the coverage: NaN cannot matter there
        tslot(['inputs', 'text'], (rr, s) => ht(rr, s, dt), { ranks: B === 1 ? [2, 3] : [3], dims: 'cfc', finite: (k, a) => (a.opts && a.opts.keep === undefined && n <= 64) || (a.opts && a.opts.keep >= n && !a.opts.exclude) || (!a.opts && n <= 64) ? M : I }),
        tslot(['inputs', 'vision'], (rr, s) => ht(rr, s, dt), { ranks: B === 1 ? [2, 3] : [3], dims: 'cfc', finite: FIN.maybe }),
      ],
      scalars: [
        sslot(['opts', 'keep'], (v) => v === undefined || (isInt(v) && v >= 1), () => [0, -1, 1.5, 2 ** 31]),
        sslot(['opts', 'tauTV'], (v) => v === undefined || (typeof v === 'number' && Number.isFinite(v) && v > 0), () => [0, -1, Infinity, NaN], 'real'),
      ],
      opts: { path: ['opts'], checked: true, known: { keep: INT, tauTV: NUM, tauVV: NUM, alpha: NUM, exclude: ANY } },
    };
  },

  centerClip(r, sync) {
    const B = r.int(1, 2), fd = r.int(1, 3), S = r.int(1, 2), P = r.int(1, 6), C = r.int(1, 8);
    const T = fd * S;
    const dt = floatDtype(r);
    const a = { x: ht(r, [B, T, 1 + P, C], dt), opts: { frameDuration: fd, clusters: r.int(1, fd * P) } };
    if (r.chance(0.3)) a.opts.metric = r.pick(['l2', 'cosine']);
    if (r.chance(0.3)) a.opts.maxIters = r.int(0, 10);
    if (r.chance(0.2)) a.opts.tol = r.pick([0, 1e-3]);
    const fn = twin('centerClip', sync);
    return {
      fn, a,
      call: (a) => api[fn](a.x, a.opts),
      slots: [tslot(['x'], (rr, s) => ht(rr, s, dt), { ranks: [4], dims: 'ffff', finite: FIN.maybe })],
      scalars: [
        sslot(['opts', 'frameDuration'], (v, a) => { const f = v === undefined ? 2 : v; const k = a.opts.clusters === undefined ? 49 : a.opts.clusters; return intIn(f, 1, T) && T % f === 0 && intIn(k, 1, f * P); }, () => [0, T + 1, -1]),
        sslot(['opts', 'clusters'], (v, a) => { const f = a.opts.frameDuration === undefined ? 2 : a.opts.frameDuration; const k = v === undefined ? 49 : v; return intIn(f, 1, T) && T % f === 0 && intIn(k, 1, f * P); }, () => [0, fd * P + 1]),
        sslot(['opts', 'maxIters'], (v) => v === undefined || intIn(v, 0, 1e6), () => [-1]),
      ],
      opts: { path: ['opts'], checked: true, known: { frameDuration: INT, clusters: INT, metric: ENUM, maxIters: INT, tol: NUM } },
    };
  },

  StreamPruner(r, sync) {
    const F = r.int(1, 3), T = r.int(1, 12), C = r.int(1, 10);
    const k = r.int(1, T);
    const memory = r.pick([undefined, 'authors', 'aligned']);
    const opts = { tokensPerFrame: k };
    if (memory) opts.memory = memory;
    const op = r.pick(['push', 'new', 'stc']);
    const dt = floatDtype(r);
    if (op === 'new') {
      return {
        fn: 'new StreamPruner', a: { opts },
        call: (a) => new api.StreamPruner(a.opts),
        slots: [],
        scalars: [sslot(['opts', 'tokensPerFrame'], (v) => v === undefined || (isInt(v) && v >= 1), () => [0, -1, 1.5, 2 ** 53])],
        opts: { path: ['opts'], checked: true, known: { tokensPerFrame: INT, memory: ENUM } },
      };
    }
    if (op === 'stc') {
      const chunks = Array.from({ length: r.int(0, 3) }, () => ht(r, [r.int(1, 3), T, C], dt));
      const fn = twin('stc', sync);
      return {
        fn, a: { chunks, opts },
        call: (a) => api[fn](a.chunks, a.opts),
        slots: chunks.length ? [tslot(['chunks', 0], (rr, s) => ht(rr, s, dt), { ranks: [3], dims: chunks.length > 1 ? 'ffc' : 'fff', finite: FIN.nanOnly })] : [],
        scalars: [sslot(['opts', 'tokensPerFrame'], (v) => v === undefined ? chunks.length === 0 || T >= 60 : chunks.length === 0 ? isInt(v) && v >= 1 : intIn(v, 1, T), () => [0, T + 1])],
        opts: { path: ['opts'], checked: true, known: { tokensPerFrame: INT, memory: ENUM } },
        extras: [(c, rr) => { c.a.chunks = rr.pick([null, 'chunks', 5, { length: 1, 0: c.a.chunks[0] }]); return { name: 'chunks-not-array', cls: I }; }],
      };
    }
    const pruner = new api.StreamPruner(opts);
    for (let i = r.int(0, 2); i > 0; i--) pruner.pushSync(ht(r, [r.int(1, 3), T, C], 'f32'));
    const a = { chunk: ht(r, [F, T, C], dt) };
    const m = sync ? 'pushSync' : 'push';
    return {
      fn: 'StreamPruner.' + m, a,
      call: (a) => pruner[m](a.chunk),
      slots: [tslot(['chunk'], (rr, s) => ht(rr, s, dt), { ranks: [3], dims: pruner.chunks > 0 ? 'ffc' : 'fff', finite: FIN.nanOnly })],
      scalars: [],
      opts: null,
      extras: [(c, rr) => { const T2 = rr.int(k, 14); const C2 = pruner.chunks > 0 ? C + rr.int(1, 3) : C; c.a.chunk = ht(rr, [1, T2, C2], 'f32'); return { name: 'chunk-channel-change', cls: pruner.chunks > 0 ? I : V }; }],
    };
  },

  // ------------------------------------------------------------ tensors, misc

  'Tensor.from'(r) {
    const shape = Array.from({ length: r.int(0, 4) }, () => r.int(0, 6));
    const dt = r.pick(ALL_DTYPES);
    const a = { src: ht(r, shape, dt), opts: r.chance(0.6) ? undefined : {} };
    if (a.opts && r.chance(0.5)) a.opts.name = 'x';
    if (a.opts && r.chance(0.3)) a.opts.device = 'cpu';
    const useToTensor = r.chance(0.2);
    return {
      fn: useToTensor ? 'toTensor' : 'Tensor.from', a,
      call: (a) => { const t = useToTensor ? api.toTensor(a.src, 'src') : api.Tensor.from(a.src, a.opts); t.toArray(); t.contiguous(); String(t); return t; },
      slots: [tslot(['src'], (rr, s) => ht(rr, s, dt), { ranks: [0, 1, 2, 3, 4, 5, 6], dtypes: ALL_DTYPES, dims: 'ffffff', finite: FIN.allow, empty: V })],
      scalars: useToTensor ? [] : [sslot(['opts', 'device'], (v) => v === undefined || v === 'cpu', () => ['cuda', 'cuda:0', 'cuda:1', 'gpu', 'cuda:x', 'CPU', 0], 'any')],
      opts: useToTensor ? null : { path: ['opts'], checked: true, known: { device: ANY, name: ANY } },
    };
  },

  'Tensor.empty'(r) {
    const shape = Array.from({ length: r.int(0, 4) }, () => r.int(0, 8));
    const a = { shape, dtype: r.pick([undefined, ...ALL_DTYPES]), device: r.pick([undefined, 'cpu']), opts: r.chance(0.7) ? undefined : { uninitialized: r.chance(0.5) } };
    return {
      fn: 'Tensor.empty', a,
      call: (a) => api.Tensor.empty(a.shape, a.dtype, a.device, a.opts),
      slots: [],
      scalars: [
        sslot(['shape'], (v) => Array.isArray(v) && v.length <= 6 && v.every((d) => Number.isSafeInteger(d) && d >= 0) ? (numel(v) * 8 > 2 ** 31 ? M : true) : false, () => [[-1], [1.5], [NaN], [2 ** 53], [2 ** 31], [2 ** 40], [2 ** 26, 2 ** 26], [1, 1, 1, 1, 1, 1, 1], 'abc', null, 5, [2 ** 31, 0], ['2']], 'any'),
        sslot(['dtype'], (v) => v === undefined || ALL_DTYPES.includes(v), () => ['f64', 'F32', null, 3], 'any'),
        sslot(['device'], (v) => v === undefined || v === 'cpu', () => ['cuda', 'cuda:0', 'cuda:7', 'gpu', null, 'cuda:-1'], 'any'),
      ],
      opts: { path: ['opts'], checked: true, known: { stream: BIG, uninitialized: BOOL } },
    };
  },

  'Tensor.view'(r) {
    const shape = Array.from({ length: r.int(1, 3) }, () => r.int(1, 6));
    const dt = r.pick(ALL_DTYPES);
    const t = api.Tensor.from(ht(r, shape, dt));
    const n = numel(shape);
    const a = { shape: r.chance(0.5) ? [n] : r.chance(0.5) ? [1, n] : shape.slice().reverse(), strides: undefined, offset: undefined };
    if (numel(a.shape) !== n) a.shape = [n];
    if (r.chance(0.3)) { a.shape = [Math.max(1, n - 1)]; a.strides = [1]; a.offset = r.int(0, n - a.shape[0]); }
    return {
      fn: 'Tensor#view', a,
      call: (a) => { const v = a.offset === undefined ? (a.strides === undefined ? t.view(a.shape) : t.view(a.shape, a.strides)) : t.view(a.shape, a.strides, a.offset); v.toArray(); return v; },
      slots: [],
      scalars: [
        sslot(['shape'], (v, a) => Array.isArray(v) && v.length <= 6 && v.every((d) => Number.isSafeInteger(d) && d >= 0) && (a.strides === undefined ? numel(v) === n : true), () => [[n + 1], [-1], [1.5], [2 ** 31], [2 ** 53], 'x', [n, 0]], 'any'),
        sslot(['strides'], (v, a) => v === undefined || (Array.isArray(v) && Array.isArray(a.shape) && v.length === a.shape.length && v.every((s) => Number.isSafeInteger(s) && s >= 0) && viewFits(a.shape, v, a.offset === undefined ? 0 : a.offset, n)), () => [[2], [n], [-1], [1.5], [1, 1], [2 ** 40]], 'any'),
        sslot(['offset'], (v, a) => v === undefined || (Number.isSafeInteger(v) && v >= 0 && Array.isArray(a.shape) && viewFits(a.shape, a.strides || contiguous(a.shape), v, n)), () => [-1, -5, 1.5, NaN, n, 2 ** 31, Infinity, '1'], 'any'),
      ],
      opts: null,
      extras: [(c) => { t.dispose(); return { name: 'view-of-disposed', cls: I }; }],
    };
  },

  'Tensor#methods'(r) {
    const shape = Array.from({ length: r.int(0, 3) }, () => r.int(1, 5));
    const dt = r.pick(ALL_DTYPES);
    const t = api.Tensor.from(ht(r, shape, dt));
    const m = r.pick(['toArray', 'toHost', 'contiguous', 'to', 'data', 'dispose', 'toString', 'ptr', 'numel']);
    const a = { device: 'cpu' };
    return {
      fn: 'Tensor#' + m, a,
      call: (a) => (m === 'to' ? t.to(a.device) : m === 'data' || m === 'ptr' || m === 'numel' ? t[m] : t[m]()),
      slots: [],
      scalars: m === 'to' ? [sslot(['device'], (v) => v === 'cpu' || v === undefined, () => ['cuda', 'cuda:0', 'gpu', 5, null], 'any')] : [],
      opts: null,
      extras: [(c) => { t.dispose(); return { name: 'disposed', cls: m === 'dispose' || m === 'toString' || m === 'numel' ? V : I }; }],
      fixed: m === 'ptr' ? I : undefined,
    };
  },

  'Tensor.fromDevicePointer'(r) {
    const a = { spec: { ptr: BigInt(r.int(1, 1 << 30)) * 256n, shape: [r.int(1, 4), r.int(1, 4)], dtype: r.pick(ALL_DTYPES) } };
    if (r.chance(0.3)) a.spec.device = r.pick(['cuda', 'cuda:0']);
    if (r.chance(0.2)) a.spec.stream = 0n;
    return {
      fn: 'Tensor.fromDevicePointer', a,
      call: (a) => api.Tensor.fromDevicePointer(a.spec),
      slots: [], scalars: [], opts: null,
      fixed: I, // no CUDA device on this machine: ERR_DEVICE
      extras: [(c, rr) => { c.a.spec = rr.pick([null, 5, { ptr: 0n, shape: [1], dtype: 'f32' }, { ptr: 5, shape: [1], dtype: 'f32' }, { ptr: 1n, shape: [-1], dtype: 'f32' }, { ptr: 1n, shape: [1], dtype: 'f64' }, { ptr: 1n, shape: [1], dtype: 'f32', device: 'cpu' }]); return { name: 'bad-spec', cls: I }; }],
    };
  },

  'Tensor()'(r) {
    return { fn: 'new Tensor', a: { tok: Symbol('x') }, call: (a) => new api.Tensor(a.tok, {}), slots: [], scalars: [], opts: null, fixed: I };
  },

  halfBits(r) {
    const which = r.pick(['toHalfBits', 'fromHalfBits', 'f32ToF16Bits', 'f16BitsToF32', 'f32ToBf16Bits', 'bf16BitsToF32', 'pyRound', 'stcScoringChannels', 'contiguousStrides']);
    if (which === 'toHalfBits' || which === 'fromHalfBits') {
      const n = r.int(0, 20);
      const vals = which === 'toHalfBits' ? Array.from({ length: n }, () => r.pick([r.f() * 1e5 - 5e4, NaN, Infinity, -0, 65520, 1e-8])) : Array.from({ length: n }, () => r.int(0, 65535));
      const a = { values: r.chance(0.5) ? vals : which === 'toHalfBits' ? Float32Array.from(vals) : Uint16Array.from(vals), dtype: r.pick(['f16', 'bf16']) };
      return {
        fn: which, a, call: (a) => api[which](a.values, a.dtype), slots: [], opts: null,
        scalars: [
          sslot(['values'], (v) => (v !== null && typeof v === 'object' && typeof v.length === 'number' ? true : typeof v === 'string' ? M : false), () => [null, undefined, 5, {}, 'abc'], 'any'),
          sslot(['dtype'], (v) => v === 'f16' || v === 'bf16', () => ['f32', 'F16', undefined, null, 16], 'any'),
        ],
      };
    }
    if (which === 'contiguousStrides') {
      return { fn: which, a: { s: [r.int(1, 4), r.int(1, 4)] }, call: (a) => api.contiguousStrides(a.s), slots: [], opts: null, scalars: [sslot(['s'], (v) => (Array.isArray(v) ? true : M), () => [null, 'ab', 5], 'any')] };
    }
    const a = { x: r.pick([r.f() * 100, NaN, Infinity, 0x7c00, 65535, -0.5, 2.5]) };
    return { fn: which, a, call: (a) => api[which](a.x), slots: [], opts: null, scalars: [sslot(['x'], (v) => (typeof v === 'number' ? true : M), () => ['3', null, undefined, 3n], 'any')] };
  },

  runtime(r) {
    const which = r.pick(['setThreads', 'setThreads', 'getThreads', 'info', 'cudaAvailable', 'cudaUnavailableReason', 'deviceMemory']);
    if (which === 'setThreads') {
      const a = { n: r.pick([1, 2, 'default']) };
      return {
        fn: 'setThreads', a, call: (a) => api.setThreads(a.n), slots: [], opts: null,
        scalars: [sslot(['n'], (v) => v === 'default' || intIn(v, 1, 1024), () => [0, -1, 1.5, NaN, 1025, 2 ** 31, '2', null, undefined, 'max'], 'any')],
      };
    }
    return { fn: which, a: {}, call: () => api[which](), slots: [], scalars: [], opts: null };
  },

  visionDropStages(r) {
    const s = r.int(0, 3);
    const a = { layers: Array.from({ length: s }, () => r.int(1, 30)), tokens: Array.from({ length: s }, () => [r.int(1, 20), r.int(1, 5)]), enc: [r.int(20, 100), r.int(5, 20)] };
    return {
      fn: 'visionDropStages', a,
      call: (a) => api.visionDropStages(a.layers, a.tokens, a.enc),
      slots: [], opts: null,
      scalars: [
        sslot(['enc'], (v) => Array.isArray(v) && v.length === 2 && v.every(isInt), () => [undefined, null, [1], 5, 'ab'], 'any'),
        sslot(['tokens'], (v, a) => Array.isArray(v) && Array.isArray(a.layers) && v.length === a.layers.length && v.every((p) => Array.isArray(p) && p.length === 2 && p.every(isInt)), () => [[[1]], [null], [5], ['ab']], 'any'),
      ],
    };
  },
};

// Shared scalar rules ----------------------------------------------------------

function validQueries(v, nq) {
  if (v === undefined || v === 'all') return true;
  const row = (x) => isInt(x) && x >= -nq && x < nq;
  if (typeof v === 'number') return row(v);
  if (Array.isArray(v)) return v.length > 0 && v.every(row);
  if (v instanceof Int32Array) return v.length > 0 && Array.from(v).every(row);
  if (v && typeof v === 'object' && 'start' in v && 'end' in v) {
    const b = (x) => isInt(x) && x >= -nq && x <= nq;
    if (!b(v.start) || !b(v.end)) return false;
    const s = v.start < 0 ? v.start + nq : v.start, e = v.end < 0 ? v.end + nq : v.end;
    return s < e;
  }
  return false;
}

function validKeys(v, nk) {
  if (v === undefined) return true;
  if (typeof v !== 'object' || v === null) return false;
  const b = (x) => x === undefined || (isInt(x) && x >= -nk && x <= nk);
  if (!b(v.start) || !b(v.end)) return false;
  const s = v.start === undefined ? 0 : v.start < 0 ? v.start + nk : v.start;
  const e = v.end === undefined ? nk : v.end < 0 ? v.end + nk : v.end;
  return s < e;
}

function validSchedule(v, layers) {
  if (!intIn(layers, 1, 2 ** 40)) return M;
  if (Array.isArray(v)) return v.every(isInt) && v.length <= layers;
  if (isInt(v)) return true;
  if (v && typeof v === 'object' && isInt(v.r) && typeof v.inflection === 'number' && Number.isFinite(v.inflection)) return true;
  return false;
}

function viewFits(shape, strides, offset, n) {
  if (!Array.isArray(shape) || !Array.isArray(strides) || shape.length !== strides.length) return false;
  let last = 0;
  for (let i = 0; i < shape.length; i++) {
    if (shape[i] === 0) return true;
    last += (shape[i] - 1) * strides[i];
  }
  return offset + last < n;
}

/** keep (1..n) xor reduction ([0, 1), round(n(1−r)) >= 1); n may come from the args. */
function keepOrReduction(n, nOf) {
  return sslot(['opts', 'keep'], (v, a) => {
    const N = nOf ? nOf(a) : n;
    if (!intIn(N, 1, 1e9)) return M;
    const o = a.opts || {};
    if ((o.keep === undefined) === (o.reduction === undefined)) return false;
    if (o.keep !== undefined) return intIn(o.keep, 1, N);
    const rd = o.reduction;
    if (typeof rd !== 'number' || !(rd >= 0 && rd < 1)) return false;
    const k = pyRound(N * (1 - rd));
    return k >= 1 && k <= N;
  }, (a) => [0, (nOf ? 0 : n) + 1, -1, 2 ** 31]);
}

function diversityKeep(N, defRatio) {
  return sslot(['opts', 'keep'], (v, a) => {
    const o = a.opts || {};
    const given = ['ratio', 'keep', 'reduction'].filter((k) => o[k] !== undefined);
    if (given.length > 1) return false;
    if (o.keep !== undefined) return intIn(o.keep, 1, N);
    if (o.reduction !== undefined) { const rd = o.reduction; if (typeof rd !== 'number' || !(rd >= 0 && rd < 1)) return false; const k = pyRound(N * (1 - rd)); return k >= 1 && k <= N; }
    const rt = o.ratio === undefined ? defRatio : o.ratio;
    if (typeof rt !== 'number' || !(rt > 0 && rt <= 1)) return false;
    return pyRound(rt * N) >= 1;
  }, () => [0, N + 1, -1]);
}

function pyRound(x) {
  const f = Math.floor(x);
  const d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

function cloneSource(r, src) {
  const c = {};
  for (const k of Object.keys(src)) {
    const v = src[k];
    if (v && typeof v === 'object' && v.data) c[k] = { data: randomData(r, v.dtype || 'f32', v.data.length), shape: v.shape.slice(), ...(v.dtype ? { dtype: v.dtype } : {}) };
    else c[k] = v;
  }
  return c;
}

function srcExtra(p) {
  return (c, rr) => {
    setPath(c.a, p, rr.pick([null, 5, 'src', {}, { q: getPath(c.a, p) && getPath(c.a, p).q }, { k: 1, q: 2 }, { probs: null }]));
    return { name: 'bad-attention-source', cls: I };
  };
}

function planExtras() {
  return [
    (c) => { c.a.plan.dispose(); return { name: 'plan-disposed', cls: I }; },
    (c, rr) => { c.a.plan = rr.pick([null, {}, 'plan', { assign: c.a.plan.assign, n: c.a.plan.n, batch: c.a.plan.batch, nOut: c.a.plan.nOut }]); return { name: 'not-a-plan', cls: I }; },
    (c) => { c.a.plan.assign.dispose(); return { name: 'plan.assign-disposed', cls: I }; },
  ];
}

/** Shapes of quantize's data and scales (mirrors the README). */
function quantLayout(shape, bits, g) {
  const C = shape[shape.length - 1];
  const lead = shape.slice(0, -1);
  const data = bits === 8 ? shape.slice() : [...lead, Math.ceil(C / 2)];
  if (g === 'tensor') return { data, scales: [1] };
  if (g === 'token') return { data, scales: [...lead, 1] };
  if (g === 'channel') return { data, scales: [C] };
  if (g.group !== undefined) return { data, scales: [...lead, Math.ceil(C / g.group)] };
  return { data, scales: [shape[0], shape[1], Math.ceil(shape[2] / g.rows), 1] };
}

// ---------------------------------------------------------------- corruptions

const BAD_SCALARS = [-1, 0, 1.5, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 32, 2 ** 53, -(2 ** 31), '2', 2n, true, {}, [], null];

function slotHost(c, slot) {
  const t = getPath(c.a, slot.path);
  if (!t || typeof t !== 'object' || t instanceof api.Tensor || !ArrayBuffer.isView(t.data) || !Array.isArray(t.shape)) return null;
  return t;
}

/** Copies a host tensor's data into a new TypedArray of the same type on buffer `buf`. */
function onBuffer(data, buf, offsetElems = 0) {
  const Ctor = data.constructor;
  const view = new Ctor(buf, offsetElems * data.BYTES_PER_ELEMENT, data.length);
  view.set(data);
  return view;
}

const tensorCorruptions = {
  rank(c, slot, t, r) {
    const k = r.int(0, 3);
    let shape;
    if (k === 0) shape = [1, ...t.shape];
    else if (k === 1 && t.shape.length >= 2) shape = [t.shape[0] * t.shape[1], ...t.shape.slice(2)];
    else if (k === 2) shape = [];
    else shape = [1, 1, 1, 1, 1, 1, ...t.shape].slice(0, 7 + Math.max(0, t.shape.length - 1));
    if (k === 3) { shape = [1, 1, 1, 1, 1, 1, numel(t.shape)]; }
    if (k === 2 && t.data.length < 1) return null;
    if (k === 2) { t.shape = []; delete t.strides; return { name: 'rank0', cls: slot.ranks.includes(0) ? M : I, shape: true }; }
    t.shape = shape;
    delete t.strides;
    return { name: 'rank' + shape.length, cls: shape.length > 6 ? I : slot.ranks.includes(shape.length) || slot.ranks.includes(-1) ? M : I, shape: true };
  },
  zeroDim(c, slot, t, r) {
    if (t.shape.length === 0) return null;
    const d = r.int(0, t.shape.length - 1);
    t.shape = t.shape.slice();
    t.shape[d] = 0;
    return { name: `zeroDim[${d}]`, cls: slot.empty, shape: true };
  },
  hugeDim(c, slot, t, r) {
    if (t.shape.length === 0) return null;
    const d = r.int(0, t.shape.length - 1);
    const v = r.pick([2 ** 31, 2 ** 32 + 1, 2 ** 53 - 1, 2 ** 53, 1e300]);
    t.shape = t.shape.slice();
    t.shape[d] = v;
    return { name: `hugeDim[${d}]=${v}`, cls: t.shape.some((x) => x === 0) && Number.isSafeInteger(v) ? M : I, shape: true };
  },
  broadcastHuge(c, slot, t, r) {
    if (t.shape.length < 2 || t.strides) return null;
    const d = r.int(0, t.shape.length - 2);
    const st = contiguous(t.shape);
    st[d] = 0;
    t.shape = t.shape.slice();
    t.shape[d] = r.pick([2 ** 31, 2 ** 40]);
    t.strides = st;
    return { name: `broadcastHuge[${d}]=${t.shape[d]}`, cls: M, shape: true };
  },
  dtype(c, slot, t, r) {
    const k = r.int(0, 3);
    if (k === 0) { t.dtype = r.pick(['f64', 'float32', 'F32', '', 7, 'int8']); return { name: 'dtype-unknown', cls: I }; }
    if (k === 1) {
      const allowed = dtypesFor(t.data);
      const bad = ALL_DTYPES.filter((d) => !allowed.includes(d));
      t.dtype = r.pick(bad);
      return { name: 'dtype-mismatch-array', cls: I };
    }
    if (k === 2) {
      if (!(t.data instanceof Uint16Array)) return null;
      delete t.dtype;
      return { name: 'uint16-without-dtype', cls: I };
    }
    const old = dtypeOf(t);
    const nd = r.pick(ALL_DTYPES.filter((d) => d !== old));
    t.data = randomData(r, nd, t.data.length, 0, 3);
    t.dtype = nd;
    if (slot.index && nd !== 'i32') return { name: `retype-${nd}`, cls: I };
    const cls = slot.dtypes.includes(nd) ? (slot.dtypeCoupled ? I : M) : I;
    return { name: `retype-${nd}`, cls };
  },
  arrayType(c, slot, t, r) {
    const n = t.data.length;
    const k = r.int(0, 6);
    const mk = [
      () => new Float64Array(n), () => new Uint32Array(n), () => new Int16Array(n), () => new Uint8ClampedArray(n),
      () => new DataView(new ArrayBuffer(n * 4)), () => Array.from({ length: n }, () => 0.5), () => Buffer.alloc(n),
    ][k];
    t.data = mk();
    if (k === 6) { t.dtype = 'u8'; return { name: 'data-Buffer', cls: slot.dtypes.includes('u8') ? M : I }; }
    return { name: 'data-' + (t.data.constructor && t.data.constructor.name), cls: I };
  },
  short(c, slot, t, r) {
    const n = t.data.length;
    if (n === 0) return null;
    const keep = r.pick([n - 1, Math.floor(n / 2), 0]);
    t.data = t.data.subarray(0, keep);
    return { name: `short(${keep}/${n})`, cls: I };
  },
  detached(c, slot, t, r) {
    const buf = new ArrayBuffer(t.data.byteLength);
    t.data = onBuffer(t.data, buf);
    structuredClone(buf, { transfer: [buf] });
    return { name: 'detached', cls: t.data.length === 0 && numel(t.shape) > 0 ? I : M };
  },
  shrunk(c, slot, t, r) {
    const bytes = t.data.byteLength;
    const buf = new ArrayBuffer(bytes, { maxByteLength: bytes + 64 });
    const fixed = r.chance(0.5);
    t.data = fixed ? onBuffer(t.data, buf) : (() => { const v = new t.data.constructor(buf); v.set(t.data); return v; })();
    const to = r.pick([0, Math.max(0, bytes - t.data.BYTES_PER_ELEMENT)]);
    buf.resize(to - (to % t.data.BYTES_PER_ELEMENT || 0));
    return { name: `resizable-shrunk(${fixed ? 'fixed' : 'tracking'},${to})`, cls: numel(t.shape) > 0 ? I : M };
  },
  resizable(c, slot, t, r) {
    const bytes = t.data.byteLength;
    const buf = new ArrayBuffer(bytes, { maxByteLength: bytes * 2 + 8 });
    t.data = onBuffer(t.data, buf);
    return { name: 'resizable', cls: V };
  },
  shared(c, slot, t, r) {
    const buf = new SharedArrayBuffer(Math.max(t.data.byteLength, 1));
    t.data = onBuffer(t.data, buf);
    return { name: 'SharedArrayBuffer', cls: V };
  },
  badStrides(c, slot, t, r) {
    const rank = t.shape.length;
    const k = r.int(0, 4);
    if (k === 0) { t.strides = contiguous(t.shape).map((s, i) => (i === 0 ? s * 3 + 7 : s)); return { name: 'strides-out-of-bounds', cls: rank === 0 || t.shape[0] <= 1 || numel(t.shape) === 0 ? M : I }; }
    if (k === 1) { t.strides = contiguous(t.shape).concat([1]); return { name: 'strides-wrong-length', cls: I }; }
    if (k === 2) { if (rank === 0) return null; t.strides = contiguous(t.shape); t.strides[0] = r.pick([-1, 1.5, NaN, '1', 2 ** 53, Infinity]); return { name: `stride=${String(t.strides[0])}`, cls: I }; }
    if (k === 3) { t.strides = 'contiguous'; return { name: 'strides-not-array', cls: I }; }
    if (rank === 0) return null;
    t.strides = contiguous(t.shape).map(() => 2 ** 40);
    return { name: 'strides-2^40', cls: numel(t.shape) > 1 && t.shape.some((d) => d > 1) ? I : M };
  },
  strided(c, slot, t, r) {
    // a valid, non-contiguous view: pad every row (outer stride larger) or the last dim (inner stride 2)
    if (t.shape.length === 0 || numel(t.shape) === 0) return null;
    const inner = r.chance(0.4);
    const shape = t.shape;
    const st = contiguous(shape);
    const rank = shape.length;
    const newSt = inner ? st.map((s) => s * 2) : st.map((s, i) => (i === rank - 1 ? 1 : s * 2));
    if (!inner && rank === 1) return null;
    let last = 0;
    for (let i = 0; i < rank; i++) last += (shape[i] - 1) * newSt[i];
    const data = new t.data.constructor(last + 1);
    const idx = new Array(rank).fill(0);
    for (let i = 0; i < t.data.length; i++) {
      let off = 0;
      for (let d = 0; d < rank; d++) off += idx[d] * newSt[d];
      data[off] = t.data[i];
      for (let d = rank - 1; d >= 0; d--) { if (++idx[d] < shape[d]) break; idx[d] = 0; }
    }
    t.data = data;
    t.strides = newSt;
    return { name: inner ? 'strided-inner' : 'strided-outer', cls: M };
  },
  offset(c, slot, t, r) {
    const k = r.int(0, 1);
    if (k === 0) { t.offset = r.pick([-1, 1.5, NaN, '0', Infinity, 2 ** 31, 2 ** 53, t.data.length]); return { name: `offset=${String(t.offset)}`, cls: Number.isSafeInteger(t.offset) && t.offset >= 0 && numel(t.shape) === 0 ? M : I }; }
    const pad = r.int(1, 5);
    const data = new t.data.constructor(t.data.length + pad);
    data.set(t.data, pad);
    t.data = data;
    t.offset = pad;
    return { name: `offset-valid(${pad})`, cls: M };
  },
  nonFinite(c, slot, t, r) {
    const d = dtypeOf(t);
    if (!FLOATS.includes(d) || t.data.length === 0 || !(t.data instanceof Float32Array || t.data instanceof Uint16Array)) return null;
    const kind = r.pick(['nan', 'inf', '-inf']);
    const bits = { f16: { nan: 0x7e00, inf: 0x7c00, '-inf': 0xfc00 }, bf16: { nan: 0x7fc0, inf: 0x7f80, '-inf': 0xff80 } };
    const v = d === 'f32' ? { nan: NaN, inf: Infinity, '-inf': -Infinity }[kind] : bits[d][kind];
    // everywhere (every selection reads it: the rule applies as documented), or in one
    // element (a kernel may legitimately never read it: only a coded error is required)
    if (r.chance(0.5)) {
      t.data.fill(v);
      return { name: kind + '-everywhere', cls: null, finite: kind };
    }
    t.data[r.int(0, t.data.length - 1)] = v;
    return { name: kind + '-in-one-element', cls: null, finite: kind, one: true };
  },
  badIndex(c, slot, t, r) {
    if (!slot.index || !(t.data instanceof Int32Array) || t.data.length === 0) return null;
    t.data[r.int(0, t.data.length - 1)] = r.pick([-1, 2 ** 31 - 1, -(2 ** 31), 100000]);
    return { name: 'index-out-of-range', cls: slot.index.bad(c.a) };
  },
  disposed(c, slot, t, r) {
    const T = api.Tensor.from(t);
    T.dispose();
    setPath(c.a, slot.path, T);
    return { name: 'disposed-Tensor', cls: I };
  },
  wrap(c, slot, t, r) {
    setPath(c.a, slot.path, api.Tensor.from(t));
    return { name: 'as-Tensor', cls: V };
  },
  replace(c, slot, t, r) {
    const v = r.pick([null, undefined, 'tensor', 42, {}, [], { data: [1, 2], shape: [2] }, { data: t.data }, { shape: t.shape }, true]);
    setPath(c.a, slot.path, v === undefined ? DELETE : v);
    if (v === undefined && slot.path.length > 1 && slot.path[slot.path.length - 2] === 'opts') setPath(c.a, slot.path, DELETE);
    if (v === undefined) return { name: 'tensor=undefined', cls: slot.optional ? V : I };
    return { name: `tensor=${describe(v)}`, cls: v === null && slot.optional ? M : I };
  },
  resize(c, slot, t, r) {
    if (!slot.gen || t.shape.length === 0 || c.resized) return null;
    const d = r.int(0, t.shape.length - 1);
    let v = r.int(1, 40);
    if (v === t.shape[d]) v = t.shape[d] + 1;
    const shape = t.shape.slice();
    shape[d] = v;
    const nt = slot.gen(r, shape);
    setPath(c.a, slot.path, nt);
    c.resized = true;
    const rule = slot.dims[d] || 'f';
    return { name: `resize[${d}]=${v}`, cls: rule === 'c' ? I : M, shape: true };
  },
};

function dtypesFor(data) {
  if (data instanceof Float32Array) return ['f32'];
  if (data instanceof Uint16Array) return ['f16', 'bf16'];
  if (data instanceof Int32Array) return ['i32'];
  if (data instanceof BigInt64Array) return ['i64'];
  if (data instanceof Int8Array) return ['i8'];
  if (data instanceof Uint8Array) return ['u8'];
  return [];
}

function describe(v) {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'bigint') return v + 'n';
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v);
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'symbol') return 'symbol';
  if (Array.isArray(v)) return v.length <= 4 ? '[' + v.map(describe).join(',') + ']' : `array(${v.length})`;
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${v.length})`;
  if (typeof v === 'object') {
    const keys = Object.keys(v);
    return '{' + keys.slice(0, 4).map((k) => `${k}:${typeof v[k] === 'object' ? (v[k] === null ? 'null' : '…') : describe(v[k])}`).join(',') + (keys.length > 4 ? ',…' : '') + '}';
  }
  return typeof v;
}

const TENSOR_KINDS = Object.keys(tensorCorruptions);
const TENSOR_WEIGHTS = { rank: 2, zeroDim: 1, hugeDim: 2, broadcastHuge: 0.5, dtype: 2, arrayType: 1, short: 2, detached: 1, shrunk: 1, resizable: 1, shared: 1, badStrides: 2, strided: 1, offset: 2, nonFinite: 3, badIndex: 2, disposed: 1, wrap: 1, replace: 2, resize: 3 };

function weightedPick(r, kinds, weights) {
  let total = 0;
  for (const k of kinds) total += weights[k] || 1;
  let x = r.f() * total;
  for (const k of kinds) { x -= weights[k] || 1; if (x < 0) return k; }
  return kinds[kinds.length - 1];
}

function wrongTypeValue(r, type) {
  if (type === BOOL) return r.pick([1, 'true', 0, {}]);
  if (type === ENUM) return r.pick(['bogus', 1, '', {}]);
  if (type === BIG) return r.pick([1, '1', 1.5]);
  if (type === NUM) return r.pick(['1', {}, [], true]);
  if (type === INT) return r.pick(['1', 1.5, {}, true]);
  return undefined;
}

/** Applies one random corruption to the case; returns { name, cls, ... } or null. */
function corruptOnce(c, r, used) {
  const choices = [];
  for (const s of c.slots) if (!used.has('t:' + s.path.join('.')) && slotHost(c, s)) choices.push(['tensor', s, 4]);
  for (const s of c.scalars) if (!used.has('s:' + s.path.join('.'))) choices.push(['scalar', s, 2]);
  if (c.opts && !used.has('opts')) choices.push(['opts', null, 2]);
  if (c.extras && c.extras.length && used.size === 0) choices.push(['extra', null, 1]);
  if (!choices.length) return null;
  let total = 0;
  for (const ch of choices) total += ch[2];
  let x = r.f() * total;
  let pick = choices[choices.length - 1];
  for (const ch of choices) { x -= ch[2]; if (x < 0) { pick = ch; break; } }
  const [kind, s] = pick;
  if (kind === 'tensor') {
    used.add('t:' + s.path.join('.'));
    const t = slotHost(c, s);
    const k = weightedPick(r, TENSOR_KINDS, TENSOR_WEIGHTS);
    const res = tensorCorruptions[k](c, s, t, r);
    if (!res) return null;
    if (res.finite) {
      // re-judged on the final arguments too (a later corruption may change which elements are read)
      res.judge = () => {
        let v = s.finite(res.finite, c.a);
        if (res.one && v === I) v = M;
        if (s.lenient && v === I) v = M;
        return v;
      };
      res.cls = res.judge();
    }
    res.name = `${s.path.join('.')}:${res.name}`;
    if (res.shape) c.shapeChanged = true;
    return res;
  }
  if (kind === 'scalar') {
    used.add('s:' + s.path.join('.'));
    const parent = s.path.length > 1 ? getPath(c.a, s.path.slice(0, -1)) : c.a;
    if (parent !== undefined && (parent === null || typeof parent !== 'object' || Array.isArray(parent))) return null;
    let near = [];
    try { near = s.near(c.a) || []; } catch (e) { near = []; }
    const pool = near.concat(s.kind === 'any' ? [undefined, null, 'x', 1.5, -1, NaN] : BAD_SCALARS.concat([undefined]));
    const v = r.chance(0.5) && near.length ? r.pick(near) : r.pick(pool);
    setPath(c.a, s.path, v === undefined ? DELETE : v);
    if (s.path[0] === 'opts' && c.a.opts === undefined) c.a.opts = {};
    return { name: `${s.path.join('.')}=${describe(v)}`, cls: null };
  }
  if (kind === 'opts') {
    used.add('opts');
    const k = r.int(0, 3);
    const cur = getPath(c.a, c.opts.path);
    if (k === 0 || k === 1) {
      const name = r.pick(['foo', 'Keep', 'topK', 'device', 'kk', 'checkfinite', 'strides']);
      if (c.opts.known[name]) return null;
      const o = cur && typeof cur === 'object' ? cur : {};
      o[name] = 1;
      setPath(c.a, c.opts.path, o);
      return { name: `unknown-option '${name}'`, cls: c.opts.checked ? I : M };
    }
    if (k === 2) {
      const names = Object.keys(c.opts.known).filter((n) => [BOOL, ENUM, BIG, NUM, INT].includes(c.opts.known[n]) && !c.scalars.some((s) => s.path.join('.') === [...c.opts.path, n].join('.')));
      if (!names.length) return null;
      const n = r.pick(names);
      const v = wrongTypeValue(r, c.opts.known[n]);
      const o = cur && typeof cur === 'object' ? cur : {};
      o[n] = v;
      setPath(c.a, c.opts.path, o);
      return { name: `option ${n}=${describe(v)}`, cls: I };
    }
    const v = r.pick([null, 5, 'opts', [], true]);
    setPath(c.a, c.opts.path, v);
    return { name: `options=${describe(v)}`, cls: I };
  }
  used.add('extra');
  const ex = r.pick(c.extras);
  return ex(c, r);
}

// ---------------------------------------------------------------- one call

const BUILDER_NAMES = Object.keys(builders);
const BUILDER_WEIGHTS = {
  attentionScores: 4, reduceAttention: 2, topk: 3, gather: 3, quantize: 3, dequantize: 2, errorReport: 1, bipartiteSoftMatch: 3, merge: 2, unmerge: 1,
  mergeSource: 1, patchMasks: 1, contextualMerge: 2, kCenter: 2, kMedoids: 2, maxCoverage: 2, mmtokCoverage: 2, stcScores: 2, fasterVLM: 2, vtcCls: 1,
  fastV: 2, hiPrune: 2, foPru: 2, toMe: 1, 'ToMe.step': 2, parseR: 1, tomesd: 2, visionZip: 2, visionDrop: 2, divPrune: 1, toDRE: 1, mmTok: 1,
  centerClip: 1, StreamPruner: 2, 'Tensor.from': 2, 'Tensor.empty': 1, 'Tensor.view': 1, 'Tensor#methods': 1, 'Tensor.fromDevicePointer': 1,
  'Tensor()': 0.2, halfBits: 1, runtime: 0.5, visionDropStages: 0.5,
};

/**
 * Builds call i: { fn, async, corruption, cls, invoke(), post(result), cleanup() } or a
 * build failure { buildError } (a builder's own valid API call threw).
 */
function makeCall(seed, i) {
  const r = callRng(seed, i);
  const name = weightedPick(r, BUILDER_NAMES, BUILDER_WEIGHTS);
  const sync = r.chance(0.5);
  let c;
  try {
    c = builders[name](r, sync);
  } catch (e) {
    return { fn: name + ' (valid setup)', async: false, corruption: 'none', buildError: e };
  }
  c.async = !/Sync$|^new |^Tensor|^toTensor$|^errorReport$|^patchMasks$|^parseR$|^toMe$|^visionDropStages$|^halfBits|^(to|from)HalfBits|^f32To|^f16|^bf16|^pyRound|^stcScoring|^contiguous|^setThreads|^getThreads|^info$|^cuda|^deviceMemory|^ToMe\.(stepSync|keyBias|reset)|^StreamPruner\.pushSync/.test(c.fn);
  const nCorr = r.chance(0.15) ? 0 : r.chance(0.6) ? 1 : r.chance(0.6) ? 2 : 3;
  const used = new Set();
  const applied = [];
  for (let j = 0; j < nCorr * 2 && applied.length < nCorr; j++) {
    let res;
    try {
      res = corruptOnce(c, r, used);
    } catch (e) {
      // a corruption that could not be applied to already-corrupted input (Tensor.from
      // is fuzzed on its own): skip it
      continue;
    }
    if (res) applied.push(res);
  }
  for (const x of applied) if (x.judge) x.cls = x.judge();
  const verdicts = applied.map((x) => x.cls).filter((x) => x);
  // scalar rules are checked on the final arguments (they depend on each other)
  for (const s of c.scalars) {
    let v;
    try {
      v = s.valid(getPath(c.a, s.path), c.a);
    } catch (e) {
      v = M;
    }
    if (v === false) verdicts.push(c.shapeChanged ? M : I);
    else if (v === M) verdicts.push(M);
  }
  if (c.fixed) verdicts.push(c.fixed);
  const cls = worst(verdicts);
  return {
    fn: c.fn,
    async: c.async,
    corruption: applied.length ? applied.map((x) => `${x.name}${x.cls ? '[' + x.cls[0] + ']' : ''}`).join(' + ') : 'none',
    kinds: applied.map((x) => x.name.replace(/[=(].*$/, '')),
    cls,
    invoke: () => c.call(c.a),
    post: c.post,
    cleanup: c.cleanup,
  };
}

function errorProblem(e) {
  if (e === null || typeof e !== 'object') return `threw a non-object: ${String(e)}`;
  const okClass = e instanceof TypeError || e instanceof RangeError || e instanceof api.TokenSieveError;
  const code = e.code;
  if (!okClass) return `error of class ${e.constructor && e.constructor.name} (not TypeError/RangeError/TokenSieveError): ${e.message}`;
  if (typeof code !== 'string' || !code.startsWith('ERR_')) return `${e.constructor.name} without an ERR_ code (code=${String(code)}): ${e.message}`;
  return null;
}

function oneLine(s) {
  return String(s).replace(/\s+/g, ' ').slice(0, 400);
}

/**
 * Runs call i; returns { outcome: 'threw' | 'returned', problem?: {i, fn, corruption, message}, ms }.
 */
async function runCall(call, i) {
  const mk = (message) => ({ i, fn: call.fn, corruption: call.corruption, message: oneLine(message) });
  if (call.buildError) {
    const p = errorProblem(call.buildError);
    if (call.cleanup) try { call.cleanup(); } catch (e) { /* ignore */ }
    return { call, outcome: 'threw', problem: p ? mk(p) : undefined, ms: 0 };
  }
  const t0 = Date.now();
  let outcome, value, error, syncThrowFromAsync = false, timedOut = false;
  try {
    value = call.invoke();
    if (call.async) {
      if (!value || typeof value.then !== 'function') {
        outcome = 'returned';
      } else {
        let timer;
        const settled = await Promise.race([
          value.then((v) => ({ ok: true, v }), (e) => ({ ok: false, e })),
          new Promise((res) => { timer = setTimeout(() => res({ timeout: true }), CALL_LIMIT_MS); }),
        ]);
        clearTimeout(timer);
        if (settled.timeout) timedOut = true;
        else if (settled.ok) { outcome = 'returned'; value = settled.v; }
        else { outcome = 'threw'; error = settled.e; }
      }
    } else outcome = 'returned';
  } catch (e) {
    outcome = 'threw';
    error = e;
    if (call.async) syncThrowFromAsync = true;
  }
  const ms = Date.now() - t0;
  let problem;
  if (timedOut) {
    problem = mk(`async call did not settle within ${CALL_LIMIT_MS / 1000} s`);
    outcome = 'threw';
  } else if (outcome === 'threw') {
    const p = errorProblem(error);
    if (p) problem = mk(p);
    else if (syncThrowFromAsync) problem = mk(`Promise API threw synchronously instead of rejecting: ${error.code}: ${error.message}`);
  } else if (call.cls === I) {
    problem = mk(`invalid call ${call.async ? 'resolved' : 'returned'} ${describe(value)} instead of throwing`);
  }
  if (!problem && ms > CALL_LIMIT_MS) problem = mk(`call took ${ms} ms (> ${CALL_LIMIT_MS} ms)`);
  if (outcome === 'returned' && call.post) { try { call.post(value); } catch (e) { /* already disposed */ } }
  if (call.cleanup) { try { call.cleanup(); } catch (e) { /* ignore */ } }
  return { call, outcome, problem, ms, error };
}

// ---------------------------------------------------------------- in-process run

function signature(fn, corruption) {
  return fn + ' | ' + String(corruption).replace(/\[[ivm]\]/g, '').replace(/\d+/g, 'N');
}

function distinctKey(p) {
  return `${p.fn.replace(/Sync$/, '')} | ${p.message.replace(/-?\d+(\.\d+)?(e[+-]?\d+)?/g, 'N').replace(/"[^"]*"/g, 'S').slice(0, 160)}`;
}

function summarize(state) {
  const groups = new Map();
  for (const p of state.allProblems) {
    const k = distinctKey(p);
    const g = groups.get(k);
    if (g) { g.count++; if (g.examples.length < 3 && !g.examples.some((e) => e.corruption === p.corruption)) g.examples.push({ i: p.i, corruption: p.corruption }); }
    else groups.set(k, { fn: p.fn, message: p.message, count: 1, examples: [{ i: p.i, corruption: p.corruption }] });
  }
  return {
    calls: state.calls,
    threw: state.threw,
    returned: state.returned,
    skipped: state.skipped,
    problems: state.allProblems.slice(0, MAX_PROBLEMS_REPORTED),
    problemCount: state.allProblems.length,
    distinct: [...groups.values()].slice(0, 100),
  };
}

function newState() {
  return { calls: 0, threw: 0, returned: 0, skipped: 0, allProblems: [] };
}

function parseExclude(x) {
  if (!x) return [];
  return (Array.isArray(x) ? x : String(x).split(',')).map((s) => s.trim()).filter(Boolean);
}

function excluded(call, exclude, skipSigs) {
  if (skipSigs && skipSigs.has(signature(call.fn, call.corruption))) return true;
  for (const e of exclude) if (call.fn === e || call.fn.replace(/Sync$/, '') === e || (call.kinds && call.kinds.some((k) => k.includes(e)))) return true;
  return false;
}

/**
 * In-process run of calls [start, start + calls). A hung synchronous call
 * hangs this process (the CLI's supervisor catches that); async calls have
 * a 10 s watchdog. `onEvent` (optional) sees every call.
 */
async function run({ seed = 1, calls = 1000, log, start = 0, exclude, skipSigs, onEvent } = {}) {
  const state = newState();
  const ex = parseExclude(exclude);
  const t0 = Date.now();
  for (let i = start; i < start + calls; i++) {
    const call = makeCall(seed, i);
    if (excluded(call, ex, skipSigs)) {
      if (call.cleanup) { try { call.cleanup(); } catch (e) { /* ignore */ } }
      state.calls++;
      state.skipped++;
      if (onEvent) onEvent({ type: 'skip', i });
      continue;
    }
    if (onEvent) onEvent({ type: 'start', i, meta: { fn: call.fn, corruption: call.corruption, async: call.async } });
    const res = await runCall(call, i);
    state.calls++;
    if (res.outcome === 'threw') state.threw++;
    else state.returned++;
    if (res.problem) state.allProblems.push(res.problem);
    if (onEvent) onEvent({ type: 'end', i, outcome: res.outcome, problem: res.problem, res });
    if (log && (i + 1 - start) % 10000 === 0) log(`fuzz: ${i + 1 - start}/${calls} calls, ${state.allProblems.length} problems, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  try { api.setThreads('default'); } catch (e) { /* ignore */ }
  return summarize(state);
}

/** fn and corruption of call i without running it (its setup does run). */
function makeCallMeta(seed, i) {
  const c = makeCall(seed, i);
  if (c.cleanup) { try { c.cleanup(); } catch (e) { /* ignore */ } }
  return { fn: c.fn, corruption: c.corruption, async: c.async, kinds: c.kinds || [] };
}

// ---------------------------------------------------------------- child mode (protocol on fd 3)

async function childMain(args) {
  const fd = 3;
  const w = (s) => fs.writeSync(fd, s + '\n');
  const skipSigs = new Set(args.skip ? JSON.parse(args.skip) : []);
  const ex = parseExclude(args.exclude);
  const seed = Number(args.seed);
  const end = Number(args.end);
  for (let i = Number(args.start); i < end; i++) {
    const call = makeCall(seed, i);
    if (excluded(call, ex, skipSigs)) {
      if (call.cleanup) { try { call.cleanup(); } catch (e) { /* ignore */ } }
      w(`R ${i} s`);
      continue;
    }
    w(`S ${i} ${JSON.stringify({ fn: call.fn, corruption: call.corruption, async: call.async })}`);
    const res = await runCall(call, i);
    if (res.problem) w(`P ${JSON.stringify(res.problem)}`);
    if (args.stats) {
      const e = res.error;
      w(`X ${JSON.stringify({ fn: res.call.fn, cls: res.call.cls, outcome: res.outcome, code: e && e.code, msg: e && oneLine(e.message).slice(0, 120), corruption: res.call.corruption })}`);
    }
    w(`R ${i} ${res.outcome === 'threw' ? 't' : 'r'}`);
  }
  try { api.setThreads('default'); } catch (e) { /* ignore */ }
  w('D');
  process.exit(0);
}

// ---------------------------------------------------------------- supervisor (CLI)

function supervise({ seed, calls, start, exclude, stats }) {
  const { spawn } = require('child_process');
  const state = newState();
  const skip = new Set();
  const t0 = Date.now();
  let restarts = 0;
  const statRows = [];
  return new Promise((resolve) => {
    const launch = (from) => {
      if (from >= start + calls) return finish();
      const childArgs = [__filename, '--child', '--seed', String(seed), '--start', String(from), '--end', String(start + calls), '--skip', JSON.stringify([...skip])];
      if (exclude) childArgs.push('--exclude', exclude);
      if (stats) childArgs.push('--stats');
      const child = spawn(process.execPath, childArgs, { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
      let stderrTail = '';
      child.stderr.on('data', (d) => { stderrTail = (stderrTail + d.toString()).slice(-4000); });
      let buf = '';
      let current = null; // { i, fn, corruption, async, t }
      let lastI = from - 1;
      let done = false;
      let killedForHang = null;
      child.stdio[3].on('data', (d) => {
        buf += d.toString();
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          const tag = line[0];
          if (tag === 'S') {
            const sp = line.indexOf(' ', 2);
            const i = Number(line.slice(2, sp));
            current = Object.assign({ i, t: Date.now() }, JSON.parse(line.slice(sp + 1)));
          } else if (tag === 'R') {
            const [, is, o] = line.split(' ');
            const i = Number(is);
            lastI = i;
            current = null;
            state.calls++;
            if (o === 't') state.threw++;
            else if (o === 'r') state.returned++;
            else state.skipped++;
            if (state.calls % 10000 === 0) process.stderr.write(`fuzz: ${state.calls}/${calls} calls, ${state.allProblems.length} problems, ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
          } else if (tag === 'P') {
            state.allProblems.push(JSON.parse(line.slice(2)));
          } else if (tag === 'X') {
            statRows.push(JSON.parse(line.slice(2)));
          } else if (tag === 'D') {
            done = true;
          }
        }
      });
      const watchdog = setInterval(() => {
        if (!current) return;
        const limit = current.async ? CALL_LIMIT_MS + 5000 : CALL_LIMIT_MS;
        if (Date.now() - current.t > limit) {
          killedForHang = current;
          child.kill('SIGKILL');
        }
      }, 200);
      child.on('close', (code, signal) => {
        clearInterval(watchdog);
        if (done && code === 0) return finish();
        const cur = killedForHang || current;
        if (cur) {
          const what = killedForHang
            ? `hang: no result after ${(Date.now() - cur.t) / 1000 | 0} s (${cur.async ? 'async' : 'sync'} call; child killed)`
            : `crash: the process died (${signal ? 'signal ' + signal : 'exit code ' + code}) during this call; stderr: ${oneLine(stderrTail.slice(-600))}`;
          state.allProblems.push({ i: cur.i, fn: cur.fn, corruption: cur.corruption, message: what });
          state.calls++;
          state.threw++;
          skip.add(signature(cur.fn, cur.corruption));
          lastI = cur.i;
        } else {
          state.allProblems.push({ i: lastI + 1, fn: '(harness)', corruption: 'none', message: `child exited (${signal || code}) outside a call; stderr: ${oneLine(stderrTail.slice(-600))}` });
          if (lastI + 1 === from) return finish();
        }
        if (++restarts > 200) {
          state.allProblems.push({ i: lastI + 1, fn: '(harness)', corruption: 'none', message: 'too many crashes/hangs: stopped' });
          return finish();
        }
        launch(lastI + 1);
      });
    };
    const finish = () => {
      const s = summarize(state);
      if (stats) s.stats = statSummary(statRows);
      resolve(s);
    };
    launch(start);
  });
}

function statSummary(rows) {
  const by = new Map();
  for (const r of rows) {
    const k = r.fn;
    const e = by.get(k) || { calls: 0, valid: 0, validThrew: 0, examples: [] };
    e.calls++;
    if (r.cls === 'valid') {
      e.valid++;
      if (r.outcome === 'threw') { e.validThrew++; if (e.examples.length < 3) e.examples.push(`${r.code}: ${r.msg} <${r.corruption}>`); }
    }
    by.set(k, e);
  }
  return Object.fromEntries([...by.entries()].sort());
}

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) continue;
    const k = a.slice(2);
    if (['child', 'no-fork', 'stats', 'verbose'].includes(k)) out[k] = true;
    else out[k] = argv[++i];
  }
  return out;
}

async function cliMain() {
  const args = parseArgs(process.argv.slice(2));
  if (args.child) return childMain(args);
  const seed = args.seed === undefined ? 1 : Number(args.seed);
  let calls = args.calls === undefined ? 10000 : Number(args.calls);
  let start = args.start === undefined ? 0 : Number(args.start);
  if (args.only !== undefined) { start = Number(args.only); calls = 1; }
  if (!Number.isSafeInteger(seed) || !Number.isSafeInteger(calls) || calls < 0 || !Number.isSafeInteger(start) || start < 0) {
    process.stderr.write('usage: node test/fuzz/fuzz.js [--calls N] [--seed S] [--start I | --only I] [--exclude a,b] [--no-fork] [--stats]\n');
    process.exit(2);
  }
  let summary;
  if (args.only !== undefined && args.verbose) {
    const meta = makeCallMeta(seed, start);
    process.stderr.write(`call ${start}: ${meta.fn} ${meta.corruption}\n`);
  }
  if (args['no-fork']) summary = await run({ seed, calls, start, exclude: args.exclude, log: (m) => process.stderr.write(m + '\n') });
  else summary = await supervise({ seed, calls, start, exclude: args.exclude, stats: args.stats });
  if (args.stats) process.stderr.write(JSON.stringify(summary.stats, null, 1) + '\n');
  delete summary.stats;
  process.stdout.write(JSON.stringify(summary) + '\n');
  process.exitCode = summary.problemCount > 0 ? 1 : 0;
}

module.exports = { run, makeCall: makeCallMeta, runSupervised: supervise };

if (require.main === module) {
  cliMain().catch((e) => {
    process.stderr.write(`fuzz harness error: ${e && e.stack}\n`);
    process.exit(3);
  });
}
