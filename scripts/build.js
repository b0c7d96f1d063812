#!/usr/bin/env node
'use strict';
// Builds the addon from source with cmake-js into build/Release: used by
// `npm run build:native`, `npm run rebuild:native` (--rebuild), the install
// script and the prepack script.
//
//   TOKENSIEVE_CUDA=ON|OFF|AUTO   CMake's TOKENSIEVE_CUDA. When it is set and
//                                 differs from the value build/ was configured
//                                 with, build/ is rebuilt from scratch (cmake-js
//                                 compile alone would keep the old value).
//                                 Unset: a new build/ uses AUTO, an existing
//                                 one keeps its value.
// Build output (cmake, ninja's [n/N] progress) goes to stderr.
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
const VALUES = ['ON', 'OFF', 'AUTO'];

/** TOKENSIEVE_CUDA as configured in <buildDir>/CMakeCache.txt, or undefined. */
function cachedCuda(buildDir) {
  let text;
  try {
    text = fs.readFileSync(path.join(buildDir, 'CMakeCache.txt'), 'utf8');
  } catch {
    return undefined;
  }
  const m = /^TOKENSIEVE_CUDA:[A-Z]+=(.*)$/m.exec(text);
  return m ? m[1].trim().toUpperCase() : undefined;
}

/**
 * What to run: { mode: 'compile' | 'rebuild', args, reason }.
 * env: the environment; cached: TOKENSIEVE_CUDA in an existing build/ (or
 * undefined); rebuild: a full rebuild was asked for; ninja: Ninja is present.
 */
function plan({ env, cached, rebuild = false, ninja = true }) {
  const want = env.TOKENSIEVE_CUDA ? String(env.TOKENSIEVE_CUDA).trim().toUpperCase() : undefined;
  if (want !== undefined && !VALUES.includes(want)) {
    throw new Error(`TOKENSIEVE_CUDA must be ON, OFF or AUTO, not '${env.TOKENSIEVE_CUDA}'`);
  }
  let mode = rebuild ? 'rebuild' : 'compile';
  let reason = rebuild ? 'a full rebuild was asked for' : cached === undefined ? 'a new build' : 'an incremental build';
  if (!rebuild && want !== undefined && cached !== undefined && cached !== want) {
    mode = 'rebuild';
    reason = `TOKENSIEVE_CUDA=${want} but build/ was configured with ${cached}: rebuilding from scratch`;
  }
  const args = [mode];
  if (ninja) args.push('--generator', 'Ninja');
  if (want !== undefined) args.push(`--CDTOKENSIEVE_CUDA=${want}`);
  return { mode, args, reason, cuda: want ?? cached ?? 'AUTO' };
}

function hasNinja() {
  return spawnSync('ninja', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Runs the build; returns the exit status. Output goes to stderr. */
function build({ rebuild = false, env = process.env, log = (s) => process.stderr.write(`${s}\n`) } = {}) {
  const p = plan({ env, cached: cachedCuda(path.join(root, 'build')), rebuild, ninja: hasNinja() });
  log(`tokensieve: cmake-js ${p.args.join(' ')} (${p.reason}; CUDA kernels: ${p.cuda})`);
  const childEnv = { ...env };
  if (!childEnv.CMAKE_BUILD_PARALLEL_LEVEL) childEnv.CMAKE_BUILD_PARALLEL_LEVEL = String(os.cpus().length || 2);
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [require.resolve('cmake-js/bin/cmake-js'), ...p.args], {
    cwd: root,
    // cmake and ninja write progress to stdout: send it to stderr, so that a
    // caller's stdout stays clean and npm shows it as the script's log.
    stdio: ['ignore', 2, 2],
    env: childEnv,
  });
  const status = r.status === null ? 1 : r.status;
  const secs = Math.round((Date.now() - t0) / 1000);
  log(status === 0 ? `tokensieve: built build/Release/tokensieve.node in ${secs} s` : `tokensieve: the build failed after ${secs} s (exit ${status})`);
  return status;
}

module.exports = { plan, cachedCuda, build };

if (require.main === module) {
  try {
    process.exit(build({ rebuild: process.argv.includes('--rebuild') }));
  } catch (e) {
    process.stderr.write(`tokensieve: ${e.message}\n`);
    process.exit(1);
  }
}
