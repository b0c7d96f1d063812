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
};
