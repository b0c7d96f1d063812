'use strict';
/**
 * Splits PP-OCRv4's recognition network (ch_PP-OCRv4_rec_infer.onnx, a
 * Paddle2ONNX export, opset 9, weights stored as Constant nodes) at its SVTR
 * neck into four ONNX models:
 *
 *   backbone: x [B,3,48,W]          -> tokens [B,N,120], shortcut [B,C,1,N]
 *   block1:   tokens, key_bias      -> y, q, k          (pre-LN transformer block)
 *   block2:   y, key_bias           -> z, q, k
 *   head:     z [B,N',120], shortcut -> probs [B,N,6625] (final LN, conv fusion, CTC linear + softmax)
 *
 * The cut points are tensor names of this export, found by reading the graph
 * (see README "How the model is split"); `checkGraph` verifies each one is
 * produced by the op we expect, so a different export fails loudly instead of
 * yielding a silently different model.
 *
 * Each block gets one extra input, `key_bias` [B,1,1,N], added to the
 * attention logits right before the softmax: ToMe's proportional attention
 * (log of the token sizes). Zeros leave the block exact. Each block also
 * returns its (already scaled) queries and its keys, [B,8,N,15], so that
 * tokensieve can compute the attention each token receives.
 *
 * Only the nodes needed for the requested outputs are kept (a backwards walk
 * from the outputs that stops at the inputs), so each part carries only its
 * own weights.
 */
const fs = require('fs');
const path = require('path');
const { onnx } = require('onnx-proto');

/** Tensor names of the cut points in ch_PP-OCRv4_rec_infer.onnx, with the op that produces each. */
const CUT = {
  input: ['x', null],
  tokens: ['transpose_43.tmp_0', 'Transpose'], // flatten(2).transpose(1, 2) of the neck's conv output: [B, N, 120]
  shortcut: ['p2o.AveragePool.1', 'AveragePool'], // backbone output, concatenated again after the blocks
  neckConv: ['swish_12.tmp_0', 'Mul'], // the neck's conv before flattening; the head only reads its shape (N)
  blocks: [
    { out: ['p2o.Add.251', 'Add'], logits: ['p2o.MatMul.3', 'MatMul'], softmax: ['softmax_9.tmp_0', 'Softmax'], q: ['p2o.Mul.181', 'Mul'], k: ['transpose_44.tmp_0_slice_1', 'Squeeze'] },
    { out: ['p2o.Add.271', 'Add'], logits: ['p2o.MatMul.15', 'MatMul'], softmax: ['softmax_10.tmp_0', 'Softmax'], q: ['p2o.Mul.190', 'Mul'], k: ['transpose_47.tmp_0_slice_1', 'Squeeze'] },
  ],
  output: ['softmax_11.tmp_0', 'Softmax'],
};

const FLOAT = onnx.TensorProto.DataType.FLOAT;

function producers(graph) {
  const p = new Map();
  for (const n of graph.node) for (const o of n.output) p.set(o, n);
  return p;
}

/** Throws unless every cut tensor exists and comes from the expected op. */
function checkGraph(model) {
  const p = producers(model.graph);
  const want = [CUT.tokens, CUT.shortcut, CUT.neckConv, CUT.output];
  for (const b of CUT.blocks) want.push(b.out, b.logits, b.softmax, b.q, b.k);
  for (const [name, op] of want) {
    const n = p.get(name);
    if (!n) throw new Error(`split: tensor ${name} is not in the model (not the ch_PP-OCRv4_rec_infer.onnx this example was written for?)`);
    if (n.opType !== op) throw new Error(`split: tensor ${name} is produced by ${n.opType}, expected ${op}`);
  }
  for (const b of CUT.blocks) {
    const s = p.get(b.softmax[0]);
    if (s.input[0] !== b.logits[0]) throw new Error(`split: ${b.softmax[0]} does not read ${b.logits[0]}`);
  }
}

function valueInfo(name, dims) {
  return onnx.ValueInfoProto.create({
    name,
    type: { tensorType: { elemType: FLOAT, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  });
}

/**
 * A sub-model computing `outputs` from `inputs`: every node on a path from the
 * inputs (or from constants) to the outputs. Throws if an output needs a
 * tensor that is neither an input nor computable without the original input.
 */
function extract(model, nodes, inputs, outputs) {
  const p = new Map();
  for (const n of nodes) for (const o of n.output) p.set(o, n);
  const stop = new Set(inputs.map((v) => v.name));
  const keep = new Set();
  const stack = outputs.map((v) => v.name);
  const seen = new Set();
  while (stack.length) {
    const t = stack.pop();
    if (seen.has(t) || stop.has(t) || t === '') continue;
    seen.add(t);
    const n = p.get(t);
    if (!n) throw new Error(`split: ${t} is needed but is neither an input of the part nor produced in it`);
    keep.add(n);
    for (const i of n.input) stack.push(i);
  }
  const graph = onnx.GraphProto.create({
    name: model.graph.name,
    node: nodes.filter((n) => keep.has(n)), // original (topological) order
    input: inputs,
    output: outputs,
  });
  return onnx.ModelProto.create({
    irVersion: model.irVersion,
    opsetImport: model.opsetImport,
    producerName: 'tokensieve examples/ocr split.js',
    graph,
  });
}

/** Splits the model; returns { backbone, block1, block2, head } as ONNX bytes. */
function splitModel(bytes) {
  const model = onnx.ModelProto.decode(bytes);
  checkGraph(model);
  const nodes = model.graph.node;
  const parts = {};
  parts.backbone = extract(model, nodes, [valueInfo('x', ['B', 3, 48, 'W'])], [valueInfo(CUT.tokens[0], ['B', 'N', 120]), valueInfo(CUT.shortcut[0], ['B', 'C', 1, 'N'])]);

  CUT.blocks.forEach((b, i) => {
    // logits + key_bias -> softmax: rename the softmax's input to a new Add's output.
    const biased = `tokensieve.biased_logits_${i}`;
    const add = onnx.NodeProto.create({ name: `tokensieve.key_bias_add_${i}`, opType: 'Add', input: [b.logits[0], 'key_bias'], output: [biased] });
    const blockNodes = [];
    for (const n of nodes) {
      if (n.output[0] === b.softmax[0]) {
        blockNodes.push(add);
        blockNodes.push(onnx.NodeProto.create({ ...n, input: [biased] }));
      } else blockNodes.push(n);
    }
    const inName = i === 0 ? CUT.tokens[0] : CUT.blocks[i - 1].out[0];
    parts[`block${i + 1}`] = extract(model, blockNodes,
      [valueInfo(inName, ['B', 'N', 120]), valueInfo('key_bias', ['B', 1, 1, 'N'])],
      [valueInfo(b.out[0], ['B', 'N', 120]), valueInfo(b.q[0], ['B', 8, 'N', 15]), valueInfo(b.k[0], ['B', 8, 'N', 15])]);
  });

  // The head reshapes the tokens back to [B, 120, 1, N] with N read from the
  // shape of the neck's conv output (swish_12), which has the shortcut's
  // spatial shape (3x3 pad 1 and 1x1 convs): read it from the shortcut instead,
  // so the head does not need the backbone's intermediate.
  const headNodes = nodes.map((n) => (n.input.includes(CUT.neckConv[0]) && n.opType === 'Shape'
    ? onnx.NodeProto.create({ ...n, input: n.input.map((t) => (t === CUT.neckConv[0] ? CUT.shortcut[0] : t)) })
    : n));
  parts.head = extract(model, headNodes,
    [valueInfo(CUT.blocks[1].out[0], ['B', 'N', 120]), valueInfo(CUT.shortcut[0], ['B', 'C', 1, 'N'])],
    [valueInfo(CUT.output[0], ['B', 'N', 6625])]);

  const out = {};
  for (const [k, m] of Object.entries(parts)) out[k] = onnx.ModelProto.encode(m).finish();
  return out;
}

/** Names of the inputs/outputs of each part, for the pipeline. */
const NAMES = {
  backbone: { in: CUT.input[0], tokens: CUT.tokens[0], shortcut: CUT.shortcut[0] },
  blocks: CUT.blocks.map((b, i) => ({ in: i === 0 ? CUT.tokens[0] : CUT.blocks[i - 1].out[0], out: b.out[0], q: b.q[0], k: b.k[0] })),
  head: { in: CUT.blocks[1].out[0], shortcut: CUT.shortcut[0], out: CUT.output[0] },
};

/**
 * The split parts, cached under cacheDir (keyed by the source model's size
 * and mtime, so an updated model is split again). Returns file paths.
 */
function splitCached(modelPath, cacheDir) {
  const st = fs.statSync(modelPath);
  const key = `${st.size}-${Math.round(st.mtimeMs)}`;
  const dir = path.join(cacheDir, `split-${key}`);
  const files = Object.fromEntries(['backbone', 'block1', 'block2', 'head'].map((k) => [k, path.join(dir, `${k}.onnx`)]));
  if (Object.values(files).every((f) => fs.existsSync(f))) return files;
  const parts = splitModel(fs.readFileSync(modelPath));
  fs.mkdirSync(dir, { recursive: true });
  for (const [k, b] of Object.entries(parts)) {
    // Write then rename: a run killed mid-write leaves no truncated model in the cache.
    fs.writeFileSync(`${files[k]}.tmp`, b);
    fs.renameSync(`${files[k]}.tmp`, files[k]);
  }
  return files;
}

module.exports = { splitModel, splitCached, checkGraph, NAMES, CUT };
