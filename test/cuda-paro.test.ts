/**
 * PAROAttention's compositions on CUDA tensors give the CPU's plans, masks
 * and (within f16 tolerance, precision 'f16') outputs: the permutation tensors, the
 * calibrated mask and the predictor's mask are placed on q's device.
 */
import {
  BlockMask,
  calibrateBlockMask,
  paroAttentionSync,
  predictBlockMaskSync,
  searchReorderPlanSync,
  Tensor,
} from '../lib';
import { describeCuda, expectClose, randn } from './helpers';

const host = (B: number, H: number, N: number, D: number, seed: number) => ({ data: Float32Array.from(randn(B * H * N * D, seed)), shape: [B, H, N, D] });

describeCuda('PAROAttention on CUDA', () => {
  const grid = { F: 3, H: 4, W: 5, prefix: 7, suffix: 3 }; // N = 70
  const [B, H, N, D] = [2, 3, 70, 64];
  const q = host(B, H, N, D, 1);
  const k = host(B, H, N, D, 2);
  const v = host(B, H, N, D, 3);
  const onDevice = (x: { data: Float32Array; shape: number[] }) => Tensor.from(x, { device: 'cuda:0' });

  test('searchReorderPlan: the CPU plan', () => {
    const cpu = searchReorderPlanSync(q, k, grid, { blockSize: 64, sampleRows: 64, seed: 1 });
    const [qd, kd] = [onDevice(q), onDevice(k)];
    const gpu = searchReorderPlanSync(qd, kd, grid, { blockSize: 64, sampleRows: 64, seed: 1 });
    expect(Array.from(gpu.order)).toEqual(Array.from(cpu.order));
    expectClose(gpu.scores.filter((x) => !Number.isNaN(x)), cpu.scores.filter((x) => !Number.isNaN(x)), 1e-6, 1e-4, 'scores');
    qd.dispose();
    kd.dispose();
  });

  test('predictBlockMask: the CPU mask, on the device', () => {
    const cpu = predictBlockMaskSync(q, k, { blockQ: 16, blockK: 8, topk: 0.5, simThreshold: -1 });
    const [qd, kd] = [onDevice(q), onDevice(k)];
    const gpu = predictBlockMaskSync(qd, kd, { blockQ: 16, blockK: 8, topk: 0.5, simThreshold: -1 });
    expect(gpu.device).toBe('cuda:0');
    expect(gpu.kvIndices.device).toBe('cuda:0');
    expect(gpu.toDense().toArray()).toEqual(cpu.toDense().toArray());
    gpu.dispose();
    qd.dispose();
    kd.dispose();
  });

  // f32 inputs run on the tensor cores with precision 'f16' (the CUDA kernel has no f32 path);
  // the CPU runs the same rounding with f32 accumulation.
  test('paroAttention: calibrated and given masks, outputs within f16 tolerance of the CPU', () => {
    const plan = { order: [2, 0, 5] };
    const cpu = paroAttentionSync(q, k, v, { grid, plan, coverage: 0.8, blockQ: 64, precision: 'f16' });
    const [qd, kd, vd] = [onDevice(q), onDevice(k), onDevice(v)];
    const gpu = paroAttentionSync(qd, kd, vd, { grid, plan, coverage: 0.8, blockQ: 64, precision: 'f16' });
    const gm = gpu.mask as BlockMask;
    expect(gm.device).toBe('cuda:0');
    expect(gm.toDense().toArray()).toEqual((cpu.mask as BlockMask).toDense().toArray());
    expect(gpu.out.device).toBe('cuda:0');
    expectClose(gpu.out.toArray(), cpu.out.toArray(), 2e-3, 1e-2, 'out');
    const mask = calibrateBlockMask({ data: Float32Array.from({ length: B * H * 2 * 2 }, (_, i) => (i * 7) % 5), shape: [B, H, 2, 2] }, { density: 0.5 }, { blockQ: 64, seqLens: [N, N] });
    const c2 = paroAttentionSync(q, k, v, { grid, plan, mask, precision: 'f16' });
    const md = mask.to('cuda:0');
    const g2 = paroAttentionSync(qd, kd, vd, { grid, plan, mask: md, precision: 'f16' });
    expectClose(g2.out.toArray(), c2.out.toArray(), 2e-3, 1e-2, 'out (given mask)');
    for (const t of [gpu.out, g2.out, qd, kd, vd]) t.dispose();
    gm.dispose();
    md.dispose();
  });
});
