/**
 * Seeded fuzzing of the public API (test/fuzz/fuzz.js) in a child process, so
 * that a native crash or a hang fails this test instead of killing jest.
 * Reproduce a reported call with `node test/fuzz/fuzz.js --seed S --only I`.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';

const harness = path.join(__dirname, 'fuzz', 'fuzz.js');

interface FuzzSummary {
  calls: number;
  threw: number;
  returned: number;
  skipped: number;
  problems: Array<{ i: number; fn: string; corruption: string; message: string }>;
  problemCount: number;
  distinct: Array<{ fn: string; message: string; count: number; examples: Array<{ i: number; corruption: string }> }>;
}

function fuzz(seed: number, calls: number, timeoutMs: number): { status: number | null; signal: NodeJS.Signals | null; summary?: FuzzSummary; stdout: string; stderr: string } {
  // The child supervises a grandchild that makes the calls: a native crash or a
  // hung call there is reported as a problem (with the call that caused it) and
  // the run goes on; the child itself exits 1 when there are problems. A crash
  // or hang of the child shows up here as a signal / the spawn timeout.
  const r = spawnSync(process.execPath, [harness, '--calls', String(calls), '--seed', String(seed)], {
    encoding: 'utf8',
    timeout: timeoutMs,
    killSignal: 'SIGKILL',
    maxBuffer: 64 * 1024 * 1024,
  });
  const stdout = r.stdout ?? '';
  const line = stdout.trim().split('\n').pop() ?? '';
  let summary: FuzzSummary | undefined;
  try {
    summary = JSON.parse(line) as FuzzSummary;
  } catch {
    summary = undefined;
  }
  return { status: r.status, signal: r.signal, summary, stdout, stderr: r.stderr ?? '' };
}

function report(seed: number, r: ReturnType<typeof fuzz>): string {
  const lines = [`fuzz seed ${seed}: status ${r.status}, signal ${r.signal}`];
  if (r.summary) {
    lines.push(`calls ${r.summary.calls}, threw ${r.summary.threw}, returned ${r.summary.returned}, problems ${r.summary.problemCount}`);
    for (const d of r.summary.distinct) {
      lines.push(`- [${d.count}x] ${d.fn}: ${d.message}`);
      for (const e of d.examples) lines.push(`    repro: node test/fuzz/fuzz.js --seed ${seed} --only ${e.i}   (${e.corruption})`);
    }
  } else {
    lines.push('no JSON summary; stdout tail: ' + r.stdout.slice(-2000));
  }
  lines.push('stderr tail: ' + r.stderr.slice(-3000));
  return lines.join('\n');
}

describe('fuzzing the public API', () => {
  test.each([
    [20240601, 10000],
    [7, 2000],
  ])('seed %i, %i calls: no crash, hang, uncoded error or accepted invalid call', (seed, calls) => {
    const r = fuzz(seed, calls, 150000);
    const msg = report(seed, r);
    expect({ signal: r.signal, status: r.status, msg }).toEqual({ signal: null, status: 0, msg });
    expect(r.summary?.calls).toBe(calls);
    expect({ problems: r.summary?.problems, msg }).toEqual({ problems: [], msg });
  }, 180000);
});
