/**
 * Reports of a bench run for people: a Markdown document (`bench --markdown
 * FILE`) and an SVG bar chart (`bench --plot FILE.svg`) of tokensieve against
 * the baselines, one panel per trial family. Plain string building, no
 * dependencies.
 */

/** A time, or why the measurement was skipped. */
export type Measured = { medianMs: number } | { skipped: string };

/** One trial's results, as both reports read them. */
export interface ReportRow {
  name: string;
  family: string;
  shape: string;
  /** tokensieve's median time. */
  oursMs: number;
  /** tokensieve's mean time over the same calls (what a loop sustains). */
  oursMeanMs?: number;
  /** e.g. "92 MFLOP, 0.44 M exp, 1.2 MB". */
  work: string;
  /** e.g. "41.0 GFLOP/s". */
  rate: string;
  /** Fraction of the machine's roof (1 = at the ceiling; above 1: inputs served from cache). */
  roofFraction: number;
  /** The ceiling the roof fraction is taken against: compute, exp or memory. */
  bound: string;
  /** Baseline name (e.g. "plain TS", "torch eager") → its time. */
  baselines: Record<string, Measured | undefined>;
}

export interface ReportData {
  /** Lines describing the machine and build. */
  machine: string[];
  roof: string;
  torch: string;
  caches: string;
  rows: ReportRow[];
  command?: string;
  date?: string;
}

export const fmtMs = (ms: number): string => (ms >= 100 ? ms.toFixed(0) : ms >= 1 ? ms.toFixed(2) : ms.toFixed(3));

/** "87%" or "135% (>100%: inputs resident in cache)", with the bound. */
export function roofText(fraction: number, bound: string): string {
  const pct = `${(100 * fraction).toFixed(0)}%`;
  return fraction > 1
    ? `${pct} (${bound}; >100%: inputs resident in cache, faster than the ${bound === 'memory' ? 'measured copy bandwidth' : 'ceiling'})`
    : `${pct} (${bound})`;
}

/** A baseline's time and how many times slower than tokensieve it is. */
export function versus(base: Measured | undefined, oursMs: number): string {
  if (!base) return '–';
  if ('skipped' in base) return `skipped (${base.skipped})`;
  const x = base.medianMs / oursMs;
  return `${fmtMs(base.medianMs)} ms (${x >= 1 ? `${x.toFixed(1)}× slower` : `${(1 / x).toFixed(1)}× faster`})`;
}

/** Baselines present in the rows (with `measured`, only those with at least one time). */
function baselineNames(rows: readonly ReportRow[], measured = false): string[] {
  const names: string[] = [];
  for (const r of rows) {
    for (const [k, v] of Object.entries(r.baselines)) {
      if (v && (!measured || 'medianMs' in v) && !names.includes(k)) names.push(k);
    }
  }
  return names;
}

function families(rows: readonly ReportRow[]): string[] {
  const out: string[] = [];
  for (const r of rows) if (!out.includes(r.family)) out.push(r.family);
  return out;
}

const cell = (s: string): string => s.replace(/\|/g, '\\|');

/** The Markdown report: the machine, how to read the table, then one table per family. */
export function markdownReport(d: ReportData): string {
  const base = baselineNames(d.rows);
  const md: string[] = ['# Benchmark results', ''];
  if (d.command || d.date) md.push(`Generated${d.command ? ` by \`${d.command}\`` : ''}${d.date ? ` on ${d.date}` : ''}.`, '');
  md.push('## Machine', '', ...d.machine.map((h) => `- ${h}`), `- roof: ${d.roof}`, `- caches: ${d.caches}`, `- ${d.torch}`, '');
  md.push(
    '## How to read the tables',
    '',
    '- **time**: tokensieve\'s median over repeated runs (warm-up first).',
    '- **roof**: the time the binding ceiling allows (FLOPs at the FMA rate, exps at the exp rate or bytes at the copy rate, all measured in this run) over the time taken. 100% is the ceiling; above 100% means the inputs stayed resident in cache, so the kernel read them faster than the memory copy rate.',
    '- **baselines**: the same computation on the same input in the same run; "× slower" is the baseline\'s time over tokensieve\'s.',
    '',
  );
  for (const fam of families(d.rows)) {
    const rows = d.rows.filter((r) => r.family === fam);
    md.push(`## ${fam}`, '');
    md.push(`| trial | shape | time | work | rate | roof |${base.map((b) => ` ${cell(b)} |`).join('')}`);
    md.push(`|---|---|---:|---|---:|---|${base.map(() => '---:|').join('')}`);
    for (const r of rows) {
      md.push(
        `| ${cell(r.name)} | ${cell(r.shape)} | ${fmtMs(r.oursMs)} ms | ${cell(r.work)} | ${cell(r.rate)} | ${cell(roofText(r.roofFraction, r.bound))} |` +
          base.map((b) => ` ${cell(versus(r.baselines[b], r.oursMs))} |`).join(''),
      );
    }
    md.push('');
  }
  return md.join('\n');
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2'];

/**
 * A horizontal bar chart, one panel per family: for every trial, a bar per
 * implementation (tokensieve first, then each baseline) of its median time on
 * a log scale, labelled with the time. Skipped baselines are left out.
 */
export function svgPlot(d: ReportData, title = 'tokensieve vs baselines (median time, log scale; shorter is faster)'): string {
  const series = ['tokensieve', ...baselineNames(d.rows, true)];
  const timeOf = (r: ReportRow, s: string): number | undefined => {
    if (s === 'tokensieve') return r.oursMs;
    const b = r.baselines[s];
    return b && 'medianMs' in b && b.medianMs > 0 ? b.medianMs : undefined;
  };
  const all = d.rows.flatMap((r) => series.map((s) => timeOf(r, s)).filter((v): v is number => v !== undefined && v > 0));
  const lo = all.length ? Math.floor(Math.log10(Math.min(...all))) : -3;
  const hi = all.length ? Math.max(lo + 1, Math.ceil(Math.log10(Math.max(...all)))) : 0;
  const W = 960, labelW = 330, plotW = W - labelW - 110, barH = 12, gap = 8, panelGap = 34;
  const x = (ms: number): number => ((Math.log10(ms) - lo) / (hi - lo)) * plotW;
  const out: string[] = [];
  let y = 56;
  const body: string[] = [];
  for (const fam of families(d.rows)) {
    const rows = d.rows.filter((r) => r.family === fam);
    body.push(`<text x="10" y="${y}" font-size="15" font-weight="bold">${esc(fam)}</text>`);
    y += 12;
    const top = y;
    for (const r of rows) {
      const bars = series.map((s, i) => ({ s, i, ms: timeOf(r, s) })).filter((b) => b.ms !== undefined) as Array<{ s: string; i: number; ms: number }>;
      const groupH = Math.max(1, bars.length) * barH;
      body.push(`<text x="${labelW - 8}" y="${y + groupH / 2 + 4}" font-size="11" text-anchor="end">${esc(r.name)}</text>`);
      bars.forEach((b, j) => {
        const w = Math.max(1, x(b.ms));
        const by = y + j * barH;
        body.push(`<rect x="${labelW}" y="${by}" width="${w.toFixed(1)}" height="${barH - 2}" fill="${COLORS[b.i % COLORS.length]}"><title>${esc(`${r.name} — ${b.s}: ${fmtMs(b.ms)} ms`)}</title></rect>`);
        body.push(`<text x="${(labelW + w + 4).toFixed(1)}" y="${by + barH - 3}" font-size="10">${esc(fmtMs(b.ms))} ms</text>`);
      });
      y += groupH + gap;
    }
    // axis: a grid line and label per decade
    for (let e = lo; e <= hi; e++) {
      const gx = (labelW + x(10 ** e)).toFixed(1);
      body.push(`<line x1="${gx}" y1="${top - 4}" x2="${gx}" y2="${y - gap + 2}" stroke="#ccc" stroke-width="1"/>`);
      body.push(`<text x="${gx}" y="${y + 8}" font-size="10" text-anchor="middle">${esc(e >= 0 ? `${10 ** e} ms` : `${Number((10 ** e).toPrecision(1))} ms`)}</text>`);
    }
    y += panelGap;
  }
  const H = y;
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">`);
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="10" y="22" font-size="16" font-weight="bold">${esc(title)}</text>`);
  series.forEach((s, i) => {
    const lx = 10 + i * 150;
    out.push(`<rect x="${lx}" y="32" width="12" height="10" fill="${COLORS[i % COLORS.length]}"/>`);
    out.push(`<text x="${lx + 16}" y="41" font-size="11">${esc(s)}</text>`);
  });
  out.push(...body, '</svg>', '');
  return out.join('\n');
}
