#!/usr/bin/env node
'use strict';
// npm install hook. If a binary of this package loads (the prebuilt one in
// prebuilds/<platform>-<arch>/, or an earlier build in build/), it does
// nothing and prints nothing. Otherwise it prints one line on stderr saying
// that it builds from source and why, then builds with scripts/build.js
// (cmake-js; progress on stderr). CUDA kernels are built when nvcc is found
// (PATH or CUDACXX), CPU-only otherwise.
//   TOKENSIEVE_BUILD_FROM_SOURCE=1   always build
//   TOKENSIEVE_CUDA=ON|OFF|AUTO      passed to CMake (default AUTO)
// npm shows a dependency's install output only with --foreground-scripts
// (or when the script fails).
const { spawnSync } = require('child_process');
const path = require('path');

const root = path.resolve(__dirname, '..');
const platform = `${process.platform}-${process.arch}`;

/**
 * Which binaries of this package load, checked in a child process (a binary
 * that crashes on load must not take the install down): node-gyp-build's
 * search (build/Release, build/Debug, prebuilds/<platform>-<arch>/), then every
 * prebuilds/<platform>-<arch>/*.node. Returns { loaded?: file, tried: [{ candidate, error }] }.
 */
function probe(dir = root) {
  const code = `
    const fs = require('fs'), path = require('path');
    const tried = [];
    const ok = (file) => {
      if (tried.some((t) => t.candidate === file)) return false;
      try {
        const m = require(file);
        if (typeof m.attentionScores !== 'function' || typeof m.info !== 'function') throw new Error('not a tokensieve addon (missing exports)');
        return true;
      } catch (e) { tried.push({ candidate: file, error: String(e.message).split('\\n')[0] }); return false; }
    };
    const done = (r) => { process.stdout.write(JSON.stringify(r)); process.exit(0); };
    const root = ${JSON.stringify(dir)};
    let found;
    try { found = require('node-gyp-build').resolve(root); } catch (e) { /* no candidate: listed below */ }
    if (found && ok(found)) done({ loaded: found, tried });
    const pre = path.join(root, 'prebuilds', process.platform + '-' + process.arch);
    let files = [];
    try { files = fs.readdirSync(pre).filter((f) => f.endsWith('.node')).sort(); } catch {}
    for (const f of files) if (ok(path.join(pre, f))) done({ loaded: path.join(pre, f), tried });
    done({ tried });`;
  const r = spawnSync(process.execPath, ['-e', code], { cwd: dir, encoding: 'utf8', env: { ...process.env, PREBUILDS_ONLY: '' } });
  try {
    return JSON.parse(r.stdout);
  } catch {
    return { tried: [{ candidate: dir, error: `the load check exited with ${r.status ?? r.signal}${r.stderr ? `: ${r.stderr.trim().split('\n')[0]}` : ''}` }] };
  }
}

function truthy(v) {
  return v !== undefined && v !== '' && v !== '0' && String(v).toLowerCase() !== 'false';
}

/** { build: boolean, reason: string }: whether to build from source, and why. */
function decide({ env, probe: p }) {
  if (truthy(env.TOKENSIEVE_BUILD_FROM_SOURCE)) return { build: true, reason: 'TOKENSIEVE_BUILD_FROM_SOURCE is set' };
  if (p.loaded) return { build: false, reason: `${p.loaded} loads` };
  if (p.tried.length === 0) return { build: true, reason: `this package has no prebuilt binary for ${platform}` };
  const t = p.tried[p.tried.length - 1];
  return { build: true, reason: `the prebuilt binary does not load here (${t.candidate}: ${t.error})` };
}

module.exports = { probe, decide };

if (require.main === module) {
  const d = decide({ env: process.env, probe: truthy(process.env.TOKENSIEVE_BUILD_FROM_SOURCE) ? { tried: [] } : probe() });
  if (!d.build) process.exit(0);
  process.stderr.write(
    `tokensieve: building the native addon from source because ${d.reason}; ` +
      'this needs CMake >= 3.18 and a C++17 compiler (CUDA kernels too when nvcc is found) and takes minutes\n',
  );
  // eslint-disable-next-line global-require
  process.exit(require('./build').build());
}
