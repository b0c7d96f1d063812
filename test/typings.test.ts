/**
 * The published typings (dist/lib/index.d.ts, built by global-setup) compile
 * for a consumer under `tsc --strict` with no `--target` (so no `#private`
 * fields, and the libs the typings need are referenced by them), as
 * CommonJS and as an ES module under NodeNext resolution.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.resolve(__dirname, '..');
const tsc = require.resolve('typescript/bin/tsc');

const consumer = `
import { fasterVLM, fasterVLMSync, gather, hiPrune, isTokenSieveError, Tensor, TokenSieveError, toMe, StreamPruner, bipartiteSoftMatchSync, info } from 'tokensieve';
import type { AttentionSource, FasterVLMOptions, HiPruneOptions, TokenSieveAnyError } from 'tokensieve';

async function run(): Promise<number[]> {
  const q = { data: new Float32Array(2 * 5 * 4), shape: [1, 2, 5, 4] };
  const src: AttentionSource = { q, k: q };
  const opts: FasterVLMOptions = { keep: 2, tokenIndices: true };
  const { indices } = await fasterVLM(src, opts);
  const features = Tensor.from({ data: new Float32Array(5 * 3), shape: [1, 5, 3] });
  const kept: Tensor = await gather(features, indices);
  const h: HiPruneOptions = { keep: 2, retention: undefined, ratio: undefined };
  await hiPrune(src, src, h);
  const plan = bipartiteSoftMatchSync(features, 1);
  plan.dispose();
  const tome = toMe({ layers: 2, r: 1 });
  void tome.layer;
  new StreamPruner({ tokensPerFrame: 1 }).reset();
  try {
    fasterVLMSync(src, { keep: 99 });
  } catch (e: unknown) {
    if (isTokenSieveError(e)) {
      const narrowed: TokenSieveAnyError = e;
      void narrowed.code;
    }
    if (e instanceof TokenSieveError) void e.code;
  }
  void info().summary;
  return kept.toArray();
}
void run();
`;

function compile(dir: string, args: string[]): string {
  try {
    execFileSync(process.execPath, [tsc, ...args], { cwd: dir, encoding: 'utf8', stdio: 'pipe' });
    return '';
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    return `${err.stdout ?? ''}${err.stderr ?? ''}` || err.message;
  }
}

describe('typings compile for consumers', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tokensieve-consumer-'));
    fs.mkdirSync(path.join(dir, 'node_modules'));
    fs.symlinkSync(root, path.join(dir, 'node_modules', 'tokensieve'), 'dir');
    fs.writeFileSync(path.join(dir, 'cjs.ts'), consumer);
    fs.writeFileSync(path.join(dir, 'esm.mts'), consumer);
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('no #private in the emitted declarations', () => {
    const walk = (d: string): string[] =>
      fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : e.name.endsWith('.d.ts') ? [path.join(d, e.name)] : []));
    const offenders = walk(path.join(root, 'dist', 'lib')).filter((f) => fs.readFileSync(f, 'utf8').includes('#private'));
    expect(offenders).toEqual([]);
  });

  test('CommonJS consumer: tsc --strict --noEmit (no --target)', () => {
    expect(compile(dir, ['--strict', '--noEmit', 'cjs.ts'])).toBe('');
  }, 120000);

  test('ES module consumer: tsc --strict --noEmit --module nodenext', () => {
    expect(compile(dir, ['--strict', '--noEmit', '--module', 'nodenext', '--moduleResolution', 'nodenext', 'esm.mts'])).toBe('');
  }, 120000);
});
