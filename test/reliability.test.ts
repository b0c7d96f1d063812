/**
 * What a hostile caller can do to the library: take memory away from a
 * running async call, pass huge or lying shapes, break views. Crashes are
 * caught by running such calls in a child process.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';

const dist = path.resolve(__dirname, '..', 'dist', 'lib');

describe('memory taken away while an async call runs', () => {
  // Node-API can neither pin an ArrayBuffer nor see it detached, so async
  // calls stage host data in ArrayBuffers (binding/common.cc). Before they
  // did, shrinking a resizable input buffer crashed the process (SIGSEGV) and
  // a detached output failed without a code.
  for (const mode of ['transfer', 'resize'] as const) {
    test(`every async entry point survives its buffers being ${mode === 'transfer' ? 'transferred away (and freed)' : 'shrunk to 0'} mid-call`, () => {
      const r = spawnSync(process.execPath, ['--expose-gc', path.join(__dirname, 'child', 'detach.js'), dist, mode], { encoding: 'utf8', timeout: 120000 });
      expect(r.signal).toBeNull();
      expect(r.stderr).toBe('');
      const out = JSON.parse(r.stdout) as Record<string, string>;
      // Single-kernel calls read a staged copy: the result is the untouched data's.
      for (const op of ['attentionScores', 'reduceAttention', 'topk', 'gather', 'quantize', 'bipartiteSoftMatch', 'merge', 'contextualMerge',
        'kCenter', 'kMedoids', 'maxCoverage', 'mmtokCoverage', 'stcScores', 'fasterVLM', 'divPrune']) {
        expect(`${op}: ${out[op]}`).toBe(`${op}: equal`);
      }
      // A user-provided output taken away cannot receive the result.
      expect(out['attentionScores out']).toBe('rejected ERR_RANGE');
      // A method that reads its input again in a later step finds it gone.
      expect(out.tomesd).toBe('rejected ERR_RANGE');
    });
  }
});
