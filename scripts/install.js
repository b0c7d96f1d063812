#!/usr/bin/env node
'use strict';
// npm install hook: keep a working binary (prebuilds/ or an earlier build),
// otherwise build the addon from source with cmake-js. CUDA kernels are
// built when nvcc is found (PATH or CUDACXX), CPU-only otherwise.
//   TOKENSIEVE_BUILD_FROM_SOURCE=1   always build
//   TOKENSIEVE_CUDA=ON|OFF|AUTO      passed to CMake (default AUTO)
const { spawnSync } = require('child_process');
const path = require('path');

const root = path.resolve(__dirname, '..');

function binaryLoads() {
  const probe = spawnSync(process.execPath, ['-e', `
    const p = require('node-gyp-build').resolve(${JSON.stringify(root)});
    const m = require(p);
    if (typeof m.attentionScores !== 'function') process.exit(1);`], { cwd: root, stdio: 'ignore' });
  return probe.status === 0;
}

if (!process.env.TOKENSIEVE_BUILD_FROM_SOURCE && binaryLoads()) process.exit(0);

const args = [require.resolve('cmake-js/bin/cmake-js'), 'compile'];
const ninja = spawnSync('ninja', ['--version'], { stdio: 'ignore' });
if (ninja.status === 0) args.push('--generator', 'Ninja');
if (process.env.TOKENSIEVE_CUDA) args.push(`--CDTOKENSIEVE_CUDA=${process.env.TOKENSIEVE_CUDA}`);
const env = { ...process.env };
if (!env.CMAKE_BUILD_PARALLEL_LEVEL) env.CMAKE_BUILD_PARALLEL_LEVEL = String(require('os').cpus().length || 2);
const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit', env });
process.exit(r.status === null ? 1 : r.status);
