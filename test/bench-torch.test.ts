/**
 * The bench's PyTorch baseline (bench/baseline_torch.py) on tiny specs: every
 * trial gets a figure for each variant it should have — INT8 attention rows
 * included, with their f32 figures shared with the f32 trial of the same
 * shape, and block-sparse rows of every density and precision with the dense
 * figures of their shape; the k-medoids baseline (CenterCLIP's code restated)
 * selects what kMedoids selects. Skipped, with the reason, where no python
 * imports torch.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import { findTorchPython } from '../bench/run';
import { kMedoidsSync } from '../lib';
import { randn } from './helpers';

// Under scripts/sanitize.sh every child inherits the preloaded libasan, and
// python is not built for it: its own allocations would be reported.
const underAsan = !!process.env.TOKENSIEVE_UNDER_ASAN;
const { python, tried } = underAsan ? { python: undefined, tried: [] } : findTorchPython('cpu');
const skipReason = underAsan
  ? 'under the ASan run, whose preloaded libasan would report python itself'
  : python ? '' : `no python that imports torch (tried ${tried.join(', ')}; apt-get install python3-torch libopenblas0-pthread)`;
const describeTorch = (name: string, body: () => void): void => {
  if (!skipReason) {
    describe(name, body);
  } else {
    describe.skip(`${name} [skipped: ${skipReason}]`, body);
    console.warn(`torch baseline tests skipped: ${skipReason}`);
  }
};

interface Line {
  name?: string;
  variant?: string;
  median_ms?: number;
  min_ms?: number;
  reps?: number;
  skipped?: string;
  torch?: string;
  blas?: string;
  error?: string;
}

function runBaseline(specs: object[]): Line[] {
  const script = path.join(__dirname, '..', 'bench', 'baseline_torch.py');
  const r = spawnSync(python!, [script], { input: JSON.stringify(specs), encoding: 'utf8', timeout: 120000 });
  expect(r.status).toBe(0);
  return r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Line);
}

describeTorch('bench: the PyTorch baseline', () => {
  const att = (name: string, rows: 'all' | 'cls', int8: boolean) => ({
    family: 'attention', name, B: 2, H: 2, N: 37, D: 8, rows, causal: false, dtype: 'f32', threads: 1, device: 'cpu', ...(int8 ? { int8: true } : {}),
  });
  const bs = (name: string, density: number, precision: 'bf16' | 'int8') => ({
    family: 'blocksparse', name, B: 1, H: 1, N: 130, D: 16, density, precision, threads: 1, device: 'cpu',
  });
  let lines: Line[] = [];
  const figure = (name: string, variant: string) => lines.find((l) => l.name === name && l.variant === variant);
  beforeAll(() => {
    lines = runBaseline([
      att('all f32', 'all', false), att('all int8', 'all', true), att('cls int8', 'cls', true),
      bs('bs dense', 1, 'bf16'), bs('bs rho', 0.5, 'bf16'), bs('bs rho int8', 0.5, 'int8'),
      { ...bs('bs mass', 1, 'bf16'), kind: 'mass' },
    ]);
  });

  test('a header naming torch and its BLAS, then one timed figure per trial and variant', () => {
    expect(lines[0].error).toBeUndefined();
    expect(lines[0].torch).toEqual(expect.any(String));
    expect(lines[0].blas).toEqual(expect.any(String));
    const want: Array<[string, string]> = [
      ['all f32', 'torch-ref'], ['all int8', 'torch-ref'], ['all int8', 'torch-int8'],
      ['cls int8', 'torch-ref'], ['cls int8', 'torch-min'], ['cls int8', 'torch-int8'],
      ['bs dense', 'torch-dense'], ['bs rho', 'torch-dense'], ['bs rho int8', 'torch-dense'],
      ['bs mass', 'torch-ref'],
    ];
    for (const [name, variant] of want) {
      const f = figure(name, variant);
      expect({ name, variant, skipped: f?.skipped }).toEqual({ name, variant, skipped: undefined });
      expect(f!.median_ms).toBeGreaterThan(0);
      expect(f!.min_ms).toBeLessThanOrEqual(f!.median_ms!);
      expect(f!.reps).toBeGreaterThanOrEqual(2);
    }
    expect(figure('all f32', 'torch-int8')).toBeUndefined();  // only INT8 trials
    expect(figure('bs mass', 'torch-dense')).toBeUndefined();  // the mass row is timed against the mass, not attention
    expect(lines.filter((l) => l.name).length).toBe(want.length + (figure('bs dense', 'torch-sdpa') ? 3 : 0));
  });

  test('figures that do not depend on precision or density are measured once per shape', () => {
    expect(figure('all int8', 'torch-ref')).toEqual({ ...figure('all f32', 'torch-ref'), name: 'all int8' });
    expect(figure('bs rho int8', 'torch-dense')).toEqual({ ...figure('bs dense', 'torch-dense'), name: 'bs rho int8' });
    expect(figure('bs rho', 'torch-dense')).toEqual({ ...figure('bs dense', 'torch-dense'), name: 'bs rho' });
  });

  test("the k-medoids baseline is CenterCLIP's algorithm: the same medoids and assignments as kMedoids", () => {
    const [segs, S, C, k] = [3, 23, 17, 6];
    const x = Float32Array.from(randn(segs * S * C, 12));
    const code = [
      'import json, sys, torch',
      `sys.path.insert(0, ${JSON.stringify(path.join(__dirname, '..', 'bench'))})`,
      'from baseline_torch import centerclip_kmedoids',
      'x = torch.tensor(json.load(sys.stdin), dtype=torch.float32).view(' + [segs, S, C].join(', ') + ')',
      `m, a = centerclip_kmedoids(torch, x, ${k})`,
      'print(json.dumps({"medoids": m.tolist(), "assign": a.tolist()}))',
    ].join('\n');
    const r = spawnSync(python!, ['-c', code], { input: JSON.stringify(Array.from(x)), encoding: 'utf8', timeout: 60000 });
    expect(r.stderr).toBe('');
    const torchOut = JSON.parse(r.stdout) as { medoids: number[][]; assign: number[][] };
    const ours = kMedoidsSync({ data: x, shape: [1, segs * S, C] }, k, { segments: segs });
    expect(Array.from(ours.medoids.toArray())).toEqual(torchOut.medoids.flatMap((m, g) => m.map((i) => g * S + i)));
    expect(Array.from(ours.assignments.toArray())).toEqual(torchOut.assign.flatMap((a, g) => a.map((c) => g * k + c)));
  });
});
