/**
 * Finds and loads the native addon, lazily, on first use: importing
 * tokensieve never throws and never prints. If no binary loads, one
 * ERR_LOAD error lists every candidate tried, why it failed, and how to fix it.
 *
 * Search order:
 *  1. `TOKENSIEVE_NATIVE` — an explicit path to a tokensieve.node file
 *     (relative paths from the working directory). When it is set, nothing
 *     else is tried: a missing file or one that does not load is ERR_LOAD
 *     naming that path, never a silent fallback to another binary;
 *  2. node-gyp-build's search from the package root (honours
 *     `TOKENSIEVE_PREBUILD` and `PREBUILDS_ONLY`): build/Release,
 *     build/Debug, then prebuilds/<platform>-<arch>/;
 *  3. every prebuilds/<platform>-<arch>/*.node, in case a stale local build
 *     shadowed a working prebuilt binary.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { NativeModule } from '../typings/native';
import { TokenSieveError } from './errors';

/** The package root: dist/lib/native.js and lib/native.ts are both two levels down. */
export const packageRoot: string = (() => {
  let dir = __dirname;
  for (let i = 0; i < 4; i++) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'CMakeLists.txt'))) return dir;
    dir = path.dirname(dir);
  }
  return path.resolve(__dirname, '..', '..');
})();

/**
 * Every op's scalar parameters, by name, in the order of its params array:
 * binding/params.h lists the same slots (the addon's paramNames() returns
 * them; test/native-params.test.ts compares). `wait` is slot 0 of every op.
 */
export const PARAM_NAMES = {
  attentionScores: ['wait', 'scale', 'causal', 'causalOffset', 'queryReduce', 'headReduce', 'keyBegin', 'keyEnd', 'accumulate',
    'checkFinite', 'numQueryRows', 'precision', 'qBlock', 'kBlock', 'smoothK'],
  reduceAttention: ['wait', 'queryReduce', 'headReduce', 'keyBegin', 'keyEnd', 'accumulate', 'checkFinite', 'numQueryRows'],
  topk: ['wait', 'k', 'orderByScore'],
  gather: ['wait', 'checkIndices'],
  quantize: ['wait', 'bits', 'granularity', 'block', 'pad', 'smooth', 'checkFinite'],
  dequantize: ['wait', 'bits', 'granularity', 'block', 'pad', 'addMean'],
  bipartiteMatch: ['wait', 'r', 'protectCls', 'protectDistill', 'precision'],
  merge: ['wait', 'nOut', 'mode'],
  contextualMerge: ['wait', 'c', 'keepSpec'],
  kCenter: ['wait', 'k', 'segments', 'metric', 'seed', 'seedIndex'],
  kMedoids: ['wait', 'k', 'segments', 'metric', 'maxIters', 'tol'],
  maxCoverage: ['wait', 'k'],
  mmtokCoverage: ['wait', 'tauTV', 'tauVV', 'alpha'],
  stcScores: ['wait', 'memoryCount', 'memoryMode'],
  blockSparseAttention: ['wait', 'scale', 'precision', 'dense', 'blockQ', 'blockK', 'checkFinite'],
  blockAttentionMass: ['wait', 'scale', 'blockQ', 'blockK', 'numQueryRows', 'checkFinite'],
  blockPool: ['wait', 'block'],
  applyReorder: ['wait', 'inverse'],
} as const;

export type ParamOp = keyof typeof PARAM_NAMES;
export type OpParams<Op extends ParamOp> = { readonly [K in (typeof PARAM_NAMES)[Op][number]]: number };

// Parameter blocks of up to 16 come from a ring made once (the addon reads
// them during the call: see lib/tensor.ts, descriptorRing).
const PARAMS_RING = 16;
const paramsRing = Array.from({ length: PARAMS_RING }, () => new Float64Array(16));
let nextParams = 0;

/**
 * An op's scalar parameters for the addon, each in its slot of PARAM_NAMES[op],
 * in a Float64Array of at least 16 (128 bytes: off V8's heap, so the addon
 * reads it without a copy), zero where the op has no parameter.
 */
export function opParams<Op extends ParamOp>(op: Op, values: OpParams<Op>): Float64Array {
  const names: readonly string[] = PARAM_NAMES[op];
  let p: Float64Array;
  if (names.length <= 16) {
    p = paramsRing[nextParams].fill(0);
    nextParams = (nextParams + 1) % PARAMS_RING;
  } else {
    p = new Float64Array(names.length);
  }
  names.forEach((name, i) => {
    p[i] = (values as Record<string, number>)[name];
  });
  return p;
}

export interface Attempt {
  candidate: string;
  error: string;
}

let loaded: NativeModule | undefined;
let loadedFrom: string | undefined;
let failure: TokenSieveError | undefined;

function tryLoad(file: string, attempts: Attempt[]): NativeModule | undefined {
  if (attempts.some((a) => a.candidate === file)) return undefined;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require(file) as NativeModule;
    if (typeof mod.attentionScores !== 'function' || typeof mod.info !== 'function') {
      attempts.push({ candidate: file, error: 'loaded, but it is not a tokensieve addon (missing exports)' });
      return undefined;
    }
    loadedFrom = file;
    return mod;
  } catch (e) {
    attempts.push({ candidate: file, error: (e as Error).message.split('\n')[0] });
    return undefined;
  }
}

function prebuildCandidates(root: string): string[] {
  const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  try {
    return fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.node'))
      .sort()
      .map((f) => path.join(dir, f));
  } catch {
    return [];
  }
}

function load(): NativeModule {
  const attempts: Attempt[] = [];
  const explicit = process.env.TOKENSIEVE_NATIVE;
  if (explicit) {
    const file = path.resolve(explicit);
    if (!fs.existsSync(file)) {
      throw new TokenSieveError(
        'ERR_LOAD',
        `TOKENSIEVE_NATIVE is set to ${explicit}, but ${file} does not exist. ` +
          'When TOKENSIEVE_NATIVE is set, tokensieve loads that file and nothing else: ' +
          'point it at an existing tokensieve.node, or unset it to use the package\'s own binary.',
      );
    }
    const mod = tryLoad(file, attempts);
    if (mod) return mod;
    const a = attempts[attempts.length - 1];
    throw new TokenSieveError(
      'ERR_LOAD',
      `TOKENSIEVE_NATIVE is set to ${explicit}, but ${file} does not load: ${a ? a.error : 'unknown error'}. ` +
        'When TOKENSIEVE_NATIVE is set, tokensieve loads that file and nothing else: ' +
        'point it at a tokensieve.node built for this platform, or unset it to use the package\'s own binary.',
    );
  } else {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const nodeGypBuild = require('node-gyp-build') as { resolve(dir: string): string };
      const found = nodeGypBuild.resolve(packageRoot);
      const mod = tryLoad(found, attempts);
      if (mod) return mod;
    } catch (e) {
      attempts.push({ candidate: `node-gyp-build search in ${packageRoot}`, error: (e as Error).message.split('\n')[0] });
    }
    for (const file of prebuildCandidates(packageRoot)) {
      const mod = tryLoad(file, attempts);
      if (mod) return mod;
    }
  }
  throw new TokenSieveError('ERR_LOAD', loadFailureMessage(attempts, packageRoot));
}

/** The ERR_LOAD message when the package's own binaries do not load: what was tried, why, and what fixes it. */
export function loadFailureMessage(attempts: Attempt[], root: string): string {
  const platform = `${process.platform}-${process.arch}`;
  const lines = attempts.map((a) => `  - ${a.candidate}: ${a.error}`).join('\n');
  const prebuilt = prebuildCandidates(root);
  const installed = root.split(path.sep).includes('node_modules');
  const fixes: string[] = [];
  if (prebuilt.length === 0) {
    fixes.push(
      platform === 'linux-x64'
        ? 'this copy of the package has no prebuilt binary for linux-x64 (prebuilds/linux-x64/ is missing: it was packed without its prepack step), so it must be built from source;'
        : `there is no prebuilt binary for ${platform} (tokensieve ships one for linux-x64 only), so it must be built from source;`,
    );
  } else {
    fixes.push(`the prebuilt binary for ${platform} did not load (see above; it needs glibc >= 2.34 and libstdc++), so it must be built from source;`);
  }
  if (installed) {
    fixes.push(
      'build it: `npm rebuild tokensieve` in your project (runs the install script, which builds when no binary loads;',
      '    add --foreground-scripts to see the build; set TOKENSIEVE_BUILD_FROM_SOURCE=1 to force it).',
      '    A project installed with --ignore-scripts (or ignore-scripts=true in .npmrc) never ran it.',
    );
  } else {
    fixes.push('build it: `npm run build:native` in this clone (`npm install` does it too when no binary loads);');
  }
  fixes.push(
    'building needs CMake >= 3.18 and a C++17 compiler (nvcc optional, for the CUDA kernels);',
    'or set TOKENSIEVE_NATIVE to the path of a tokensieve.node built for this platform.',
  );
  return (
    `tokensieve could not load its native addon for ${platform} (Node ${process.version}).\n` +
    `Tried:\n${lines || '  (no candidates found)'}\n` +
    `How to fix:\n${fixes.map((f) => (f.startsWith('    ') ? f : `  - ${f}`)).join('\n')}\n` +
    'A missing GPU, driver or CUDA library never prevents loading; only a missing or incompatible binary does.'
  );
}

/** The native module; throws ERR_LOAD (the same error every time) when it cannot be loaded. */
export function native(): NativeModule {
  if (loaded) return loaded;
  if (failure) throw failure;
  try {
    loaded = load();
    return loaded;
  } catch (e) {
    failure = e as TokenSieveError;
    throw failure;
  }
}

/** The path of the loaded binary (undefined before the first use). */
export function nativePath(): string | undefined {
  return loadedFrom;
}
