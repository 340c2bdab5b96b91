/**
 * Compare two traces of the same model in the editor: the twin of `lmscope.traces.diff`,
 * `traces.alignment` and `graph.shares` (docs/method.md, "Comparing two traces"). The diff view
 * re-diffs here whenever the threshold slider moves, from both files' routes (routes.ts), so the
 * slider stays instant and works offline. The answer has the shape of the daemon's
 * `lmscope/diff` result (`DiffResult`), row for row in the same order; node and edge shares may
 * differ from Python's by float rounding, as route shares do (golden tests compare with a
 * tolerance).
 */

import {DEFAULTS, type DiffMembership, type DiffNodeId, type DiffResult, type DiffTokenChange, type ThresholdMode} from '../protocol/types';
import {LmscopeError} from '../errors';
import type {TraceQueries} from '../traces/trace';
import type {NodeId, RouteEdge, RouteResult} from '../protocol/types';

export interface DiffOptions {
  readonly tokenA?: number;
  readonly tokenB?: number;
  readonly threshold?: number;
  readonly mode?: ThresholdMode;
  readonly alignLast?: number;
  readonly pairs?: readonly (readonly [number, number])[];
}

export interface Alignment {
  readonly how: 'identity' | 'last' | 'pairs';
  readonly pairs: readonly (readonly [number, number])[];
}

const HOW_TO_ALIGN =
  'give an alignment: the last K tokens of each (--align-last K) or explicit pairs of positions A:B (--align "0:0,1:1,...")';

/** Python's `align`: one to one for equal counts, else the last K or explicit pairs; never a guess. */
export function align(nA: number, nB: number, last?: number, pairs?: readonly (readonly [number, number])[]): Alignment {
  if (last !== undefined && pairs !== undefined) throw new LmscopeError('give one alignment: the last K tokens or explicit pairs, not both');
  if (last !== undefined) {
    if (!Number.isInteger(last) || last < 1 || last > Math.min(nA, nB)) {
      throw new LmscopeError(`cannot align the last ${last} tokens: A has ${nA} tokens and B has ${nB}, so K must be within 1..${Math.min(nA, nB)}`);
    }
    return {how: 'last', pairs: Array.from({length: last}, (_, k) => [nA - last + k, nB - last + k] as const)};
  }
  if (pairs !== undefined) {
    if (pairs.length === 0) throw new LmscopeError('an explicit alignment needs at least one pair of positions');
    pairs.forEach(([a, b], k) => {
      if (!(Number.isInteger(a) && a >= 0 && a < nA)) throw new LmscopeError(`alignment pair ${a}:${b}: position ${a} is not in A (0..${nA - 1})`);
      if (!(Number.isInteger(b) && b >= 0 && b < nB)) throw new LmscopeError(`alignment pair ${a}:${b}: position ${b} is not in B (0..${nB - 1})`);
      const before = pairs[k - 1];
      if (before !== undefined && (a <= before[0] || b <= before[1])) {
        throw new LmscopeError(`alignment pair ${a}:${b} after ${before[0]}:${before[1]}: pairs must increase in both positions`);
      }
    });
    return {how: 'pairs', pairs};
  }
  if (nA !== nB) throw new LmscopeError(`the traces have different token counts (A ${nA}, B ${nB}): lmscope does not guess which tokens correspond; ${HOW_TO_ALIGN}`);
  return {how: 'identity', pairs: Array.from({length: nA}, (_, i) => [i, i] as const)};
}

/** A diff node's key for maps (`"ffn/3/7/7"`; `-` where a side has no position). */
export function diffNodeKey(node: DiffNodeId): string {
  return `${node.kind}/${node.layer}/${node.positionA ?? '-'}/${node.positionB ?? '-'}`;
}

/** Python's DiffNode.sort_key order: kind name, layer, position in A, in B (None first). */
function compareNodes(x: DiffNodeId, y: DiffNodeId): number {
  if (x.kind !== y.kind) return x.kind < y.kind ? -1 : 1;
  return x.layer - y.layer || (x.positionA ?? -1) - (y.positionA ?? -1) || (x.positionB ?? -1) - (y.positionB ?? -1);
}

interface Side {
  readonly nodes: Map<string, [DiffNodeId, number]>; // key -> (node, share)
  readonly edges: Map<string, [string, DiffNodeId, DiffNodeId, number, number]>; // (kind, source, target, weight, share)
}

function side(route: RouteResult, mapped: (node: NodeId) => DiffNodeId): Side {
  const share = new Map<string, number>();
  const nodes = new Map<string, [DiffNodeId, number]>();
  for (const {id, share: s} of route.nodes) {
    const node = mapped(id);
    nodes.set(diffNodeKey(node), [node, s]);
    share.set(`${id.kind}/${id.layer}/${id.position}`, s);
  }
  const edges: Side['edges'] = new Map();
  for (const edge of route.edges) {
    const carried = share.get(`${edge.target.kind}/${edge.target.layer}/${edge.target.position}`) ?? 0;
    const passed = edge.target.kind === 'ffn' ? carried : carried * edge.weight;
    const source = mapped(edge.source), target = mapped(edge.target);
    edges.set(`${edge.kind}|${diffNodeKey(source)}|${diffNodeKey(target)}`, [edge.kind, source, target, edge.weight, passed]);
  }
  return {nodes, edges};
}

function membership(key: string, a: Map<string, unknown>, b: Map<string, unknown>): DiffMembership {
  return a.has(key) ? (b.has(key) ? 'both' : 'a') : 'b';
}

/** Python's `component_shares`: per head [L][H], attention block [L], FFN block [L]. */
export function componentShares(route: RouteResult, nLayers: number, nHeads: number): {heads: number[][]; attention: number[]; ffn: number[]} {
  const heads = Array.from({length: nLayers}, () => new Array<number>(nHeads).fill(0));
  const attention = new Array<number>(nLayers).fill(0);
  const ffn = new Array<number>(nLayers).fill(0);
  const share = new Map(route.nodes.map(({id, share: s}) => [`${id.kind}/${id.layer}/${id.position}`, s]));
  for (const edge of route.edges as readonly RouteEdge[]) {
    if (edge.kind !== 'attention') continue;
    const layer = edge.target.layer;
    const carried = share.get(`${edge.target.kind}/${layer}/${edge.target.position}`) ?? 0;
    attention[layer]! += carried * edge.weight;
    edge.heads.forEach((w, h) => (heads[layer]![h]! += carried * w));
  }
  for (const {id, share: s} of route.nodes) if (id.kind === 'ffn') ffn[id.layer]! += s;
  return {heads, attention, ffn};
}

/** Refuse traces of different models (content hash), naming both: Python's `check_same_model`. */
export function checkSameModel(a: TraceQueries, b: TraceQueries): void {
  const ma = a.trace.model, mb = b.trace.model;
  if (ma.contentHash !== mb.contentHash) {
    throw new LmscopeError(
      `cannot compare traces of different models: A was traced with ${ma.name} (content hash ${ma.contentHash.slice(0, 12)}) and B with ${mb.name} (content hash ${mb.contentHash.slice(0, 12)}); a diff compares two prompts on one model`,
    );
  }
}

/** Compare A's route of `tokenA` with B's of `tokenB` at τ: Python's `diff_traces(...).wire()`. */
export function diffTraces(a: TraceQueries, b: TraceQueries, options: DiffOptions = {}): DiffResult {
  checkSameModel(a, b);
  const alignment = align(a.nTokens, b.nTokens, options.alignLast, options.pairs);
  const aToB = new Map(alignment.pairs.map(([x, y]) => [x, y]));
  const bToA = new Map(alignment.pairs.map(([x, y]) => [y, x]));
  const tA = a.position(options.tokenA ?? DEFAULTS.TokenPosition), tB = b.position(options.tokenB ?? DEFAULTS.TokenPosition);
  if (aToB.get(tA) !== tB) {
    throw new LmscopeError(`the output tokens are not aligned to each other: A's token ${tA} and B's token ${tB}; choose aligned tokens or align them`);
  }
  const threshold = options.threshold ?? DEFAULTS.Threshold, mode = options.mode ?? DEFAULTS.ThresholdMode;
  const routeA = a.route(tA, threshold, mode), routeB = b.route(tB, threshold, mode);
  const inA = (n: NodeId): DiffNodeId => ({kind: n.kind, layer: n.layer, positionA: n.position, positionB: aToB.get(n.position) ?? null});
  const inB = (n: NodeId): DiffNodeId => ({kind: n.kind, layer: n.layer, positionA: bToA.get(n.position) ?? null, positionB: n.position});
  const sa = side(routeA, inA), sb = side(routeB, inB);
  const nodeKeys = [...new Set([...sa.nodes.keys(), ...sb.nodes.keys()])];
  const nodeOf = (key: string) => (sa.nodes.get(key) ?? sb.nodes.get(key))![0];
  nodeKeys.sort((x, y) => compareNodes(nodeOf(x), nodeOf(y)));
  const edgeKeys = [...new Set([...sa.edges.keys(), ...sb.edges.keys()])];
  const edgeOf = (key: string) => (sa.edges.get(key) ?? sb.edges.get(key))!;
  edgeKeys.sort((x, y) => {
    const [kx, sx, tx] = edgeOf(x), [ky, sy, ty] = edgeOf(y);
    return compareNodes(tx, ty) || compareNodes(sx, sy) || (kx < ky ? -1 : kx > ky ? 1 : 0);
  });
  const nHeads = a.trace.dims.nHeads, nLayers = a.nLayers;
  const sharesA = componentShares(routeA, nLayers, nHeads), sharesB = componentShares(routeB, nLayers, nHeads);
  return {
    model: a.trace.model.name,
    promptA: a.trace.tokens.prompt,
    promptB: b.trace.tokens.prompt,
    alignment: {how: alignment.how, pairs: alignment.pairs.map(([x, y]) => [x, y])},
    tokenA: tA,
    tokenB: tB,
    threshold,
    mode,
    nodes: nodeKeys.map((key) => {
      const shareA = sa.nodes.get(key)?.[1] ?? 0, shareB = sb.nodes.get(key)?.[1] ?? 0;
      return {node: nodeOf(key), shareA, shareB, delta: shareB - shareA, membership: membership(key, sa.nodes, sb.nodes)};
    }),
    edges: edgeKeys.map((key) => {
      const [kind, source, target] = edgeOf(key);
      const [, , , weightA, shareA] = sa.edges.get(key) ?? [kind, source, target, 0, 0];
      const [, , , weightB, shareB] = sb.edges.get(key) ?? [kind, source, target, 0, 0];
      return {kind: kind as RouteEdge['kind'], source, target, weightA, weightB, delta: weightB - weightA, shareA, shareB, membership: membership(key, sa.edges, sb.edges)};
    }),
    prediction: predictionChange(a, b, tA, tB),
    shares: {headsA: sharesA.heads, headsB: sharesB.heads, attentionA: sharesA.attention, attentionB: sharesB.attention, ffnA: sharesA.ffn, ffnB: sharesB.ffn},
  };
}

/** Python's `prediction_change`: both top-k lists, and each of their tokens in A and B; a token
 * outside a trace's stored top k has null there, below that trace's k-th probability. */
function predictionChange(a: TraceQueries, b: TraceQueries, tA: number, tB: number): DiffResult['prediction'] {
  const topA = a.predictions(tA), topB = b.predictions(tB);
  const inA = new Map(topA.map((p) => [p.id, p.prob])), inB = new Map(topB.map((p) => [p.id, p.prob]));
  const belowA = topA[topA.length - 1]?.prob ?? 0, belowB = topB[topB.length - 1]?.prob ?? 0;
  const ids = [...new Set([...inA.keys(), ...inB.keys()])];
  const tokens: DiffTokenChange[] = ids.map((id) => ({
    id,
    text: inA.has(id) ? a.tokenText(id) : b.tokenText(id),
    probA: inA.get(id) ?? null,
    probB: inB.get(id) ?? null,
    belowA,
    belowB,
  }));
  return {topA: topA.map((p) => ({id: p.id, prob: p.prob})), topB: topB.map((p) => ({id: p.id, prob: p.prob})), tokens};
}
