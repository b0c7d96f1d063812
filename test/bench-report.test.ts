/**
 * `tokensieve bench` for people: --help lists the trials, a --filter that
 * matches nothing fails, the roof column explains fractions above 100%, and
 * --markdown / --plot write a readable table and a valid SVG chart (checked
 * here on a small fake result set, without running any benchmark).
 */
import { main, selectTrials, trialList } from '../bench/run';
import { markdownReport, ReportData, roofText, svgPlot, versus } from '../bench/report';
import { OCR_TRIALS, TRIALS } from '../bench/trials';
import { ocrSkipReason } from '../bench/ocr';

const fake: ReportData = {
  machine: ['Test CPU, 2 cores', 'tokensieve 0.0.0'],
  roof: 'measured now: 60 GFLOP/s FMA',
  torch: 'torch 2.5 (eager)',
  caches: 'warm',
  rows: [
    { name: 'cls CLIP-L b1', family: 'attention', shape: 'B1 H16 N577 D64 f32', oursMs: 0.42, work: '75 MFLOP', rate: '40 GFLOP/s', roofFraction: 0.66, bound: 'compute',
      baselines: { 'plain TS': { medianMs: 30 }, 'torch-ref': { medianMs: 2.1 }, 'torch-min': { skipped: 'n/a' } } },
    { name: 'all <CLIP> & "b5"', family: 'attention', shape: 'B5', oursMs: 12.5, work: '3 GFLOP', rate: '50 GFLOP/s', roofFraction: 0.8, bound: 'compute',
      baselines: { 'plain TS': { skipped: 'est. 60 s' }, 'torch-ref': { medianMs: 40 } } },
    { name: 'topk 576 k144 b1', family: 'select', shape: 'B1 N576 k144', oursMs: 0.006, work: '0.00 MB', rate: '2 GB/s', roofFraction: 1.35, bound: 'memory',
      baselines: { 'plain TS': { medianMs: 0.3 } } },
  ],
};

/** A small well-formedness check: balanced tags, quoted attributes, escaped text, one root. */
function checkXml(xml: string): { tags: Record<string, number>; root: string } {
  const stack: string[] = [];
  const tags: Record<string, number> = {};
  let root = '';
  const re = /<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|([^<]+)|(<)/g;
  let m: RegExpExecArray | null;
  let depth0Elements = 0;
  while ((m = re.exec(xml))) {
    if (m[6]) throw new Error(`stray '<' at ${m.index}: ${xml.slice(m.index, m.index + 40)}`);
    if (m[5] !== undefined) {
      if (/&(?!(amp|lt|gt|quot|apos|#\d+);)/.test(m[5])) throw new Error(`unescaped & in text: ${m[5]}`);
      if (stack.length === 0 && m[5].trim()) throw new Error(`text outside the root: ${m[5]}`);
      continue;
    }
    const [, close, name, attrs, selfClose] = m;
    if (/NaN|undefined|Infinity/.test(attrs)) throw new Error(`bad attribute value in <${name}${attrs}>`);
    if (close) {
      if (stack.pop() !== name) throw new Error(`unbalanced </${name}>`);
      continue;
    }
    tags[name] = (tags[name] ?? 0) + 1;
    if (stack.length === 0) {
      depth0Elements++;
      root = `${name}${attrs}`;
    }
    if (!selfClose) stack.push(name);
  }
  if (stack.length) throw new Error(`unclosed <${stack.join('>, <')}>`);
  if (depth0Elements !== 1) throw new Error(`${depth0Elements} root elements`);
  return { tags, root };
}

describe('bench --plot', () => {
  test('a valid SVG with a bar per measured (trial, implementation), a panel per family', () => {
    const svg = svgPlot(fake);
    const { tags, root } = checkXml(svg);
    expect(root).toMatch(/^svg .*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    expect(root).toMatch(/viewBox="0 0 \d+ \d+"/);
    // bars: 3 (row 1: ours, TS, torch-ref) + 2 (row 2: ours, torch-ref) + 2 (row 3) = 7,
    // plus the background and one legend swatch per series (tokensieve, plain TS, torch-ref)
    expect(tags.rect).toBe(7 + 1 + 3);
    expect(tags.title).toBe(7);
    expect(svg).toContain('>attention</text>');
    expect(svg).toContain('>select</text>');
    expect(svg).toContain('all &lt;CLIP&gt; &amp; &quot;b5&quot;');
    expect(svg).not.toContain('torch-min'); // only skipped: no series
  });
  test('an empty result set still gives a valid SVG', () => {
    checkXml(svgPlot({ ...fake, rows: [] }));
  });
});

describe('bench --markdown', () => {
  const md = markdownReport(fake);
  test('a table per family, right-aligned numbers, baselines as "× slower/faster"', () => {
    expect(md).toMatch(/^# Benchmark results/);
    expect(md).toContain('## attention');
    expect(md).toContain('## select');
    expect(md).toContain('## How to read the tables');
    expect(md).toContain('| trial | shape | time | work | rate | roof | plain TS | torch-ref |');
    expect(md).toContain('|---|---|---:|---|---:|---|---:|---:|');
    expect(md).toContain('| 0.420 ms |');
    expect(md).toContain('30.00 ms (71.4× slower)');
    expect(md).toContain('skipped (est. 60 s)');
    // every table row has as many cells as its header
    for (const block of md.split('\n\n').filter((b) => b.startsWith('| trial'))) {
      const lines = block.split('\n').filter(Boolean);
      const cols = (l: string) => l.replace(/\\\|/g, '').split('|').length;
      for (const l of lines) expect(cols(l)).toBe(cols(lines[0]));
    }
  });
  test('a roof above 100% is explained on its line', () => {
    expect(md).toMatch(/\| 135% \(memory; >100%: inputs resident in cache[^|]*\|/);
    expect(roofText(0.5, 'compute')).toBe('50% (compute)');
    expect(roofText(1.2, 'exp')).toMatch(/^120% \(exp; >100%: inputs resident in cache/);
  });
  test('versus', () => {
    expect(versus({ medianMs: 1 }, 2)).toBe('1.00 ms (2.0× faster)');
    expect(versus(undefined, 2)).toBe('–');
  });
});

describe('bench options', () => {
  test('--help lists every trial under its family', () => {
    const list = trialList();
    for (const fam of new Set(TRIALS.map((t) => t.family))) expect(list).toContain(`  ${fam}:`);
    for (const t of TRIALS) expect(list).toContain(t.name);
  });
  test('--filter matches names and families', () => {
    expect(selectTrials('attention', false).every((t) => t.family === 'attention')).toBe(true);
    expect(selectTrials('attention', false).length).toBe(TRIALS.filter((t) => t.family === 'attention').length);
    expect(selectTrials('topk 576', false).map((t) => t.name)).toEqual(['topk 576 k144 b1', 'topk 576 k144 b16']);
  });
  test('the end-to-end ocr family (examples/ocr) is listed and selected by name and family, apart from the kernels', () => {
    const list = trialList();
    expect(list).toContain('  ocr:');
    for (const t of OCR_TRIALS) expect(list).toContain(t.name);
    expect(selectTrials('ocr e2e', false).map((t) => t.name)).toEqual(['ocr e2e tome', 'ocr e2e prune']);
    expect(selectTrials('ocr', false).map((t) => t.name)).toEqual(['ocr e2e tome', 'ocr e2e prune']);
    expect(TRIALS.some((t) => (t.family as string) === 'ocr')).toBe(false);
    // Skipped with a reason exactly when the example cannot run here.
    const installed = (require('../examples/ocr/ocr') as { installed(): boolean }).installed();
    expect(ocrSkipReason() === undefined).toBe(installed);
  });
  test('--filter with no match says so and exits non-zero', async () => {
    const err: string[] = [];
    const spy = jest.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => {
      err.push(String(s));
      return true;
    });
    try {
      expect(await main(['--filter', 'no such trial'])).toBe(1);
    } finally {
      spy.mockRestore();
    }
    expect(err.join('')).toMatch(/no trial matches --filter "no such trial"/);
    expect(err.join('')).toContain('Trials (');
  });
});
