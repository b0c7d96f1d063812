/**
 * No leaks across many calls: 100,000 calls of one op per family (half of
 * them failing, one in 8 async) in a child process; after a warm-up of
 * 50,000 calls, the least-squares slope of external + ArrayBuffer memory
 * (where leaked host outputs would show) and of RSS (native leaks) must stay
 * small in at least one of three overlapping windows of the remaining calls
 * (a leak grows in all of them; a one-off step of a few MB does not). Allocators and V8 keep growing for a while before they level off
 * (a million failing async calls: +10 MB over the first 400k, +1.8 MB over
 * the next 800k), hence the warm-up and the RSS allowance; the ASan build in
 * CI (scripts/sanitize.sh) finds small native leaks that RSS cannot.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import { rssTest } from './helpers';

type Slopes = Record<string, { rssPerCall: number; externalPerCall: number }>;

function measure(families?: string, retain = false): Slopes {
  const args = ['--expose-gc', path.join(__dirname, 'child', 'leak.js'), path.resolve(__dirname, '..', 'dist', 'lib'), '100000', families ?? ''];
  const r = spawnSync(process.execPath, args, {
    encoding: 'utf8',
    timeout: 600000,
    env: { ...process.env, MALLOC_ARENA_MAX: '2', LEAK_TEST_RETAIN: retain ? '1' : '' },
  });
  expect(r.stderr).toBe('');
  expect(r.signal).toBeNull();
  return JSON.parse(r.stdout) as Slopes;
}

const leaks = (out: Slopes): string[] =>
  Object.entries(out)
    .filter(([, m]) => m.externalPerCall >= 64 || m.rssPerCall >= 512)
    .map(([f, m]) => `${f}: ${m.externalPerCall.toFixed(1)} external and ${m.rssPerCall.toFixed(1)} RSS bytes per call`);

rssTest('100,000 calls per family: memory levels off', () => {
  const out = measure();
  expect(Object.keys(out).sort()).toEqual(['attention', 'blocksparse', 'coverage', 'diversity', 'merge', 'quantize', 'select', 'stc']);
  expect(leaks(out)).toEqual([]);
}, 600000);

rssTest('the measure sees a leak as small as one 160-byte output per successful call', () => {
  // The child keeps every result of the select family alive: 2 × 10 indices and values.
  expect(leaks(measure('select', true))).toEqual([expect.stringMatching(/^select: /)]);
}, 600000);
