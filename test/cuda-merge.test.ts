/**
 * CUDA token merging: parity with the CPU back end (which test/merge.test.ts
 * checks against the float64 references). Precision 'f32' plans must match
 * exactly: the CUDA pass nominates candidates with TF32 tensor cores and
 * rescores every one within the TF32 error bound as the CPU's sequential fmaf
 * chain, ties toward the lower index. Skipped, with the reason printed, without a
 * usable CUDA device.
 */
import { bipartiteSoftMatch, bipartiteSoftMatchSync, contextualMergeSync, deviceMemory, FloatDType, MergePlan, mergeSourceSync, mergeSync, Tensor, toMe, unmergeSync } from '../lib';
import { cachedSplitCount } from '../lib/kernels/merge';
import { describeCuda, expectClose, expectCode, makeTensor, randn } from './helpers';
import { paritySplit, refBf16 } from './reference/merge';

const dev = 'cuda:0';

// ---- precision 'bf16': the float64 reference of its semantics ----------------
// Rows normalised as the back ends do (f64 partial sums of d % 4, f32 norm, f32
// division), rounded to bf16; scores = Σ products (exact in f64). The tensor
// cores sum in their own order (and the CPU sequentially), so decisions are
// compared only where the reference leaves no two candidates within 1e-5
// (of max(|x|, |y|, 0.1)); bit-equal values (duplicated rows) must go to the
// lower index. (test/merge.test.ts holds the same reference for the CPU.)
// 1e-5, widened for long sums (the tensor cores' f32 accumulation need not round to nearest at every step).
const tolFor = (C: number): number => 1e-5 * Math.max(1, C / 1024);

/** Plan decisions against the reference at every pinned position; returns [checked, seen]. */
function checkBf16(plan: MergePlan, metric: ArrayLike<number>, N: number, C: number, cls: boolean, distill: boolean, label: string): [number, number] {
  const { a, b } = paritySplit(N);
  const r = plan.r;
  // Sources and destinations exist exactly when something is merged.
  expect(`${label}: sources ${plan.sources === undefined ? 'absent' : 'present'}`).toBe(`${label}: sources ${r === 0 ? 'absent' : 'present'}`);
  if (r === 0) {
    // An identity plan (e.g. N = 2 with CLS protected caps r at 0): every token stays in place.
    const ident = Array.from({ length: plan.batch * N }, (_, i) => i % N);
    expect(plan.assign.toArray()).toEqual(ident);
    expect(plan.unmerged!.toArray()).toEqual(ident);
    return [ident.length, ident.length];
  }
  const src = plan.sources!.toArray();
  const dst = plan.destinations!.toArray();
  const unm = plan.unmerged ? plan.unmerged.toArray() : [];
  let checked = 0;
  let seen = 0;
  for (let bb = 0; bb < plan.batch; bb++) {
    const { arg, decided, order, pinned, group } = refBf16(metric, bb, N, C, a, b, cls, distill, tolFor(C));
    const aPos = new Map(a.map((t, i) => [t, i]));
    for (let k = 0; k < r; k++) {
      seen++;
      if (!pinned[k]) continue;
      checked++;
      const i = aPos.get(src[bb * r + k])!;
      expect(`${label} b${bb} edge ${k}: a${i}`).toBe(`${label} b${bb} edge ${k}: a${order[k]}`);
      if (decided[i]) expect(`${label} b${bb} a${i} → ${dst[bb * r + k]}`).toBe(`${label} b${bb} a${i} → ${b[arg[i]]}`);
    }
    const nu = a.length - r;
    const boundary = r === a.length || group[r] !== group[r - 1] || pinned[r];
    const want = order.slice(r).map((i) => a[i]);
    if (cls) want.sort((x, y) => x - y);
    for (let k = 0; k < nu; k++) {
      seen++;
      if (!(cls ? boundary : pinned[r + k])) continue;
      checked++;
      expect(`${label} b${bb} unmerged[${k}] = ${unm[bb * nu + k]}`).toBe(`${label} b${bb} unmerged[${k}] = ${want[k]}`);
    }
  }
  return [checked, seen];
}

describeCuda('CUDA token merging', () => {
  const shapes: Array<[number, number, number, FloatDType]> = [[1, 2, 1, 'f32'], [2, 17, 8, 'f16'], [3, 197, 64, 'bf16'], [2, 577, 1024, 'f32'], [1, 2880, 64, 'bf16']];
  for (const [B, N, C, dt] of shapes) {
    test(`plan and merge parity B=${B} N=${N} C=${C} ${dt}`, async () => {
      const m = makeTensor(randn(B * N * C, N + C), [B, N, C], dt).t;
      const x = makeTensor(randn(B * N * 7, N), [B, N, 7], dt).t;
      const md = m.to(dev);
      const xd = x.to(dev);
      for (const [r, protect] of [[Math.floor(N / 4) || 1, { cls: true }], [N, { cls: true, distill: N > 2 }], [Math.floor(N / 3) || 1, {}]] as const) {
        const pc = bipartiteSoftMatchSync(m, r, { protect });
        const pd = await bipartiteSoftMatch(md, r, { protect });
        expect(pd.device).toBe(dev);
        expect(pd.assign.toArray()).toEqual(pc.assign.toArray());
        expect(pd.sources?.toArray()).toEqual(pc.sources?.toArray());
        expect(pd.destinations?.toArray()).toEqual(pc.destinations?.toArray());
        for (const mode of ['mean', 'sum', 'amax', 'wavg'] as const) {
          const a = mergeSync(pc, x, { mode });
          const b = mergeSync(pd, xd, { mode });
          expectClose(b.x.toArray(), a.x.toArray(), 1e-5, dt === 'f32' ? 1e-5 : 1e-2, `merge ${mode}`);
          if (mode === 'wavg') expect(b.sizes!.toArray()).toEqual(a.sizes!.toArray());
        }
        const merged = mergeSync(pd, xd, { mode: 'mean' }).x;
        expect(unmergeSync(pd, merged).toArray()).toEqual(unmergeSync(pc, merged.toHost()).toArray());
        expect(mergeSourceSync(pd).toArray()).toEqual(mergeSourceSync(pc).toArray());
        pd.dispose();
      }
      md.dispose();
      xd.dispose();
    });
  }

  // precision 'bf16': the WMMA score pass against the reference (and the CPU's bf16 plan).
  const bf16Shapes: Array<[number, number, number, FloatDType]> = [[1, 2, 1, 'f32'], [2, 17, 8, 'f16'], [3, 197, 64, 'bf16'], [1, 263, 130, 'f32'], [2, 577, 1024, 'bf16'], [1, 301, 4096, 'f16']];
  for (const [B, N, C, dt] of bf16Shapes) {
    test(`precision 'bf16' vs the reference and the CPU B=${B} N=${N} C=${C} ${dt}`, async () => {
      const vals = randn(B * N * C, 3 * N + C);
      // duplicated rows (t ≡ 2, 3 mod 6 copy t − 2): exact ties in the row max and in the edge order
      for (let bb = 0; bb < B; bb++) for (let t = 2; t < N; t++) if (t % 6 === 2 || t % 6 === 3) for (let d = 0; d < C; d++) vals[(bb * N + t) * C + d] = vals[(bb * N + t - 2) * C + d];
      const m = makeTensor(vals, [B, N, C], dt);
      const md = m.t.to(dev);
      let checked = 0;
      let seen = 0;
      for (const [r, cls, distill] of [[Math.floor(N / 4) || 1, true, false], [N, true, N > 2], [Math.floor(N / 3) || 1, false, false]] as const) {
        const protect = { cls, distill };
        const pd = await bipartiteSoftMatch(md, r, { protect, precision: 'bf16' });
        const pc = bipartiteSoftMatchSync(m.t, r, { protect, precision: 'bf16' });
        expect(pd.r).toBe(pc.r);
        for (const [plan, label] of [[pd, 'cuda'], [pc, 'cpu']] as const) {
          const [c, n] = checkBf16(plan, m.exact, N, C, cls, distill, `${label} r=${r}`);
          checked += c;
          seen += n;
        }
        const merged = mergeSync(pd, md, { mode: 'wavg' });
        expect(merged.x.shape).toEqual([B, N - pd.r, C]);
        pd.dispose();
      }
      expect(checked).toBeGreaterThanOrEqual(0.9 * seen);
      md.dispose();
    });
  }

  // precision 'f32' (the default): TF32 tensor-core candidates, then every
  // column within the TF32 error bound of a row's maximum rescored in the
  // CPU's fmaf order — so the plans are the CPU's bit for bit, near-ties
  // included. Metrics: 'dup' duplicates rows and columns (exact ties);
  // 'nudge' makes b-token 4k + 3 b-token 4k + 1 scaled by 1 + m·2^-21 per
  // value (a difference tf32 cannot see) and a-tokens 4k, 4k + 2 lie near
  // both (each row's two best columns differ in the last bits).
  const f32Metric = (B: number, N: number, C: number, kind: 'random' | 'dup' | 'nudge', seed: number): Float64Array => {
    const v = randn(B * N * C, seed);
    const nudge = randn(B * N * C, seed + 1);
    for (let bb = 0; bb < B; bb++) {
      for (let t = 0; t < N; t++) {
        const row = (bb * N + t) * C;
        if (kind === 'dup' && t >= 2 && (t % 6 === 2 || t % 6 === 3)) for (let d = 0; d < C; d++) v[row + d] = v[row - 2 * C + d];
        const base = t - (t % 4) + 1;
        if (kind === 'nudge' && t % 4 !== 1 && base < N) {
          const src = (bb * N + base) * C;
          for (let d = 0; d < C; d++) {
            v[row + d] = t % 4 === 3
              ? Math.fround(v[src + d] * (1 + Math.round(4 * Math.tanh(nudge[row + d])) * 2 ** -21))
              : Math.fround(v[src + d] + 0.03 * v[row + d]);
          }
        }
      }
    }
    return v;
  };
  const f32Shapes: Array<[number, number, number, FloatDType, 'random' | 'dup' | 'nudge']> = [
    [1, 2, 1, 'f32', 'random'], [3, 17, 1, 'f32', 'random'], [2, 17, 64, 'f32', 'dup'], [2, 197, 65, 'f16', 'nudge'],
    [1, 577, 1024, 'f32', 'nudge'], [2, 1030, 64, 'bf16', 'dup'], [1, 2880, 1024, 'f32', 'random'], [1, 1001, 4096, 'f32', 'nudge'],
  ];
  for (const [B, N, C, dt, kind] of f32Shapes) {
    test(`precision 'f32' plans equal the CPU's B=${B} N=${N} C=${C} ${dt} ${kind}`, async () => {
      const m = makeTensor(f32Metric(B, N, C, kind, 5 * N + C), [B, N, C], dt).t;
      const md = m.to(dev);
      for (const [r, cls, distill] of [[Math.floor(N / 4) || 1, true, false], [N, true, N > 2], [Math.floor(N / 3) || 1, false, false]] as const) {
        const protect = { cls, distill };
        const pd = await bipartiteSoftMatch(md, r, { protect });
        const pc = bipartiteSoftMatchSync(m, r, { protect });
        expect(pd.r).toBe(pc.r);
        let compared = 0;
        for (const [name, x, y] of [['assign', pd.assign, pc.assign], ['unmerged', pd.unmerged, pc.unmerged],
          ['sources', pd.sources, pc.sources], ['destinations', pd.destinations, pc.destinations]] as const) {
          const u = x ? x.toArray() : [];
          const w = y ? y.toArray() : [];
          expect(`${name} r=${r}: ${u.length}`).toBe(`${name} r=${r}: ${w.length}`);
          let diff = -1;
          for (let i = 0; i < u.length && diff < 0; i++) if (u[i] !== w[i]) diff = i;
          expect(`${name} r=${r}: first difference at ${diff}`).toBe(`${name} r=${r}: first difference at -1`);
          compared += u.length;
        }
        // Every entry of the plan was compared: assign, unmerged + sources, destinations.
        expect(compared).toBe(B * (N + Math.ceil(N / 2) + pd.r));
        pd.dispose();
      }
      md.dispose();
    });
  }
  test('wait: false enqueues the match and the merge without reading anything back', async () => {
    const [B, N, C] = [2, 577, 64];
    const m = makeTensor(f32Metric(B, N, C, 'dup', 41), [B, N, C]).t;
    const x = makeTensor(randn(B * N * 16, 42), [B, N, 16]).t;
    const md = m.to(dev);
    const xd = x.to(dev);
    const pw = bipartiteSoftMatchSync(md, 100, { protect: { cls: true } });
    const pn = bipartiteSoftMatchSync(md, 100, { protect: { cls: true }, wait: false });
    expect(pn.assign.toArray()).toEqual(pw.assign.toArray());
    expect(pn.sources!.toArray()).toEqual(pw.sources!.toArray());
    const mw = mergeSync(pw, xd, { mode: 'wavg' });
    const mn = mergeSync(pn, xd, { mode: 'wavg', wait: false });
    expect(mn.x.toArray()).toEqual(mw.x.toArray());
    // Unchecked without waiting: a NaN metric is reported only by a call that waits.
    const bad = Float32Array.from(randn(1 * 8 * 4, 1));
    bad[5] = NaN;
    const bd = Tensor.from({ data: bad, shape: [1, 8, 4] }).to(dev);
    expect(() => bipartiteSoftMatchSync(bd, 2, { wait: false }).dispose()).not.toThrow();
    expectCode(() => bipartiteSoftMatchSync(bd, 2), RangeError, 'ERR_RANGE');
    // contextualMerge alike: unchecked it enqueues and returns, checked it reports.
    const kd = { keptIndices: Tensor.from({ data: Int32Array.from([0, 3]), shape: [1, 2] }).to(dev) };
    const xs = Tensor.from({ data: Float32Array.from(randn(8 * 5, 2)), shape: [1, 8, 5] }).to(dev);
    expect(() => contextualMergeSync(xs, bd, kd, 2, { wait: false }).dispose()).not.toThrow();
    expectCode(() => contextualMergeSync(xs, bd, kd, 2), RangeError, 'ERR_RANGE');
    const good = Tensor.from({ data: Float32Array.from(randn(8 * 4, 3)), shape: [1, 8, 4] }).to(dev);
    const cw = contextualMergeSync(xs, good, kd, 2);
    const cn = contextualMergeSync(xs, good, kd, 2, { wait: false });
    expect(cn.toArray()).toEqual(cw.toArray());
    // Device keptIndices are listed on the device: equal to the host keep spec's result;
    // a repeated entry is reported only by a call that waits, with the CPU's message.
    const ch = contextualMergeSync(xs, good, { keptIndices: { data: Int32Array.from([0, 3]), shape: [1, 2] } }, 2);
    expect(ch.toArray()).toEqual(cw.toArray());
    const rep = { keptIndices: Tensor.from({ data: Int32Array.from([3, 3]), shape: [1, 2] }).to(dev) };
    expect(() => contextualMergeSync(xs, good, rep, 2, { wait: false }).dispose()).not.toThrow();
    expectCode(() => contextualMergeSync(xs, good, rep, 2), RangeError, 'ERR_RANGE', /keptIndices\[0, 1\] = 3 repeats/);
    // A device keepMask is listed and counted on the device: the result of the
    // equivalent keptIndices; rows that leave different counts, or fewer than c,
    // are reported only by a call that waits (unchecked: an all-NaN output).
    const md2 = Tensor.from({ data: Uint8Array.from([1, 0, 0, 1, 0, 0, 0, 0]), shape: [1, 8], dtype: 'u8' }).to(dev);
    const cm = contextualMergeSync(xs, good, { keepMask: md2 }, 2);
    expect(cm.toArray()).toEqual(cw.toArray());
    const x2 = Tensor.from({ data: Float32Array.from(randn(2 * 8 * 5, 4)), shape: [2, 8, 5] }).to(dev);
    const g2 = Tensor.from({ data: Float32Array.from(randn(2 * 8 * 4, 5)), shape: [2, 8, 4] }).to(dev);
    const maskRows = [0, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0];  // row 0 keeps 3, row 1 keeps 3
    const m2 = Tensor.from({ data: Float32Array.from(maskRows), shape: [2, 8] }).to(dev);
    const viaMask = contextualMergeSync(x2, g2, { keepMask: m2 }, 3);
    const viaHost = contextualMergeSync(x2, g2, { keepMask: { data: Float32Array.from(maskRows), shape: [2, 8] } }, 3);
    expect(viaMask.toArray()).toEqual(viaHost.toArray());
    const uneven = Tensor.from({ data: Float32Array.from(maskRows.map((v, i) => (i === 15 ? 1 : v))), shape: [2, 8] }).to(dev);
    expectCode(() => contextualMergeSync(x2, g2, { keepMask: uneven }, 3), RangeError, 'ERR_SHAPE', /row 0: 5, row 1: 4/);
    const un = contextualMergeSync(x2, g2, { keepMask: uneven }, 3, { wait: false });
    expect(un.toArray().every((v) => Number.isNaN(v))).toBe(true);
    expectCode(() => contextualMergeSync(x2, g2, { keepMask: m2 }, 6), RangeError, 'ERR_RANGE', /c in \[1, 5\] but got 6/);
    expectCode(() => contextualMergeSync(x2, g2, { keepMask: m2 }, 9), RangeError, 'ERR_RANGE');
    for (const t of [md2, cm, x2, g2, m2, viaMask, viaHost, uneven, un]) t.dispose();
    for (const t of [cw, cn, ch, good, xs, kd.keptIndices, rep.keptIndices]) t.dispose();
    for (const t of [pw, pn]) t.dispose();
    for (const t of [md, xd, bd]) t.dispose();
  });

  test('a split is uploaded once per device: later calls reuse the cached copy', () => {
    // N = 61 is used by no other test of this file, so the first call uploads.
    const x = Tensor.from({ data: Float32Array.from(randn(2 * 61 * 8, 41)), shape: [2, 61, 8] }).to(dev);
    const before = cachedSplitCount();
    const p1 = bipartiteSoftMatchSync(x, 9, { protect: { cls: true } });
    expect(cachedSplitCount()).toBe(before + 1);
    const mem = deviceMemory();
    const p2 = bipartiteSoftMatchSync(x, 9, { protect: { cls: true }, wait: false });
    // Only the plan's four outputs were allocated: no split upload.
    expect(deviceMemory().buffers - mem.buffers).toBe(4);
    expect(cachedSplitCount()).toBe(before + 1);
    expect(p2.assign.toArray()).toEqual(p1.assign.toArray());
    // A different split of the same N (tomesd's grid) is a different entry, with its own result.
    const g = bipartiteSoftMatchSync(x, 9, { split: { grid2d: { w: 61, h: 1, sx: 2, sy: 1 } } });
    expect(cachedSplitCount()).toBe(before + 2);
    const host = bipartiteSoftMatchSync(x.to('cpu'), 9, { split: { grid2d: { w: 61, h: 1, sx: 2, sy: 1 } } });
    expect(g.assign.toArray()).toEqual(host.assign.toArray());
    for (const t of [p1, p2, g, host, x]) t.dispose();
  });

  test("precision 'bf16' at video size: CUDA and CPU plans agree almost everywhere", () => {
    // No float64 reference at this size (12.5 G multiply-adds): the CPU's bf16
    // plan stands in, and only near-ties may differ.
    const [N, C] = [4096, 1024];
    const m = makeTensor(randn(N * C, 77), [1, N, C], 'bf16').t;
    const r = N / 4;
    const pc = bipartiteSoftMatchSync(m, r, { protect: { cls: true }, precision: 'bf16' });
    const pd = bipartiteSoftMatchSync(m.to(dev), r, { protect: { cls: true }, precision: 'bf16' });
    const sc = pc.sources!.toArray();
    const sd = pd.sources!.toArray();
    const dc = pc.destinations!.toArray();
    const dd = pd.destinations!.toArray();
    let sameSrc = 0;
    let sameDst = 0;
    for (let k = 0; k < r; k++) {
      if (sc[k] === sd[k]) {
        sameSrc++;
        if (dc[k] === dd[k]) sameDst++;
      }
    }
    expect(sameSrc).toBeGreaterThanOrEqual(0.99 * r);
    expect(sameDst).toBeGreaterThanOrEqual(0.999 * sameSrc);
    expect(new Set(sd).size).toBe(r);
    pd.dispose();
  });

  test("toMe with precision 'bf16' on the device", () => {
    const [B, N, C] = [2, 197, 32];
    const x = makeTensor(randn(B * N * C, 15), [B, N, C], 'bf16');
    const xd = x.t.to(dev);
    const tome = toMe({ layers: 1, r: 16, precision: 'bf16' });
    const out = tome.stepSync(xd, xd);
    expect(out.device).toBe(dev);
    expect(out.shape).toEqual([B, N - 16, C]);
    const plan = bipartiteSoftMatchSync(xd, 16, { protect: { cls: true }, precision: 'bf16' });
    const [c, n] = checkBf16(plan, x.exact, N, C, true, false, 'toMe');
    expect(c).toBeGreaterThanOrEqual(0.9 * n);
    // deterministic: the per-row atomicMax keys do not depend on block order
    expect(out.toArray()).toEqual(mergeSync(plan, xd, { mode: 'wavg' }).x.toArray());
    plan.dispose();
    out.dispose();
    xd.dispose();
  });

  test('random 2-D split parity', () => {
    const m = makeTensor(randn(2 * 48 * 16, 3), [2, 48, 16]).t;
    const split = { random2d: { w: 8, h: 6, sx: 2, sy: 2, seed: 9 } };
    const pc = bipartiteSoftMatchSync(m, 20, { split });
    const pd = bipartiteSoftMatchSync(m.to(dev), 20, { split });
    expect(pd.assign.toArray()).toEqual(pc.assign.toArray());
  });

  test('contextual merge parity', () => {
    const x = makeTensor(randn(2 * 577 * 256, 1), [2, 577, 256], 'bf16').t;
    const metric = makeTensor(randn(2 * 577 * 64, 2), [2, 577, 64], 'bf16').t;
    const kept = Int32Array.from({ length: 2 * 162 }, (_, i) => Math.floor(((i % 162) * 577) / 162));
    const keep = { keptIndices: Tensor.from({ data: kept, shape: [2, 162] }) };
    const a = contextualMergeSync(x, metric, keep, 30);
    const b = contextualMergeSync(x.to(dev), metric.to(dev), { keptIndices: keep.keptIndices.to(dev) }, 30);
    expectClose(b.toArray(), a.toArray(), 1e-5, 1e-2, 'contextual');
  });

  test('toMe on the device follows the CPU', () => {
    const [B, N, C] = [2, 197, 32];
    const tc = toMe({ layers: 2, r: 16, traceSource: true });
    const td = toMe({ layers: 2, r: 16, traceSource: true });
    let xc = makeTensor(randn(B * N * C, 5), [B, N, C]).t;
    let xd = xc.to(dev);
    for (let l = 0; l < 2; l++) {
      xc = tc.stepSync(xc, xc);
      xd = td.stepSync(xd, xd);
    }
    expectClose(xd.toArray(), xc.toArray(), 1e-5, 1e-4, 'toMe x');
    expect(td.source!.toArray()).toEqual(tc.source!.toArray());
  });

  test('bad input on the device', () => {
    const bad = Float32Array.from(randn(1 * 8 * 4, 1));
    bad[5] = NaN;
    const md = Tensor.from({ data: bad, shape: [1, 8, 4] }).to(dev);
    expectCode(() => bipartiteSoftMatchSync(md, 2), RangeError, 'ERR_RANGE');
    expectCode(() => bipartiteSoftMatchSync(md, 2, { precision: 'bf16' }), RangeError, 'ERR_RANGE');
    expectCode(() => bipartiteSoftMatchSync(md, 2, { precision: 'int8' as never }), TypeError, 'ERR_ARG');
    const plan = bipartiteSoftMatchSync(Tensor.from({ data: Float32Array.from(randn(32, 2)), shape: [1, 8, 4] }).to(dev), 2);
    expectCode(() => mergeSync(plan, Tensor.from({ data: new Float32Array(8 * 3), shape: [1, 8, 3] })), Error, 'ERR_DEVICE');
    // out on the host for a device merge.
    const xd = Tensor.from({ data: Float32Array.from(randn(32, 3)), shape: [1, 8, 4] }).to(dev);
    expectCode(() => mergeSync(plan, xd, { out: { x: Tensor.empty([1, 6, 4], 'f32', 'cpu') } }), Error, 'ERR_DEVICE', /out\.x/);
  });

  test('merge into device outputs (out): the same bits as fresh outputs, every element written', () => {
    const [B, N, C] = [2, 97, 33];
    const x = makeTensor(randn(B * N * C, 51), [B, N, C]).t.to(dev);
    const plan = bipartiteSoftMatchSync(makeTensor(randn(B * N * 8, 52), [B, N, 8]).t.to(dev), 30, { protect: { cls: true } });
    const M = plan.nOut;
    const sizes = Tensor.from({ data: Float32Array.from({ length: B * N }, (_, i) => 1 + (i % 4)), shape: [B, N, 1] }).to(dev);
    const fresh = mergeSync(plan, x, { mode: 'wavg', sizes });
    const outX = Tensor.from({ data: new Float32Array(B * M * C).fill(NaN), shape: [B, M, C] }).to(dev);
    const outSizes = Tensor.from({ data: new Float32Array(B * M).fill(NaN), shape: [B, M, 1] }).to(dev);
    const got = mergeSync(plan, x, { mode: 'wavg', sizes, out: { x: outX, sizes: outSizes } });
    expect(got.x).toBe(outX);
    expect(got.sizes).toBe(outSizes);
    expect(outX.toArray()).toEqual(fresh.x.toArray());
    expect(outSizes.toArray()).toEqual(fresh.sizes!.toArray());
  });
});
