/**
 * Finds and loads the native addon, lazily, on first use: importing
 * tokensieve never throws and never prints. If no binary loads, one
 * ERR_LOAD error lists every candidate tried, why it failed, and how to fix it.
 *
 * Search order:
 *  1. `TOKENSIEVE_NATIVE` — an explicit path to a tokensieve.node file;
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
  contextualMerge: ['wait', 'c'],
  kCenter: ['wait', 'k', 'segments', 'metric', 'seed', 'seedIndex'],
  kMedoids: ['wait', 'k', 'segments', 'metric', 'maxIters', 'tol'],
  maxCoverage: ['wait', 'k'],
  mmtokCoverage: ['wait', 'tauTV', 'tauVV', 'alpha'],
  stcScores: ['wait', 'memoryCount', 'memoryMode'],
} as const;

export type ParamOp = keyof typeof PARAM_NAMES;
export type OpParams<Op extends ParamOp> = { readonly [K in (typeof PARAM_NAMES)[Op][number]]: number };

/**
 * An op's scalar parameters for the addon, each in its slot of PARAM_NAMES[op],
 * in a Float64Array of at least 16 (128 bytes: off V8's heap, so the addon
 * reads it without a copy).
 */
export function opParams<Op extends ParamOp>(op: Op, values: OpParams<Op>): Float64Array {
  const names: readonly string[] = PARAM_NAMES[op];
  const p = new Float64Array(Math.max(16, names.length));
  names.forEach((name, i) => {
    p[i] = (values as Record<string, number>)[name];
  });
  return p;
}

interface Attempt {
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
    const mod = tryLoad(path.resolve(explicit), attempts);
    if (mod) return mod;
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
  const lines = attempts.map((a) => `  - ${a.candidate}: ${a.error}`).join('\n');
  throw new TokenSieveError(
    'ERR_LOAD',
    `tokensieve could not load its native addon for ${process.platform}-${process.arch} (Node ${process.version}).\n` +
      `Tried:\n${lines || '  (no candidates found)'}\n` +
      'How to fix:\n' +
      '  - reinstall the package so prebuilds/ is present (npm install tokensieve), or\n' +
      '  - build from source: npm run build:native (needs CMake >= 3.18, a C++17 compiler; nvcc optional), or\n' +
      '  - point TOKENSIEVE_NATIVE at a tokensieve.node built for this platform.\n' +
      'A missing GPU, driver or CUDA library never prevents loading; only a missing or incompatible binary does.',
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
