/**
 * CUDA greedy maximum coverage: parity with the host path (which
 * test/coverage.test.ts checks against the float64 reference). Both back
 * ends keep each gain in float64, updated with the same operations in the
 * same row order, and break ties toward the lower column, so picks, pick
 * order and gains must be identical — the gains bit for bit. Skipped, with
 * the reason printed, without a usable CUDA device. (mmTok end to end on the
 * device is tested with the MMTok coverage kernel.)
 */
import { FloatDType, maxCoverage, maxCoverageSync, Tensor, toHalfBits } from '../lib';
import { describeCuda, expectCode, expectReject, makeTensor, randn, rng } from './helpers';

const dev = 'cuda:0';

type Kind = 'mixed' | 'coarse' | 'duplicates' | 'equal' | 'zero' | 'softmax' | 'wide';

/** Coverage values [B, R, N] (before rounding to the dtype). */
function values(B: number, R: number, N: number, kind: Kind, seed: number): number[] {
  const r = rng(seed);
  const out = new Array<number>(B * R * N);
  if (kind === 'softmax') {
    // MMTok-like rows: softmax over the columns of tanh-squashed logits / τ, divided by R.
    const z = randn(B * R * N, seed);
    for (let row = 0; row < B * R; row++) {
      const inv = row % 2 ? 1 / 0.02 : 1 / 0.2;
      let mx = -Infinity;
      for (let j = 0; j < N; j++) mx = Math.max(mx, Math.tanh(z[row * N + j] * 0.3) * inv);
      let s = 0;
      for (let j = 0; j < N; j++) s += (out[row * N + j] = Math.exp(Math.tanh(z[row * N + j] * 0.3) * inv - mx));
      for (let j = 0; j < N; j++) out[row * N + j] /= s * R;
    }
    return out;
  }
  for (let row = 0; row < B * R; row++) {
    const c = r();
    for (let j = 0; j < N; j++) {
      const i = row * N + j;
      const a = r();
      const mixed = a < 0.6 ? r() * r() : a < 0.85 ? -r() * 0.1 : 0;
      if (kind === 'mixed') out[i] = mixed;
      // Over 14 decades: even the float64 gains round, so a fully covered
      // column's exact 0 comes only from its count of positive terms.
      else if (kind === 'wide') out[i] = a < 0.6 ? r() * 10 ** (-14 * r()) : -r();
      else if (kind === 'coarse') out[i] = Math.floor(r() * 4) / 8; // exact sums: many exact ties
      else if (kind === 'equal') out[i] = c; // every column the same
      else if (kind === 'zero') out[i] = 0;
      else out[i] = j % 5 === 4 ? 0 : mixed; // duplicates: fixed below
    }
    if (kind === 'duplicates') for (let j = 0; j < N; j++) if (j % 5 !== 4) out[row * N + j] = out[row * N + Math.min((j * 7) % 3, N - 1)];
  }
  return out;
}

function excludeMask(B: number, N: number, k: number, p: number, seed: number): Uint8Array {
  const r = rng(seed);
  // The first k columns of every batch row stay, so k picks always exist.
  return Uint8Array.from({ length: B * N }, (_, i) => (i % N >= k && r() < p ? 1 : 0));
}

/** The bits of f32 values, for bitwise comparison. */
const bits = (a: number[]) => Array.from(new Uint32Array(Float32Array.from(a).buffer));

/** A device view [B, R, N] with row stride N + padR and batch stride R·(N + padR) + padB. */
function stridedDevice(v: number[], B: number, R: number, N: number, dtype: FloatDType, padR: number, padB: number): { host: Tensor; device: Tensor; backing: Tensor } {
  const sr = N + padR;
  const sb = R * sr + padB;
  const flat = new Array<number>(B * sb).fill(7.5); // padding: a value that would change every pick if read
  for (let b = 0; b < B; b++) for (let r = 0; r < R; r++) for (let j = 0; j < N; j++) flat[b * sb + r * sr + j] = v[(b * R + r) * N + j];
  const backing = dtype === 'f32' ? Tensor.from({ data: Float32Array.from(flat), shape: [B * sb] }) : Tensor.from({ data: toHalfBits(flat, dtype), shape: [B * sb], dtype });
  const d = backing.to(dev);
  return { host: backing.view([B, R, N], [sb, sr, 1], 0), device: d.view([B, R, N], [sb, sr, 1], 0), backing: d };
}

describeCuda('CUDA maxCoverage', () => {
  // [B, R, N, k, dtype, kind, exclude fraction]
  const cases: Array<[number, number, number, number, FloatDType, Kind, number]> = [
    [1, 1, 1, 1, 'f32', 'mixed', 0],
    [3, 4, 1, 1, 'bf16', 'mixed', 0],
    [2, 1, 7, 7, 'f32', 'mixed', 0],
    [2, 3, 13, 5, 'f16', 'mixed', 0],
    [3, 17, 31, 31, 'bf16', 'mixed', 0.3],
    [2, 61, 257, 31, 'f32', 'mixed', 0.3],
    [1, 592, 576, 64, 'f32', 'softmax', 0],
    [4, 608, 576, 64, 'bf16', 'softmax', 0.2],
    [2, 80, 2880, 288, 'f16', 'softmax', 0],
    [1, 30, 1031, 1031, 'f32', 'coarse', 0],
    [1, 50, 120, 120, 'f32', 'wide', 0],
    [2, 7, 300, 250, 'f32', 'wide', 0.1],
    [2, 6, 613, 200, 'bf16', 'duplicates', 0.2],
    [1, 4, 300, 300, 'f16', 'equal', 0],
    [2, 3, 290, 100, 'f32', 'zero', 0.5],
    [1, 9, 4096, 128, 'f32', 'mixed', 0],
    [2, 7, 4099, 64, 'bf16', 'coarse', 0.3],
    [1, 2051, 300, 40, 'f16', 'mixed', 0],
    [1, 3000, 700, 80, 'f32', 'softmax', 0],
  ];
  for (const [B, R, N, k, dtype, kind, ex] of cases) {
    test(`parity B${B} R${R} N${N} k${k} ${dtype} ${kind}${ex ? ' exclude' : ''}`, async () => {
      const t = makeTensor(values(B, R, N, kind, B * R * N + k), [B, R, N], dtype).t;
      const mask = ex ? excludeMask(B, N, k, ex, N + k) : undefined;
      const hostOpts = mask ? { exclude: { data: mask, shape: [B, N] } } : undefined;
      const want = maxCoverageSync(t, k, hostOpts);
      const d = t.to(dev);
      const m = mask ? Tensor.from({ data: mask, shape: [B, N] }).to(dev) : undefined;
      try {
        const got = await maxCoverage(d, k, m ? { exclude: m } : undefined);
        expect(got.order.device).toBe(dev);
        expect(got.order.toArray()).toEqual(want.order.toArray());
        expect(got.indices.toArray()).toEqual(want.indices.toArray());
        expect(bits(got.gains.toArray())).toEqual(bits(want.gains.toArray()));
        const sync = maxCoverageSync(d, k, m ? { exclude: m } : undefined);
        expect(sync.order.toArray()).toEqual(want.order.toArray());
      } finally {
        d.dispose();
        m?.dispose();
      }
    });
  }

  test('strided batch and row strides are read in place', () => {
    for (const [B, R, N, k, dtype] of [[2, 5, 257, 40, 'f32'], [3, 17, 31, 31, 'bf16'], [2, 13, 263, 45, 'f16']] as const) {
      const v = values(B, R, N, 'coarse', R + N);
      const { host, device, backing } = stridedDevice(v, B, R, N, dtype, 3, 11);
      try {
        const want = maxCoverageSync(host, k);
        const got = maxCoverageSync(device, k);
        expect(got.order.toArray()).toEqual(want.order.toArray());
        expect(bits(got.gains.toArray())).toEqual(bits(want.gains.toArray()));
      } finally {
        backing.dispose();
      }
    }
  });

  test('rank-2 coverage [R, N] gives flat results', () => {
    const t = makeTensor(values(1, 20, 100, 'mixed', 3), [20, 100]).t;
    const d = t.to(dev);
    const got = maxCoverageSync(d, 10);
    expect(got.indices.shape).toEqual([10]);
    expect(got.order.toArray()).toEqual(maxCoverageSync(t, 10).order.toArray());
    d.dispose();
  });

  test('bad input on the device: the host path\'s codes and messages', async () => {
    const v = values(2, 4, 20, 'mixed', 1);
    for (const dtype of ['f32', 'f16', 'bf16'] as const) {
      for (const [pos, bad] of [[1 * 80 + 2 * 20 + 7, NaN], [0 * 80 + 3 * 20 + 19, Infinity], [1 * 80 + 0 * 20 + 0, -Infinity]] as const) {
        const w = v.slice();
        w[pos] = bad;
        w[1 * 80 + 3 * 20 + 1] = NaN; // a later row of batch 1: never the one reported
        const t = makeTensor(w, [2, 4, 20], dtype).t;
        let hostMessage = '';
        try {
          maxCoverageSync(t, 3);
        } catch (e) {
          hostMessage = (e as Error).message;
        }
        const d = t.to(dev);
        expectCode(() => maxCoverageSync(d, 3), RangeError, 'ERR_RANGE', /finite coverage but row \d+ of batch \d+/);
        let deviceMessage = '';
        try {
          maxCoverageSync(d, 3);
        } catch (e) {
          deviceMessage = (e as Error).message;
        }
        expect(deviceMessage).toBe(hostMessage);
        await expectReject(maxCoverage(d, 3), RangeError, 'ERR_RANGE');
        d.dispose();
      }
    }
    const t = makeTensor(v, [2, 4, 20]).t;
    const d = t.to(dev);
    const mask = Uint8Array.from({ length: 40 }, (_, i) => (i >= 20 && i % 20 >= 4 ? 1 : 0)); // batch 1 keeps 4
    const m = Tensor.from({ data: mask, shape: [2, 20] }).to(dev);
    expectCode(() => maxCoverageSync(d, 5, { exclude: m }), RangeError, 'ERR_RANGE', /at least k = 5 columns that are not excluded in batch 1 but it has 4/);
    expect(maxCoverageSync(d, 4, { exclude: m }).order.toArray()).toEqual(maxCoverageSync(t, 4, { exclude: { data: mask, shape: [2, 20] } }).order.toArray());
    expectCode(() => maxCoverageSync(d, 21), RangeError, 'ERR_RANGE');
    expectCode(() => maxCoverageSync(d, 2, { exclude: { data: mask, shape: [2, 20] } }), Error, 'ERR_DEVICE');
    m.dispose();
    d.dispose();
  });
});
