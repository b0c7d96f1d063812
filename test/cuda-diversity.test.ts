/**
 * CUDA path of the diversity family. The CUDA kernels are not written yet:
 * every entry point must refuse device tensors with ERR_UNSUPPORTED (never
 * compute a wrong answer), and the host path stays the reference. Skipped,
 * with the reason printed, when no usable CUDA device is present. When the
 * kernels land, these become CPU-vs-CUDA parity tests.
 */
import { kCenterSync, kMedoidsSync, maxCoverage, maxCoverageSync, mmtokCoverageSync, stcScoresSync, TokenSieveError } from '../lib';
import { describeCuda, expectCode, expectReject, makeTensor, randn } from './helpers';

const dev = 'cuda:0';

describeCuda('CUDA diversity kernels (not implemented: ERR_UNSUPPORTED)', () => {
  test('every entry point refuses device tensors with a clear message', async () => {
    const x = makeTensor(randn(2 * 64 * 16, 1), [2, 64, 16]).t.to(dev);
    try {
      expectCode(() => kCenterSync(x, 8), TokenSieveError, 'ERR_UNSUPPORTED', /no CUDA kernel yet/);
      expectCode(() => kMedoidsSync(x, 8), TokenSieveError, 'ERR_UNSUPPORTED', /no CUDA kernel yet/);
      expectCode(() => maxCoverageSync(x, 8), TokenSieveError, 'ERR_UNSUPPORTED', /no CUDA kernel yet/);
      await expectReject(maxCoverage(x, 8), TokenSieveError, 'ERR_UNSUPPORTED');
      expectCode(() => mmtokCoverageSync({ text: x, vision: x }), TokenSieveError, 'ERR_UNSUPPORTED', /no CUDA kernel yet/);
      expectCode(() => stcScoresSync(x), TokenSieveError, 'ERR_UNSUPPORTED', /no CUDA kernel yet/);
      // Validation still runs first on the device path.
      expectCode(() => kCenterSync(x, 65), RangeError, 'ERR_RANGE');
    } finally {
      x.dispose();
    }
  });
});
