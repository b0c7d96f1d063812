#!/usr/bin/env node
'use strict';
// `npm pack` / `npm publish` (prepack) and `npm run prebuilds`: puts the
// prebuilt binary into prebuilds/<platform>-<arch>/tokensieve.napi.glibc.node,
// which the loader (node-gyp-build) finds, or fails, so that no tarball ships
// without it.
//
// It reuses build/Release/tokensieve.node when that is up to date (newer than
// every source file), brings it up to date with an incremental build when it
// is not, and builds only when there is none (TOKENSIEVE_CUDA=ON unless set).
// The binary must be the CUDA build (info().build: cudaCompiled, and the
// architectures of CMakeLists.txt's TOKENSIEVE_CUDA_ARCHITECTURES) of this
// version, in Release, with no libcudart dependency; it is copied, stripped,
// and loaded once more from its new place.
//   TOKENSIEVE_PREBUILD_CPU_ONLY=1   accept a CPU-only build (a machine without nvcc)
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const built = path.join(root, 'build', 'Release', 'tokensieve.node');
const outDir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const outName = 'tokensieve.napi.glibc.node';
const SOURCES = ['CMakeLists.txt', 'cpu', 'cuda', 'binding', 'include'];

const log = (s) => process.stderr.write(`tokensieve prepack: ${s}\n`);
function fail(s) {
  log(`error: ${s}`);
  process.exit(1);
}

function newestSource() {
  let newest = { file: '', mtime: 0 };
  const visit = (p) => {
    const st = fs.statSync(p);
    if (st.isDirectory()) for (const f of fs.readdirSync(p)) visit(path.join(p, f));
    else if (st.mtimeMs > newest.mtime) newest = { file: path.relative(root, p), mtime: st.mtimeMs };
  };
  for (const s of SOURCES) visit(path.join(root, s));
  return newest;
}

/** The architectures CMakeLists.txt builds by default, e.g. ['80-real', ..., '90-virtual']. */
function wantedArchs() {
  const m = /set\(TOKENSIEVE_CUDA_ARCHITECTURES\s+"([^"]+)"/.exec(fs.readFileSync(path.join(root, 'CMakeLists.txt'), 'utf8'));
  if (!m) fail('cannot read TOKENSIEVE_CUDA_ARCHITECTURES from CMakeLists.txt');
  return m[1].split(';');
}

/** info() of the binary, read in a child process. */
function nativeInfo(file) {
  const r = spawnSync(process.execPath, ['-e', `
    const m = require(${JSON.stringify(file)});
    if (typeof m.attentionScores !== 'function') throw new Error('not a tokensieve addon');
    process.stdout.write(JSON.stringify(m.info()));`], { encoding: 'utf8' });
  if (r.status !== 0) fail(`${file} does not load: ${(r.stderr || '').trim().split('\n').slice(0, 3).join(' ')}`);
  return JSON.parse(r.stdout);
}

function main() {
  const cpuOnly = !!process.env.TOKENSIEVE_PREBUILD_CPU_ONLY;
  const { build } = require('./build');
  if (!fs.existsSync(built)) {
    const env = { ...process.env };
    if (!env.TOKENSIEVE_CUDA && !cpuOnly) env.TOKENSIEVE_CUDA = 'ON';
    log(`no build/Release/tokensieve.node: building it (TOKENSIEVE_CUDA=${env.TOKENSIEVE_CUDA || 'AUTO'})`);
    if (build({ env }) !== 0) fail('the build failed');
  } else {
    const src = newestSource();
    const age = fs.statSync(built).mtimeMs;
    if (src.mtime > age) {
      log(`build/Release/tokensieve.node is older than ${src.file}: incremental build`);
      if (build() !== 0) fail('the build failed');
    } else {
      log('reusing build/Release/tokensieve.node (newer than every source file)');
    }
  }

  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  const i = nativeInfo(built);
  if (i.version !== pkg.version) fail(`build/Release/tokensieve.node is version ${i.version}, the package ${pkg.version}: run npm run rebuild:native`);
  if (i.buildType !== 'Release') fail(`build/Release/tokensieve.node is a ${i.buildType} build: run npm run rebuild:native`);
  const archs = String(i.cudaArchitectures || '').split(/\s+/).filter(Boolean);
  const missing = wantedArchs().filter((a) => !archs.includes(a));
  if (!i.cudaCompiled || missing.length) {
    const what = i.cudaCompiled ? `compiled for CUDA ${archs.join(' ')} (missing ${missing.join(' ')})` : 'a CPU-only build';
    if (!cpuOnly) {
      fail(
        `build/Release/tokensieve.node is ${what}; the prebuilt binary must be the CUDA build. ` +
          'Rebuild it with nvcc on PATH (TOKENSIEVE_CUDA=ON npm run rebuild:native), ' +
          'or set TOKENSIEVE_PREBUILD_CPU_ONLY=1 to ship a CPU-only binary.',
      );
    }
    log(`warning: shipping ${what} (TOKENSIEVE_PREBUILD_CPU_ONLY is set)`);
  }
  const ldd = spawnSync('ldd', [built], { encoding: 'utf8' });
  if (ldd.status === 0 && /libcudart/.test(ldd.stdout)) fail('build/Release/tokensieve.node depends on libcudart (the CUDA runtime must be linked statically)');

  fs.mkdirSync(outDir, { recursive: true });
  for (const f of fs.readdirSync(outDir)) {
    if (f.endsWith('.node') && f !== outName) {
      log(`removing ${path.join('prebuilds', path.basename(outDir), f)}`);
      fs.unlinkSync(path.join(outDir, f));
    }
  }
  const out = path.join(outDir, outName);
  const tmp = `${out}.tmp`;
  fs.copyFileSync(built, tmp);
  const strip = spawnSync('strip', ['--strip-all', tmp], { stdio: 'inherit' });
  if (strip.status !== 0) {
    fs.unlinkSync(tmp);
    fail('strip --strip-all failed (binutils is needed to pack)');
  }
  fs.renameSync(tmp, out);
  const j = nativeInfo(out);
  // The loader must find it where an installed package has no build/.
  process.env.PREBUILDS_ONLY = '1';
  const resolved = require('node-gyp-build').resolve(root);
  if (path.resolve(resolved) !== out) fail(`node-gyp-build resolves ${resolved}, not ${out}`);
  log(
    `${path.relative(root, out)}: ${(fs.statSync(out).size / 1e6).toFixed(2)} MB stripped (from ${(fs.statSync(built).size / 1e6).toFixed(2)} MB), ` +
      `${j.cudaCompiled ? `CUDA ${Math.floor(j.cudaCompiledVersion / 1000)}.${(j.cudaCompiledVersion % 1000) / 10} archs ${j.cudaArchitectures}` : 'CPU-only'}`,
  );
}

main();
