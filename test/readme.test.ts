/**
 * The README's first screen stays true: the quick start (the first js/ts
 * block under "## Quick start", the block CI runs in an installed package)
 * runs as pasted against the built dist/ and prints what the README shows,
 * and the README links only to anchors or to files the package ships.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.resolve(__dirname, '..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');

function quickStartSection(): string {
  const start = readme.search(/^## Quick start\s*$/m);
  expect(start).toBeGreaterThanOrEqual(0);
  const rest = readme.slice(start).replace(/^## Quick start\s*$/m, '');
  const end = rest.search(/^## /m);
  return end < 0 ? rest : rest.slice(0, end);
}

const ROWS = /^kept rows (\d+), (\d+), (\d+), (\d+), (\d+), (\d+) \.\.\. \(58 of 576 patches\)$/m;
const SHAPE = /^kept features 1 x 58 x 1024 f32$/m;

describe('README quick start', () => {
  const section = quickStartSection();

  test('says what the package is, how to install it, how to work on it and how to benchmark', () => {
    const beforeQuickStart = readme.slice(0, readme.search(/^## Quick start/m));
    expect(beforeQuickStart).toMatch(/^# tokensieve\n\n\S/);
    expect(section).toContain('npm install tokensieve');
    expect(section).toMatch(/^npm install +#/m);
    expect(section).toMatch(/^npm test +#/m);
    expect(section).toMatch(/^npx tokensieve bench +#/m);
  });

  test('runs as pasted (CommonJS, against dist/) and prints what the README shows', () => {
    const m = /^```(ts|typescript|js|javascript)[^\n]*\n([\s\S]*?)^```/m.exec(section);
    expect(m).not.toBeNull();
    const code = m![2];
    expect(code).toMatch(/require\('tokensieve'\)/);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tokensieve-quickstart-'));
    try {
      const file = path.join(dir, 'quickstart.cjs');
      fs.writeFileSync(file, code.replace(/require\('tokensieve'\)/g, `require(${JSON.stringify(root)})`));
      const out = execFileSync(process.execPath, [file], { encoding: 'utf8', timeout: 120000 });
      const rows = ROWS.exec(out);
      expect(rows).not.toBeNull();
      const r = rows!.slice(1).map(Number);
      // token positions: CLS (row 0) excluded, ascending, inside the 576 patch rows
      expect(r.every((v) => v >= 1 && v <= 576)).toBe(true);
      expect(r).toEqual([...r].sort((a, b) => a - b));
      expect(out).toMatch(SHAPE);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('the output shown in the README has the same form', () => {
    const shown = /^```text\n\$ node quickstart\.js\n([\s\S]*?)^```/m.exec(section);
    expect(shown).not.toBeNull();
    expect(shown![1]).toMatch(ROWS);
    expect(shown![1]).toMatch(SHAPE);
  });
});

describe('README links', () => {
  test('relative links point at anchors that exist or at files the package ships', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { files: string[] };
    const slug = (h: string) => h.trim().toLowerCase().replace(/[^\w\- ]/g, '').replace(/ /g, '-');
    const anchors = new Set([...readme.matchAll(/^#{1,4} (.+)$/gm)].map((m) => slug(m[1])));
    const shipped = (f: string) => f === 'README.md' || pkg.files.some((p) => (p.endsWith('/') ? f.startsWith(p) : f === p));
    const bad: string[] = [];
    for (const [, target] of readme.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target)) continue; // absolute URLs
      if (target.startsWith('#')) {
        if (!anchors.has(target.slice(1))) bad.push(target);
      } else if (!shipped(target.split('#')[0])) {
        bad.push(target);
      }
    }
    expect(bad).toEqual([]);
  });

  test('no reference to specs/ (not part of the package)', () => {
    expect(readme).not.toMatch(/specs\//);
  });
});
