#!/usr/bin/env node
'use strict';
// prebuildify drives node-gyp (`rebuild --target=... --release`); this stands
// in for it and builds with cmake-js instead, into build/Release, which
// prebuildify then strips and copies to prebuilds/<platform>-<arch>/.
// A full rebuild by default; TOKENSIEVE_PREBUILD_REUSE=1 reuses an up-to-date
// build/ (CI builds once, then packages it).
const { spawnSync } = require('child_process');
const path = require('path');

const root = path.resolve(__dirname, '..');
const mode = process.env.TOKENSIEVE_PREBUILD_REUSE ? 'compile' : 'rebuild';
const args = [require.resolve('cmake-js/bin/cmake-js'), mode];
if (spawnSync('ninja', ['--version'], { stdio: 'ignore' }).status === 0) args.push('--generator', 'Ninja');
if (process.env.TOKENSIEVE_CUDA) args.push(`--CDTOKENSIEVE_CUDA=${process.env.TOKENSIEVE_CUDA}`);
const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
