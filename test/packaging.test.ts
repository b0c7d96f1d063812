/**
 * Packaging and first use: the loader's TOKENSIEVE_NATIVE contract and its
 * ERR_LOAD advice, the install script's decision (build from source only when
 * no binary loads), the build script's TOKENSIEVE_CUDA handling, and the CLI
 * (the library never imports its benchmarks).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadFailureMessage } from '../lib/native';

const root = path.resolve(__dirname, '..');
const dist = path.join(root, 'dist', 'lib', 'index.js');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const install = require('../scripts/install.js') as {
  decide(a: { env: Record<string, string | undefined>; probe: { loaded?: string; tried: { candidate: string; error: string }[] } }): { build: boolean; reason: string };
  probe(dir?: string): { loaded?: string; tried: { candidate: string; error: string }[] };
};
// eslint-disable-next-line @typescript-eslint/no-require-imports
const build = require('../scripts/build.js') as {
  plan(a: { env: Record<string, string | undefined>; cached?: string; rebuild?: boolean; ninja?: boolean }): { mode: string; args: string[]; reason: string; cuda: string };
  cachedCuda(dir: string): string | undefined;
};

function runNode(code: string, env: Record<string, string | undefined> = {}, cwd = root) {
  const r = spawnSync(process.execPath, ['-e', code], { env: { ...process.env, ...env }, encoding: 'utf8', cwd, timeout: 120000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function tmpDir(name: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `tokensieve-${name}-`));
}

describe('TOKENSIEVE_NATIVE', () => {
  const tryInfo = `const t = require(${JSON.stringify(dist)});
    try { const i = t.info(); process.stdout.write(JSON.stringify({ loaded: i.binary })); }
    catch (e) { process.stdout.write(JSON.stringify({ code: e.code, name: e.name, message: e.message })); }`;

  test('a missing file is ERR_LOAD naming the path, with no fallback to the package binary', () => {
    const missing = path.join(os.tmpdir(), `tokensieve-missing-${process.pid}`, 'tokensieve.node');
    const r = runNode(tryInfo, { TOKENSIEVE_NATIVE: missing });
    expect(r.status).toBe(0);
    const e = JSON.parse(r.stdout);
    expect(e.loaded).toBeUndefined();
    expect(e.code).toBe('ERR_LOAD');
    expect(e.name).toBe('TokenSieveError');
    expect(e.message).toContain(missing);
    expect(e.message).toMatch(/does not exist/);
    expect(e.message).toMatch(/TOKENSIEVE_NATIVE/);
  });

  test('a relative path is resolved from the working directory', () => {
    const r = runNode(tryInfo, { TOKENSIEVE_NATIVE: 'no/such/tokensieve.node' }, os.tmpdir());
    const e = JSON.parse(r.stdout);
    expect(e.code).toBe('ERR_LOAD');
    expect(e.message).toContain(path.join(fs.realpathSync(os.tmpdir()), 'no/such/tokensieve.node'));
  });

  test('a file that does not load is ERR_LOAD naming it and why, with no fallback', () => {
    const bogus = path.join(os.tmpdir(), `tokensieve-bogus-${process.pid}.node`);
    fs.writeFileSync(bogus, 'not an ELF file');
    try {
      const e = JSON.parse(runNode(tryInfo, { TOKENSIEVE_NATIVE: bogus }).stdout);
      expect(e.loaded).toBeUndefined();
      expect(e.code).toBe('ERR_LOAD');
      expect(e.message).toContain(bogus);
      expect(e.message).toMatch(/does not load: .*(invalid ELF header|file too short)/);
    } finally {
      fs.unlinkSync(bogus);
    }
  });

  test('an existing binary named by TOKENSIEVE_NATIVE is the one loaded', () => {
    const found = JSON.parse(runNode(tryInfo).stdout).loaded as string;
    const copy = path.join(tmpDir('native'), 'tokensieve.node');
    fs.copyFileSync(found, copy);
    try {
      expect(JSON.parse(runNode(tryInfo, { TOKENSIEVE_NATIVE: copy }).stdout).loaded).toBe(copy);
    } finally {
      fs.rmSync(path.dirname(copy), { recursive: true, force: true });
    }
  });
});

describe('ERR_LOAD advice when the package has no loadable binary', () => {
  const tried = [{ candidate: 'node-gyp-build search in /x', error: 'No native build was found for platform=linux arch=x64' }];

  test('an installed package: no prebuilt binary for this platform, rebuild with scripts enabled, or TOKENSIEVE_NATIVE', () => {
    const dir = path.join(tmpDir('installed'), 'node_modules', 'tokensieve');
    fs.mkdirSync(dir, { recursive: true });
    const m = loadFailureMessage(tried, dir);
    expect(m).toContain(tried[0].error);
    expect(m).toMatch(/no prebuilt binary for/);
    expect(m).toMatch(/npm rebuild tokensieve/);
    expect(m).toMatch(/--ignore-scripts/);
    expect(m).toMatch(/TOKENSIEVE_NATIVE/);
    expect(m).not.toMatch(/npm install tokensieve/);
  });

  test('a prebuilt binary that does not load is named as such', () => {
    const dir = path.join(tmpDir('installed'), 'node_modules', 'tokensieve');
    const pre = path.join(dir, 'prebuilds', `${process.platform}-${process.arch}`);
    fs.mkdirSync(pre, { recursive: true });
    fs.writeFileSync(path.join(pre, 'tokensieve.napi.glibc.node'), '');
    expect(loadFailureMessage(tried, dir)).toMatch(/prebuilt binary for .* did not load .*glibc >= 2\.34/);
  });

  test('a clone: npm run build:native', () => {
    const m = loadFailureMessage(tried, tmpDir('clone'));
    expect(m).toMatch(/npm run build:native/);
    expect(m).toMatch(/CMake >= 3\.18/);
  });

  test('the whole path: a copy of the package with no binary throws that advice on first use', () => {
    const dir = path.join(tmpDir('nobinary'), 'node_modules', 'tokensieve');
    fs.mkdirSync(dir, { recursive: true });
    fs.cpSync(path.join(root, 'dist', 'lib'), path.join(dir, 'dist', 'lib'), { recursive: true });
    for (const f of ['package.json', 'CMakeLists.txt']) fs.copyFileSync(path.join(root, f), path.join(dir, f));
    const r = runNode(
      `const t = require(${JSON.stringify(dir)}); try { t.info(); } catch (e) { process.stdout.write(JSON.stringify({ code: e.code, message: e.message })); }`,
      { TOKENSIEVE_NATIVE: undefined, NODE_PATH: path.join(root, 'node_modules') },
      path.dirname(path.dirname(dir)),
    );
    const e = JSON.parse(r.stdout);
    expect(e.code).toBe('ERR_LOAD');
    expect(e.message).toMatch(/No native build was found/);
    expect(e.message).toMatch(/no prebuilt binary for/);
    expect(e.message).toMatch(/npm rebuild tokensieve/);
  });
});

describe('install script: builds from source only when no binary loads', () => {
  test('a binary that loads: no build', () => {
    const d = install.decide({ env: {}, probe: { loaded: '/p/prebuilds/linux-x64/tokensieve.napi.glibc.node', tried: [] } });
    expect(d.build).toBe(false);
  });

  test('no prebuilt binary for this platform: build, and say so', () => {
    const d = install.decide({ env: {}, probe: { tried: [] } });
    expect(d).toEqual({ build: true, reason: expect.stringMatching(/no prebuilt binary for/) });
  });

  test('a prebuilt binary that does not load: build, and say why', () => {
    const d = install.decide({ env: {}, probe: { tried: [{ candidate: '/p/x.node', error: "GLIBC_2.34' not found" }] } });
    expect(d.build).toBe(true);
    expect(d.reason).toMatch(/does not load.*\/p\/x\.node.*GLIBC_2\.34/);
  });

  test('TOKENSIEVE_BUILD_FROM_SOURCE forces a build; 0 does not', () => {
    const loads = { loaded: '/p/x.node', tried: [] };
    expect(install.decide({ env: { TOKENSIEVE_BUILD_FROM_SOURCE: '1' }, probe: loads })).toEqual({ build: true, reason: 'TOKENSIEVE_BUILD_FROM_SOURCE is set' });
    expect(install.decide({ env: { TOKENSIEVE_BUILD_FROM_SOURCE: '0' }, probe: loads }).build).toBe(false);
  });

  test('the probe finds this checkout\'s binary, and nothing in an empty package', () => {
    expect(install.probe(root).loaded).toMatch(/\.node$/);
    const empty = tmpDir('probe');
    const p = install.probe(empty);
    expect(p.loaded).toBeUndefined();
  });

  test('run in a package with no binary, it prints one line saying it builds and why (stderr), then builds', () => {
    // A copy of the scripts only: the build fails at once (no CMakeLists.txt), which is enough to see the line.
    const dir = tmpDir('install');
    fs.mkdirSync(path.join(dir, 'scripts'));
    for (const f of ['install.js', 'build.js']) fs.copyFileSync(path.join(root, 'scripts', f), path.join(dir, 'scripts', f));
    const r = spawnSync(process.execPath, [path.join(dir, 'scripts', 'install.js')], {
      cwd: dir,
      encoding: 'utf8',
      env: { ...process.env, NODE_PATH: path.join(root, 'node_modules') },
      timeout: 120000,
    });
    expect(r.stdout).toBe('');
    const lines = r.stderr.split('\n');
    expect(lines[0]).toMatch(/^tokensieve: building the native addon from source because this package has no prebuilt binary for .*; this needs CMake/);
    expect(r.stderr).toMatch(/tokensieve: cmake-js compile/);
  });
});

describe('build script: TOKENSIEVE_CUDA', () => {
  test('unset: a new build/ uses AUTO, an existing one keeps its value', () => {
    expect(build.plan({ env: {}, cached: undefined })).toMatchObject({ mode: 'compile', cuda: 'AUTO' });
    const p = build.plan({ env: {}, cached: 'OFF' });
    expect(p).toMatchObject({ mode: 'compile', cuda: 'OFF' });
    expect(p.args.some((a) => a.startsWith('--CDTOKENSIEVE_CUDA'))).toBe(false);
  });

  test('set and different from build/: a rebuild with the new value (cmake-js compile would ignore it)', () => {
    const p = build.plan({ env: { TOKENSIEVE_CUDA: 'off' }, cached: 'AUTO' });
    expect(p.mode).toBe('rebuild');
    expect(p.args).toContain('--CDTOKENSIEVE_CUDA=OFF');
    expect(p.reason).toMatch(/configured with AUTO/);
  });

  test('set and equal, or a new build/: compile with it', () => {
    expect(build.plan({ env: { TOKENSIEVE_CUDA: 'OFF' }, cached: 'OFF' })).toMatchObject({ mode: 'compile', args: ['compile', '--generator', 'Ninja', '--CDTOKENSIEVE_CUDA=OFF'] });
    expect(build.plan({ env: { TOKENSIEVE_CUDA: 'ON' }, cached: undefined, ninja: false }).args).toEqual(['compile', '--CDTOKENSIEVE_CUDA=ON']);
  });

  test('a bad value is refused', () => {
    expect(() => build.plan({ env: { TOKENSIEVE_CUDA: 'yes' } })).toThrow(/ON, OFF or AUTO/);
  });

  test('reads the configured value from CMakeCache.txt', () => {
    const dir = tmpDir('cache');
    expect(build.cachedCuda(dir)).toBeUndefined();
    fs.writeFileSync(path.join(dir, 'CMakeCache.txt'), 'FOO:BOOL=ON\nTOKENSIEVE_CUDA:STRING=off\n');
    expect(build.cachedCuda(dir)).toBe('OFF');
  });

  test('npm run build:native goes through the script that honours it', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
    expect(pkg.scripts['build:native']).toBe('node scripts/build.js');
    expect(pkg.scripts['rebuild:native']).toBe('node scripts/build.js --rebuild');
    expect(pkg.files).toEqual(expect.arrayContaining(['scripts/install.js', 'scripts/build.js', 'LICENSE', 'prebuilds/']));
  });
});

describe('CLI', () => {
  function tsFiles(dir: string): string[] {
    return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? tsFiles(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : [],
    );
  }

  test('no file in lib/ imports bench/', () => {
    const offenders = tsFiles(path.join(root, 'lib')).filter((f) =>
      /(from\s+|require\(\s*|import\(\s*)['"](\.\.?\/)+bench(\/|['"])/.test(fs.readFileSync(f, 'utf8')),
    );
    expect(offenders).toEqual([]);
  });

  test('loading the library and its CLI module loads nothing from dist/bench', () => {
    const r = runNode(`require(${JSON.stringify(dist)}); require(${JSON.stringify(path.join(root, 'dist', 'lib', 'cli.js'))});
      process.stdout.write(JSON.stringify(Object.keys(require.cache).filter((f) => f.includes('/bench/'))));`);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([]);
  });

  test('bin/tokensieve.js runs bench from its own entry, and info', () => {
    const bin = path.join(root, 'bin', 'tokensieve.js');
    const help = spawnSync(process.execPath, [bin, 'bench', '--help'], { encoding: 'utf8', timeout: 60000 });
    expect(help.status).toBe(0);
    expect(help.stdout + help.stderr).toMatch(/--filter/);
    const info = spawnSync(process.execPath, [bin, 'info', '--json'], { encoding: 'utf8', timeout: 60000 });
    expect(info.status).toBe(0);
    expect(JSON.parse(info.stdout).version).toBeDefined();
  });
});

describe('CI: the README quick start, as pasted', () => {
  test('.ci/readme-quickstart.js writes the first ts/js block under "## Quick start" unchanged', () => {
    const dir = tmpDir('quickstart');
    const block = "import { topk } from 'tokensieve';\nconst r = await topk({ data: Float32Array.of(1, 3, 2), shape: [3] }, 1);\nconsole.log(r.indices.toArray());\n";
    fs.writeFileSync(
      path.join(dir, 'README.md'),
      `# x\n\n\`\`\`ts\nnot this\n\`\`\`\n\n## Quick start\n\n\`\`\`sh\nnpm install tokensieve\n\`\`\`\n\n\`\`\`ts\n${block}\`\`\`\n\n## Next\n\n\`\`\`ts\nnor this\n\`\`\`\n`,
    );
    const r = spawnSync(process.execPath, [path.join(root, '.ci', 'readme-quickstart.js'), path.join(dir, 'README.md'), dir], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('quickstart.mts');
    expect(fs.readFileSync(path.join(dir, 'quickstart.mts'), 'utf8')).toBe(block);
  });

  test('the README has a quick start that CI can extract', () => {
    const dir = tmpDir('quickstart');
    const r = spawnSync(process.execPath, [path.join(root, '.ci', 'readme-quickstart.js'), path.join(root, 'README.md'), dir], { encoding: 'utf8' });
    expect(r.status).toBe(0);
  });
});
