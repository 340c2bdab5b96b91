/**
 * The diff view: two traces of one model drawn as one graph (docs/method.md, "Comparing two
 * traces"). The page shows trace A's columns; each render re-diffs A and B at the slider's τ with
 * shared/diff (no round trip, works offline) and draws the union of both routes at A's positions,
 * each node and edge sized by the larger of its two values and coloured by Δ = B − A: gain
 * (stronger in B), loss (weaker in B), and marked when it lies on one route only. Hover cards
 * show A, B and Δ. B's nodes at positions the alignment leaves out cannot be placed in A's
 * columns: the summary counts them instead of dropping them silently.
 *
 * Token text and prompts are untrusted: they reach the page as text only.
 */

import {diffTraces} from '../shared/diff/diff';
import {nodeLabel} from '../shared/graph/routes';
import type {DiffEdgeRow, DiffNodeId, DiffNodeRow, DiffResult, NodeId, RouteEdge, RouteResult, ThresholdMode} from '../shared/protocol/types';
import type {TraceQueries} from '../shared/traces/trace';
import {el, fmt, quoted} from './dom';
import {edgeKey} from './layout';
import {line} from './panels';

/** The diff shown: B's queries (A's are `shown.queries`), the alignment asked for, the last
 * diff computed, and its rows by the keys the renderer uses. */
export const diffShown: {
  b: TraceQueries | null;
  alignLast: number | null;
  result: DiffResult | null;
  nodes: Map<string, DiffNodeRow>;
  edges: Map<string, DiffEdgeRow>;
} = {b: null, alignLast: null, result: null, nodes: new Map(), edges: new Map()};

export function diffActive(): boolean {
  return diffShown.b !== null;
}

/** Show the diff of `a` (the page's trace) with `b`. */
export function startDiff(b: TraceQueries, alignLast: number | null): void {
  diffShown.b = b;
  diffShown.alignLast = alignLast;
}

function placed(node: DiffNodeId): NodeId | null {
  return node.positionA === null ? null : {kind: node.kind, layer: node.layer, position: node.positionA};
}

/** A's output `token` against its aligned partner in B at τ: the union route at A's positions
 * (sizes: the larger of A and B), remembered for colours and cards. Throws LmscopeError when
 * the traces cannot be compared (another model, an alignment that does not hold). */
export function diffRoute(a: TraceQueries, token: number, threshold: number, mode: ThresholdMode): RouteResult {
  const b = diffShown.b!;
  const partner = diffShown.alignLast === null ? token : token - a.nTokens + b.nTokens;
  const result = diffTraces(a, b, {tokenA: token, tokenB: partner, threshold, mode, alignLast: diffShown.alignLast ?? undefined});
  diffShown.result = result;
  diffShown.nodes = new Map();
  diffShown.edges = new Map();
  const nodes = [];
  for (const row of result.nodes) {
    const id = placed(row.node);
    if (id === null) continue;
    diffShown.nodes.set(nodeLabel(id), row); // the layout's node key
    nodes.push({id, share: Math.max(row.shareA, row.shareB)});
  }
  const edges: RouteEdge[] = [];
  for (const row of result.edges) {
    const source = placed(row.source), target = placed(row.target);
    if (source === null || target === null) continue;
    const edge: RouteEdge = {kind: row.kind, source, target, weight: Math.max(row.weightA, row.weightB), heads: []};
    diffShown.edges.set(edgeKey(edge), row);
    edges.push(edge);
  }
  return {token, threshold, mode, nodes, edges};
}

/** The CSS class of a drawn node or edge by its Δ: gain, loss, or on one route only. */
function changeClass(row: DiffNodeRow | DiffEdgeRow | undefined): string {
  if (row === undefined) return '';
  if (row.membership === 'a') return ' diff-only-a';
  if (row.membership === 'b') return ' diff-only-b';
  const value = 'node' in row ? row.delta : row.shareB - row.shareA;
  return value > 1e-9 ? ' diff-gain' : value < -1e-9 ? ' diff-loss' : ' diff-same';
}

export function diffNodeClass(key: string): string {
  return diffActive() ? changeClass(diffShown.nodes.get(key)) : '';
}

export function diffEdgeClass(key: string): string {
  return diffActive() ? changeClass(diffShown.edges.get(key)) : '';
}

const ON = {a: 'A only', b: 'B only', both: 'A and B'} as const;

/** A, B and Δ of the hovered node or edge, appended to its card. */
export function diffCardLines(key: string, into: HTMLElement): void {
  if (!diffActive()) return;
  const node = diffShown.nodes.get(key), edge = diffShown.edges.get(key);
  into.append(el('div', {class: 'card-sub'}, 'Compared (Δ = B − A)'));
  if (node !== undefined) {
    line(into, 'on the route of', ON[node.membership]);
    line(into, 'share in A / B', `${fmt(node.shareA)} / ${fmt(node.shareB)}`);
    line(into, 'Δ share', signed(node.delta));
    if (node.node.positionB !== null && node.node.positionB !== node.node.positionA) line(into, 'position in B', String(node.node.positionB));
  } else if (edge !== undefined) {
    line(into, 'on the route of', ON[edge.membership]);
    line(into, 'weight in A / B', `${fmt(edge.weightA)} / ${fmt(edge.weightB)}`);
    line(into, 'Δ weight', signed(edge.delta));
    line(into, 'carries in A / B', `${fmt(edge.shareA)} / ${fmt(edge.shareB)}`);
  }
}

function signed(v: number): string {
  return `${v > 0 ? '+' : ''}${fmt(v)}`;
}

/** The summary line: counts, unaligned nodes of B, and the prediction change. */
export function diffSummary(): string {
  const r = diffShown.result;
  const b = diffShown.b;
  if (r === null || b === null) return '';
  const count = (m: string) => r.edges.filter((e) => e.membership === m).length;
  const unplaced = r.nodes.filter((n) => n.node.positionA === null).length;
  const first = r.prediction.topA[0];
  let prediction = '';
  if (first !== undefined) {
    const t = r.prediction.tokens.find((x) => x.id === first.id)!;
    const inB = t.probB === null ? `< ${fmt(t.belowB, 3)}` : fmt(t.probB, 3);
    prediction = ` · ${quoted(t.text)} ${fmt(first.prob, 3)} → ${inB}`;
  }
  return (
    `${count('both')} edges on both, ${count('a')} A only, ${count('b')} B only` +
    (unplaced > 0 ? ` · ${unplaced} nodes of B at unaligned positions not drawn` : '') +
    prediction
  );
}

/** The header: "A: <prompt> vs B: <prompt>" (text only). */
export function diffHeader(a: TraceQueries, b: TraceQueries): string {
  return `A: ${a.trace.tokens.prompt} vs B: ${b.trace.tokens.prompt}`;
}
