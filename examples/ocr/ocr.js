'use strict';
/**
 * PP-OCRv4 text-line recognition in onnxruntime-node, split at its SVTR neck
 * so that tokensieve can merge (ToMe) or prune tokens between the parts.
 *
 *   image -> backbone -> tokens [1, N, 120] (N = W/8 = 128 at width 1024)
 *         -> [merge r | keep all]  block 1  [prune to k]  block 2  [unmerge | fill]
 *         -> head -> per-column class probabilities -> greedy CTC decode
 *
 * Nothing here runs at require time; `Recognizer.create()` splits the model
 * (once, cached in .cache/) and opens the ONNX sessions.
 */
const fs = require('fs');
const path = require('path');

const HERE = __dirname;
const MODEL_DIR = path.join(HERE, 'node_modules', '@gutenye', 'ocr-models', 'assets');
const MODEL = path.join(MODEL_DIR, 'ch_PP-OCRv4_rec_infer.onnx');
const KEYS = path.join(MODEL_DIR, 'ppocr_keys_v1.txt');
const CACHE = path.join(HERE, '.cache');
const DATA = path.join(HERE, 'data');
const HEIGHT = 48;
const WIDTH = 1024; // 128 tokens: PaddleOCR pads every line to one fixed width
const DIM = 120;

/** True when the example's own dependencies are installed (the test and bench skip otherwise). */
function installed() {
  return fs.existsSync(path.join(HERE, 'node_modules', 'onnxruntime-node')) && fs.existsSync(MODEL)
    && fs.existsSync(path.join(HERE, 'node_modules', 'onnx-proto')) && fs.existsSync(path.join(HERE, 'node_modules', 'pngjs'));
}

function requireDeps() {
  if (!installed()) {
    throw new Error('examples/ocr: its dependencies are not installed; run `cd examples/ocr && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund`');
  }
  let ts;
  try {
    // The built root package (npx tsc -p . at the repo root): the same addon, no second native build.
    ts = require('../../dist/lib');
  } catch (e) {
    throw new Error(`examples/ocr: cannot load tokensieve from the repository root (build it first: npm run build:ts at the root): ${e.message}`);
  }
  return { ort: require('onnxruntime-node'), ts, split: require('./split') };
}

/**
 * The recognizer's characters: index 0 is the CTC blank, then the dictionary's
 * lines, then ' ' (PaddleOCR's use_space_char=True), 6625 classes in all.
 */
function loadCharset(file = KEYS) {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return ['<blank>', ...lines.map((l) => l.replace(/\r$/, '')), ' '];
}

/** Greedy CTC: argmax per column, collapse repeats, drop blanks. probs: Float32Array [T, C]. */
function ctcDecode(probs, T, C, charset) {
  if (charset.length !== C) throw new Error(`ctcDecode: ${charset.length} characters for ${C} classes`);
  let text = '';
  let prev = -1;
  for (let t = 0; t < T; t++) {
    let best = 0;
    let bv = -Infinity;
    const row = t * C;
    for (let c = 0; c < C; c++) {
      if (probs[row + c] > bv) { bv = probs[row + c]; best = c; }
    }
    if (best !== prev && best !== 0) text += charset[best];
    prev = best;
  }
  return text;
}

/** Levenshtein distance over Unicode code points. */
function editDistance(a, b) {
  const x = Array.from(a);
  const y = Array.from(b);
  let prev = Array.from({ length: y.length + 1 }, (_, j) => j);
  for (let i = 1; i <= x.length; i++) {
    const cur = [i];
    for (let j = 1; j <= y.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x[i - 1] === y[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[y.length];
}

/** Corpus CER: total edit distance / total reference length (in code points). */
function cer(hyps, refs) {
  let d = 0;
  let n = 0;
  for (let i = 0; i < refs.length; i++) {
    d += editDistance(hyps[i], refs[i]);
    n += Array.from(refs[i]).length;
  }
  return n ? d / n : 0;
}

/** Grayscale [h, w] (0..255) of a PNG file. */
function readGray(file) {
  const { PNG } = require('pngjs');
  const png = PNG.sync.read(fs.readFileSync(file));
  const g = new Float32Array(png.width * png.height);
  for (let i = 0; i < g.length; i++) {
    // RGBA after pngjs's decode, whatever the file's colour type.
    const r = png.data[4 * i];
    const gg = png.data[4 * i + 1];
    const b = png.data[4 * i + 2];
    g[i] = (r + gg + b) / 3;
  }
  return { data: g, width: png.width, height: png.height };
}

/**
 * PaddleOCR's rec preprocessing (resize_norm_img): resize to height 48 keeping
 * the aspect ratio (bilinear, half-pixel centres as cv2.INTER_LINEAR), width
 * min(ceil(48·w/h), W), normalise (x/255 − 0.5)/0.5, zero-pad on the right to
 * W. Returns the [3, 48, W] input (grey copied to 3 channels) and the valid width.
 */
function preprocess(img, W = WIDTH) {
  const H = HEIGHT;
  const rw = Math.min(W, Math.ceil((H * img.width) / img.height));
  const out = new Float32Array(3 * H * W); // zeros: the padding value after normalisation
  const sx = img.width / rw;
  const sy = img.height / H;
  for (let y = 0; y < H; y++) {
    const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), img.height - 1);
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, img.height - 1);
    const wy = fy - y0;
    for (let x = 0; x < rw; x++) {
      const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), img.width - 1);
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, img.width - 1);
      const wx = fx - x0;
      const d = img.data;
      const v = (1 - wy) * ((1 - wx) * d[y0 * img.width + x0] + wx * d[y0 * img.width + x1])
        + wy * ((1 - wx) * d[y1 * img.width + x0] + wx * d[y1 * img.width + x1]);
      const n = (v / 255 - 0.5) / 0.5;
      for (let c = 0; c < 3; c++) out[(c * H + y) * W + x] = n;
    }
  }
  return { data: out, shape: [1, 3, H, W], validWidth: rw };
}

/** The bundled text lines: [{ file, text, lang, ... }] with absolute paths. */
function loadDataset(dir = DATA) {
  const labels = JSON.parse(fs.readFileSync(path.join(dir, 'labels.json'), 'utf8'));
  return labels.map((l) => ({ ...l, path: path.join(dir, l.file) }));
}

/**
 * For every original position j in [0, N): the slot (in `kept`, ascending) of
 * the nearest kept position; a tie goes to the left one. Fills the positions
 * pruning dropped, as unmerge fills a merged token's positions.
 */
function nearestKept(kept, N) {
  const map = new Int32Array(N);
  let s = 0;
  for (let j = 0; j < N; j++) {
    while (s + 1 < kept.length && kept[s + 1] <= j) s++;
    // kept[s] <= j (or j is before the first kept); compare with kept[s + 1].
    if (kept[s] > j || s + 1 >= kept.length) { map[j] = s; continue; }
    map[j] = (kept[s + 1] - j < j - kept[s]) ? s + 1 : s;
  }
  return map;
}

const now = () => Number(process.hrtime.bigint()) / 1e6;

class Recognizer {
  /**
   * @param {{ threads?: number }} [opts] onnxruntime intra-op threads (default
   *   1: the numbers are per core and stable on a shared machine) and
   *   tokensieve's threads.
   */
  static async create(opts = {}) {
    const deps = requireDeps();
    const threads = opts.threads ?? 1;
    deps.ts.setThreads(threads);
    const files = deps.split.splitCached(MODEL, CACHE);
    const so = { intraOpNumThreads: threads, interOpNumThreads: 1, executionProviders: ['cpu'] };
    const r = new Recognizer();
    r.ort = deps.ort;
    r.ts = deps.ts;
    r.names = deps.split.NAMES;
    r.files = files;
    r.threads = threads;
    r.charset = loadCharset();
    r.full = await deps.ort.InferenceSession.create(MODEL, so);
    r.backbone = await deps.ort.InferenceSession.create(files.backbone, so);
    r.blocks = [await deps.ort.InferenceSession.create(files.block1, so), await deps.ort.InferenceSession.create(files.block2, so)];
    r.head = await deps.ort.InferenceSession.create(files.head, so);
    return r;
  }

  tensor(t) {
    return new this.ort.Tensor('float32', t.data, t.shape);
  }

  /** The unsplit model: { probs: Float32Array [T, C], T, C, text, ms }. */
  async runFull(input) {
    const t0 = now();
    const out = await this.full.run({ x: this.tensor(input) });
    const ms = now() - t0;
    const p = out[this.full.outputNames[0]];
    const [, T, C] = p.dims;
    return { probs: p.data, T, C, text: ctcDecode(p.data, T, C, this.charset), ms };
  }

  /** Backbone part: { tokens: ort.Tensor [1, N, 120], shortcut, ms }. */
  async runBackbone(input) {
    const t0 = now();
    const out = await this.backbone.run({ x: this.tensor(input) });
    return { tokens: out[this.names.backbone.tokens], shortcut: out[this.names.backbone.shortcut], ms: now() - t0 };
  }

  async runBlock(i, x, keyBias) {
    const n = x.dims[1];
    const bias = keyBias || new Float32Array(n); // zeros: the block is unchanged
    const b = this.names.blocks[i];
    const out = await this.blocks[i].run({ [b.in]: x, key_bias: new this.ort.Tensor('float32', bias, [1, 1, 1, n]) });
    return { y: out[b.out], q: out[b.q], k: out[b.k] };
  }

  /**
   * Neck with tokensieve in between. method: 'none' | 'tome' | 'prune';
   * `removed` tokens of N (ToMe's r, or N − keep for pruning).
   *
   * ToMe (as tomesd: merge before the block, the metric is the tokens
   * themselves): bipartite soft matching removes r tokens, merge_wavg gives
   * their sizes, both blocks run on N − r tokens with proportional attention
   * (key bias log(size)), and unmerge copies every merged token back to all
   * the positions it stands for, so the head's convolution sees N columns.
   *
   * Pruning: block 1 runs on all N tokens; tokensieve's attention-score kernel
   * computes the attention each token receives in block 1 (mean over queries
   * and heads) from block 1's own q and k; the top N − removed stay (in order),
   * block 2 runs on them, and every dropped position gets the output of its
   * nearest kept neighbour.
   *
   * Returns { z: ort.Tensor [1, N, 120], ms, kept, tsMs (the part of ms spent in tokensieve) }.
   */
  async runNeck(tokens, method, removed) {
    const ts = this.ts;
    const N = tokens.dims[1];
    if (!['none', 'tome', 'prune'].includes(method)) {
      throw new Error(`runNeck: unknown method ${method} (expected 'none', 'tome' or 'prune')`);
    }
    if (!Number.isInteger(removed) || removed < 0 || removed >= N) {
      throw new RangeError(`runNeck: removed must be an integer in [0, ${N - 1}] for ${N} tokens, not ${removed}`);
    }
    const t0 = now();
    let z;
    let kept = N;
    let tsMs = 0; // time inside tokensieve calls (matching, merge, unmerge, scores, top-k, gathers)
    const timed = (f) => {
      const t = now();
      const v = f();
      tsMs += now() - t;
      return v;
    };
    if (method === 'none' || removed === 0) {
      const y = (await this.runBlock(0, tokens)).y;
      z = (await this.runBlock(1, y)).y;
    } else if (method === 'tome') {
      const x = { data: tokens.data, shape: [1, N, DIM] };
      const plan = timed(() => ts.bipartiteSoftMatchSync(x, removed, { protect: { cls: false } }));
      try {
        const m = timed(() => ts.mergeSync(plan, x, { mode: 'wavg' }));
        const n = plan.nOut;
        kept = n;
        // Proportional attention: every key's logit + log(how many tokens it stands for).
        const bias = timed(() => Float32Array.from(m.sizes.toArray(), Math.log));
        const y = (await this.runBlock(0, new this.ort.Tensor('float32', m.x.data, [1, n, DIM]), bias)).y;
        const y2 = (await this.runBlock(1, y, bias)).y;
        const u = timed(() => ts.unmergeSync(plan, { data: y2.data, shape: [1, n, DIM] }));
        z = new this.ort.Tensor('float32', u.data, [1, N, DIM]);
      } finally {
        plan.dispose();
      }
    } else { // prune
      const keep = N - removed;
      kept = keep;
      const b1 = await this.runBlock(0, tokens);
      // q is already multiplied by 1/sqrt(15) inside the graph: scale 1.
      const scores = timed(() => ts.attentionScoresSync({ data: b1.q.data, shape: b1.q.dims }, { data: b1.k.data, shape: b1.k.dims }, { scale: 1, queries: 'all', heads: 'mean' }));
      const top = timed(() => ts.topkSync(scores, keep, { order: 'index', values: false }));
      const idx = top.indices;
      const y = timed(() => ts.gatherSync({ data: b1.y.data, shape: [1, N, DIM] }, idx));
      const y2 = (await this.runBlock(1, new this.ort.Tensor('float32', y.data, [1, keep, DIM]))).y;
      const filled = timed(() => ts.gatherSync({ data: y2.data, shape: [1, keep, DIM] }, { data: nearestKept(idx.data, N), shape: [1, N] }));
      z = new this.ort.Tensor('float32', filled.data, [1, N, DIM]);
    }
    return { z, ms: now() - t0, kept, tsMs };
  }

  async runHead(z, shortcut) {
    const t0 = now();
    const out = await this.head.run({ [this.names.head.in]: z, [this.names.head.shortcut]: shortcut });
    const p = out[this.names.head.out];
    const [, T, C] = p.dims;
    return { probs: p.data, T, C, text: ctcDecode(p.data, T, C, this.charset), ms: now() - t0 };
  }

  /** The split pipeline on one input; `bb` reuses a backbone result (it does not depend on the setting). */
  async runSplit(input, method = 'none', removed = 0, bb) {
    const b = bb || await this.runBackbone(input);
    const neck = await this.runNeck(b.tokens, method, removed);
    const head = await this.runHead(neck.z, b.shortcut);
    return { ...head, backboneMs: b.ms, neckMs: neck.ms, neckTsMs: neck.tsMs, headMs: head.ms, kept: neck.kept };
  }
}

module.exports = {
  Recognizer, installed, loadCharset, ctcDecode, editDistance, cer, readGray, preprocess, loadDataset, nearestKept,
  HEIGHT, WIDTH, MODEL, DATA, CACHE,
};
