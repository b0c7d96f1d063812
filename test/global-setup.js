// Compiles lib/ to dist/ (incrementally) so tests that start child processes
// or worker_threads can load the package as a user would.
const { execFileSync } = require('child_process');
const path = require('path');

module.exports = async () => {
  const root = path.resolve(__dirname, '..');
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.json')], {
    cwd: root,
    stdio: 'inherit',
    // Under scripts/sanitize.sh: tsc never loads tokensieve, and exits without
    // tearing V8 down, so LeakSanitizer would only report V8's own heap pages.
    env: process.env.ASAN_OPTIONS ? { ...process.env, ASAN_OPTIONS: `${process.env.ASAN_OPTIONS}:detect_leaks=0` } : process.env,
  });
  // Say once, up front, why the CUDA suites will be skipped (the summary
  // reporter repeats it beside the counts). Asked in a child process so that
  // jest's own process never loads the addon.
  let reason = '';
  try {
    const out = execFileSync(process.execPath, ['-e', `const c = require(${JSON.stringify(path.join(root, 'dist', 'lib'))}).info().cuda; process.stdout.write(JSON.stringify({ available: c.available, reason: c.reason }))`], {
      cwd: root,
      encoding: 'utf8',
      timeout: 60000,
      env: process.env.ASAN_OPTIONS ? { ...process.env, ASAN_OPTIONS: `${process.env.ASAN_OPTIONS}:detect_leaks=0` } : process.env,
    });
    const c = JSON.parse(out);
    if (!c.available) reason = c.reason || 'CUDA unavailable';
  } catch (e) {
    reason = `the addon could not be asked (${String((e && e.message) || e).split('\n')[0]})`;
  }
  if (reason) {
    process.env.TOKENSIEVE_CUDA_SKIP_REASON = reason;
    process.stdout.write(`\nCUDA suites (test/cuda-*.test.ts) are skipped on this machine: ${reason}.\nEverything else runs; nothing needs doing for CPU use.\n\n`);
  }
};
