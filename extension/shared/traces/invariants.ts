/**
 * What the schema cannot say, checked after every field is decoded: the twin of
 * `lmscope.traces.invariants.check_invariants`, with the same messages. Shapes agree with the
 * model's sizes, indices are in range, edges are in (layer, target, source) order, projection
 * kinds fit their nodes, the vocabulary covers every referenced token id, and the shares of one
 * step sum to at most the schema's share maximum.
 */

import {pyFloat} from '../errors';
import type {NodeKind, ProjectionKind} from '../protocol/types';
import {LIMITS} from './limits';
import type {ModelFacts, TraceDims, TraceSettings} from './lmtrace';
import {type Arr, Invalid} from './wire';

type I32 = Arr<Int32Array>;
type F32 = Arr<Float32Array>;
/** The decoded document, before it becomes a TraceFile. */
export interface Wire {
  model: ModelFacts;
  settings: TraceSettings;
  tokens: {ids: I32; strings: string[]};
  predictions: {ids: I32; probs: F32};
  blocks: {residualAttention: F32; ffn: F32; residualFfn: F32 | null};
  edges: {layer: I32; target: I32; source: I32; headContributions: F32; headAttention: F32};
  neurons: {layer: I32; position: I32; index: I32; contribution: F32; activation: F32; restContribution: F32};
  projections: {
    kind: ProjectionKind[]; nodeKind: NodeKind[]; layer: I32; position: I32; topIds: I32;
    topLogits: F32; bottomIds: I32; bottomLogits: F32; topPrevRank: I32;
  };
  vocabIds: I32;
  vocabStrings: string[];
}

const fmt = (shape: readonly number[]) => `[${shape.join(', ')}]`;

/** Length of a 1-D array that sets a count (n, E, F, P). */
function length(path: string, a: Arr<Int32Array | Float32Array>): number {
  if (a.shape.length !== 1) throw new Invalid(`${path} has shape ${fmt(a.shape)}, expected one dimension`);
  return a.shape[0]!;
}

function expectShape(path: string, a: Arr<Int32Array | Float32Array>, expected: number[], names: string): void {
  if (a.shape.length !== expected.length || a.shape.some((s, i) => s !== expected[i])) {
    throw new Invalid(`${path} has shape ${fmt(a.shape)}, expected ${fmt(expected)} ${names}`);
  }
}

/** Every value in [low, high); names the first one outside, in row-major order. */
function within(path: string, a: Int32Array, low: number, high: number, what: string): void {
  for (const x of a) {
    if (x < low || x >= high) throw new Invalid(`${path} holds ${x}, outside [${low}, ${high}) (${what})`);
  }
}

const PROJECTION_NODES: Record<ProjectionKind, readonly NodeKind[]> = {
  lens: ['embedding', 'post_attention', 'residual'],
  attention_update: ['post_attention', 'residual'], // residual: parallel blocks
  ffn_update: ['ffn'],
};

/** Check everything; returns the sizes the arrays were checked against. */
export function checkInvariants(t: Wire): TraceDims {
  const {model: m, settings: s} = t;
  const L = m.nLayers, H = m.nHeads, V = m.vocabSize;
  if (m.nHeads % m.nKvHeads !== 0) throw new Invalid(`model.nHeads ${m.nHeads} is not a multiple of nKvHeads ${m.nKvHeads}`);
  const n = length('tokens.ids', t.tokens.ids);
  if (n === 0) throw new Invalid('tokens.ids is empty');
  if (t.tokens.strings.length !== n) throw new Invalid(`tokens.strings has ${t.tokens.strings.length} items, expected ${n} [n]`);
  within('tokens.ids', t.tokens.ids.data, 0, V, 'model.vocabSize');

  const kPred = Math.min(s.predictionTopK, V);
  expectShape('predictions.ids', t.predictions.ids, [n, kPred], '[n, kPred]');
  expectShape('predictions.probs', t.predictions.probs, [n, kPred], '[n, kPred]');
  within('predictions.ids', t.predictions.ids.data, 0, V, 'model.vocabSize');

  const b = t.blocks;
  expectShape('blocks.residualAttention', b.residualAttention, [L, n], '[L, n]');
  expectShape('blocks.ffn', b.ffn, [L, n], '[L, n]');
  if (m.parallelBlocks !== (b.residualFfn === null)) throw new Invalid('blocks.residualFfn must be null exactly when model.parallelBlocks');
  if (b.residualFfn !== null) expectShape('blocks.residualFfn', b.residualFfn, [L, n], '[L, n]');

  const e = t.edges;
  const E = length('edges.layer', e.layer);
  for (const [key, a] of [['target', e.target], ['source', e.source]] as const) {
    expectShape(`edges.${key}`, a, [E], '[E]');
    within(`edges.${key}`, a.data, 0, n, 'token positions');
  }
  expectShape('edges.headContributions', e.headContributions, [E, H], '[E, H]');
  expectShape('edges.headAttention', e.headAttention, [E, H], '[E, H]');
  within('edges.layer', e.layer.data, 0, L, 'model.nLayers');
  const [el, et, es] = [e.layer.data, e.target.data, e.source.data];
  for (let r = 0; r < E; r++) if (es[r]! > et[r]!) throw new Invalid(`edges row ${r}: source > target`);
  for (let r = 1; r < E; r++) {
    // Strictly increasing (layer, target, source), compared as a tuple (no overflowing key).
    const d = el[r]! - el[r - 1]! || et[r]! - et[r - 1]! || es[r]! - es[r - 1]!;
    if (d <= 0) throw new Invalid(`edges row ${r} is out of (layer, target, source) order or repeated`);
  }

  const u = t.neurons;
  const F = length('neurons.layer', u.layer);
  const K = Math.min(s.topNeurons, m.dFfn);
  expectShape('neurons.position', u.position, [F], '[F]');
  expectShape('neurons.index', u.index, [F, K], '[F, K]');
  expectShape('neurons.contribution', u.contribution, [F, K], '[F, K]');
  expectShape('neurons.activation', u.activation, [F, K], '[F, K]');
  expectShape('neurons.restContribution', u.restContribution, [F], '[F]');
  within('neurons.layer', u.layer.data, 0, L, 'model.nLayers');
  within('neurons.position', u.position.data, 0, n, 'token positions');
  within('neurons.index', u.index.data, 0, m.dFfn, 'model.dFfn');
  const rows = new Set<number>();
  for (let r = 0; r < F; r++) rows.add(u.layer.data[r]! * n + u.position.data[r]!);
  if (rows.size !== F) throw new Invalid('neurons has two rows for the same (layer, position)');

  const {P, k} = checkProjections(t, L, n, V);

  const vocab = t.vocabIds; // 1-D, as many as its strings, increasing: checked while decoding
  within('vocabulary.ids', vocab.data, 0, V, 'model.vocabSize');
  const known = new Set(vocab.data);
  for (const [path, ids] of [
    ['tokens.ids', t.tokens.ids.data], ['predictions.ids', t.predictions.ids.data],
    ['projections.topIds', t.projections.topIds.data], ['projections.bottomIds', t.projections.bottomIds.data],
  ] as const) {
    let missing = Infinity; // the smallest, as numpy's setdiff1d reports it
    for (const id of ids) if (id < missing && !known.has(id)) missing = id;
    if (missing !== Infinity) throw new Invalid(`vocabulary lacks token id ${missing} used in ${path}`);
  }
  checkSums(t, L, n, kPred, H, K);
  return {nLayers: L, nTokens: n, nHeads: H, nEdges: E, nFfnNodes: F, nNeurons: K, nProjections: P, projectionTopK: k, predictionTopK: kPred};
}

function checkProjections(t: Wire, L: number, n: number, V: number): {P: number; k: number} {
  const p = t.projections;
  const P = length('projections.layer', p.layer);
  const k = Math.min(t.settings.projectionTopK, V);
  expectShape('projections.position', p.position, [P], '[P]');
  if (p.kind.length !== P) throw new Invalid(`projections.kind has ${p.kind.length} items, not ${P}`);
  if (p.nodeKind.length !== P) throw new Invalid(`projections.nodeKind has ${p.nodeKind.length} items, not ${P}`);
  for (const key of ['topIds', 'topLogits', 'bottomIds', 'bottomLogits', 'topPrevRank'] as const) {
    expectShape(`projections.${key}`, p[key], [P, k], '[P, k]');
  }
  within('projections.layer', p.layer.data, 0, L, 'model.nLayers');
  within('projections.position', p.position.data, 0, n, 'token positions');
  within('projections.topIds', p.topIds.data, 0, V, 'model.vocabSize');
  within('projections.bottomIds', p.bottomIds.data, 0, V, 'model.vocabSize');
  within('projections.topPrevRank', p.topPrevRank.data, -1, V, '-1 or a rank');
  for (let row = 0; row < P; row++) {
    const kind = p.kind[row]!, node = p.nodeKind[row]!;
    if (!PROJECTION_NODES[kind].includes(node)) throw new Invalid(`projections row ${row}: a ${kind} projection of a ${node} node`);
    if (node === 'post_attention' && t.model.parallelBlocks) {
      throw new Invalid(`projections row ${row}: post_attention node with parallel blocks`);
    }
    if (node === 'embedding' && p.layer.data[row] !== 0) {
      throw new Invalid(`projections row ${row}: embedding node at layer ${p.layer.data[row]}`);
    }
    if ((kind !== 'lens' || node === 'embedding') && p.topPrevRank.data.subarray(row * k, row * k + k).some(r => r !== -1)) {
      throw new Invalid(`projections row ${row}: topPrevRank must be -1 (no previous lens)`);
    }
  }
  return {P, k};
}

/**
 * The parts of one step are normalised to sum to 1 (docs/method.md), so the stored ones sum to
 * at most that, give or take rounding: the schema's share maximum. This keeps every weight, flow
 * and share finite and at most about 1, in raw mode too. Sums are float64, added in the order
 * of Python's `_check_sums` (which names the same first step).
 */
function checkSums(t: Wire, L: number, n: number, kPred: number, H: number, K: number): void {
  const most = LIMITS.share.max;
  const over = `more than ${pyFloat(most)}`;
  const probs = t.predictions.probs.data;
  for (let r = 0; r < n; r++) {
    let sum = 0;
    for (let j = 0; j < kPred; j++) sum += probs[r * kPred + j]!;
    if (sum > most) throw new Invalid(`predictions.probs row ${r} sums to ${over}`);
  }
  const {residualAttention, ffn, residualFfn} = t.blocks;
  const e = t.edges;
  const step = new Float64Array(L * n);
  const heads = e.headContributions.data;
  for (let r = 0; r < e.layer.data.length; r++) {
    let sum = 0;
    for (let h = 0; h < H; h++) sum += heads[r * H + h]!;
    step[e.layer.data[r]! * n + e.target.data[r]!]! += sum;
  }
  for (let i = 0; i < L * n; i++) {
    step[i]! += residualAttention.data[i]!;
    if (residualFfn === null) step[i]! += ffn.data[i]!; // parallel blocks: one step holds every part
  }
  const what = residualFfn === null ? 'block step' : 'attention step';
  for (let i = 0; i < L * n; i++) {
    if (step[i]! > most) throw new Invalid(`the ${what} of layer ${Math.floor(i / n)} at token ${i % n} has shares summing to ${over}`);
  }
  if (residualFfn !== null) {
    for (let i = 0; i < L * n; i++) {
      if (ffn.data[i]! + residualFfn.data[i]! > most) {
        throw new Invalid(`the FFN step of layer ${Math.floor(i / n)} at token ${i % n} has shares summing to ${over}`);
      }
    }
  }
  const u = t.neurons;
  for (let r = 0; r < u.restContribution.data.length; r++) {
    let sum = 0;
    for (let k = 0; k < K; k++) sum += u.contribution.data[r * K + k]!;
    if (sum + u.restContribution.data[r]! > most) throw new Invalid(`neurons row ${r}: its shares sum to ${over}`);
  }
}
