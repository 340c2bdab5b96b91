/**
 * Routes from a saved trace, in the editor: the twin of `lmscope.graph.routes`
 * (ContributionGraph, Route, Route.flow; node labels as `lmscope.graph.nodes.Node`). See
 * `docs/method.md`, "Threshold τ and the route".
 *
 * The webview recomputes a route whenever the threshold slider moves, so this must be exact and
 * fast: one pass over the stored contributions of the nodes on the route (lazy, top-down BFS
 * from the output node), with the same edge order as Python and the same numbers.
 *
 * Matching Python bit for bit, not just closely, needs its arithmetic copied:
 * - NumPy 2 compares a float32 array with a Python float in float32 (NEP 50), so head
 *   contributions and summed edge weights are tested against `Math.fround(τ)`; the residual and
 *   FFN parts are Python floats and are tested against τ itself.
 * - Raw edge weights are NumPy's float32 `sum(-1)` over heads: pairwise summation, emulated.
 * - Renormalise mode divides by a float64 total (`surviving.sum(dtype=float64)` + the kept
 *   residual/FFN parts) and sums the divided heads left to right in float64, as Python does.
 */

import {DEFAULTS, type EdgeKind, type NodeId, type NodeKind, type RouteEdge, type RouteNode, type RouteResult, type ThresholdMode} from '../protocol/types';
import {LmscopeError, pyFloat, ThresholdError} from '../errors';
import {nodeName} from '../display';
import type {TraceFile} from '../traces/lmtrace';
import {numpySum64, pairwiseSum32, pySum} from '../traces/sums';

export {ThresholdError};

/** The edges reachable top-down from the output node of one token, at one threshold. */
export interface Route {
  readonly token: number; // output position t, resolved (>= 0)
  readonly threshold: number;
  readonly mode: ThresholdMode;
  readonly nLayers: number;
  readonly nTokens: number;
  readonly parallelBlocks: boolean;
  /** In BFS order from the output node; per node, in the order `incoming` gives them. */
  readonly edges: readonly RouteEdge[];
}

const MODES: readonly ThresholdMode[] = ['renormalize', 'raw'];

/** The information-flow graph of one trace, thresholded on demand. */
export class ContributionGraph {
  readonly nLayers: number;
  readonly nTokens: number;
  readonly parallelBlocks: boolean;
  readonly minThreshold: number;
  private readonly nHeads: number;
  private readonly heads: Float32Array; // [E, H] c_att per stored edge
  private readonly sources: Int32Array; // [E]
  /** offsets[l*n + i] .. offsets[l*n + i + 1] are the stored edges entering target (l, i). */
  private readonly offsets: Int32Array; // [L*n + 1]
  /** Each stored edge's head contributions summed as NumPy does (float32, pairwise). */
  private readonly edgeSums: Float32Array; // [E]
  /** Scratch for one target's thresholded heads (renormalise mode), reused: no allocation. */
  private readonly surviving: Float64Array; // [widest span * H]
  /** Interned, frozen node ids, shared by every route of this graph (fewer allocations). */
  private readonly nodeIds: (NodeId | undefined)[]; // [L * n * 4], see nodeIndex

  constructor(private readonly trace: TraceFile) {
    const {nLayers: L, nTokens: n, nHeads: H, nEdges: E} = trace.dims;
    this.nLayers = L;
    this.nTokens = n;
    this.nHeads = H;
    this.parallelBlocks = trace.model.parallelBlocks;
    this.minThreshold = trace.settings.minThreshold;
    this.heads = trace.edges.headContributions;
    this.sources = trace.edges.source;
    // Edges are sorted by (layer, target, source) (checked when read), so one counting pass
    // gives every target's span.
    const {layer, target} = trace.edges;
    this.offsets = new Int32Array(L * n + 1);
    for (let e = 0; e < E; e++) this.offsets[layer[e]! * n + target[e]! + 1]!++;
    for (let k = 0; k < L * n; k++) this.offsets[k + 1]! += this.offsets[k]!;
    this.edgeSums = new Float32Array(E);
    for (let e = 0; e < E; e++) this.edgeSums[e] = pairwiseSum32(this.heads, e * H, H);
    let widest = 0;
    for (let k = 0; k < L * n; k++) widest = Math.max(widest, this.offsets[k + 1]! - this.offsets[k]!);
    this.surviving = new Float64Array(widest * H);
    this.nodeIds = new Array<NodeId | undefined>(L * n * 4);
  }

  // --- nodes -----------------------------------------------------------------------------------
  /** The node (kind, layer, position), interned. */
  node(kind: NodeKind, layer: number, position: number): NodeId {
    const k = nodeIndex({kind, layer, position}, this.nTokens);
    return (this.nodeIds[k] ??= Object.freeze({kind, layer, position}));
  }

  outputNode(token: number): NodeId {
    return this.node('residual', this.nLayers - 1, token);
  }

  /** prev(l, i): the residual entering layer l at position i. */
  previous(layer: number, position: number): NodeId {
    return layer === 0 ? this.node('embedding', 0, position) : this.node('residual', layer - 1, position);
  }

  /** The stored edges entering target (layer, target): rows start .. end of `trace.edges`. */
  edgeRange(layer: number, target: number): [start: number, end: number] {
    const key = layer * this.nTokens + target;
    return [this.offsets[key]!, this.offsets[key + 1]!];
  }

  // --- one target representation ---------------------------------------------------------------
  /**
   * Renormalise mode, a step with attention parts: threshold the heads of the stored edges
   * start .. end one by one into `this.surviving` and return the step's total, its surviving
   * heads (a float64 sum, as NumPy's `sum(dtype=float64)`) plus its kept other parts.
   */
  private stepTotal(start: number, end: number, t32: number, keptParts: number[]): number {
    const count = (end - start) * this.nHeads;
    const heads = this.heads;
    const surviving = this.surviving; // float32 values, exact in float64
    for (let x = 0; x < count; x++) {
      const h = heads[start * this.nHeads + x]!;
      surviving[x] = h > t32 ? h : 0;
    }
    return numpySum64(surviving, count) + pySum(keptParts);
  }

  /** Push the kept attention edges prev(l, j) -> `target` of stored edges start .. end. In
   * renormalise mode `stepTotal` has filled `this.surviving` and `total` > 0. */
  private pushAttention(out: RouteEdge[], target: NodeId, start: number, end: number, t32: number, mode: ThresholdMode, total: number): void {
    const H = this.nHeads;
    for (let e = start; e < end; e++) {
      const perHead = new Array<number>(H);
      let weight = 0;
      if (mode === 'raw') {
        weight = this.edgeSums[e]!;
        if (!(weight > t32)) continue;
        for (let h = 0; h < H; h++) perHead[h] = this.heads[e * H + h]!;
      } else {
        const base = (e - start) * H;
        let any = false;
        for (let h = 0; h < H; h++) any ||= this.surviving[base + h] !== 0;
        if (!any) continue;
        // Python's float(h) / total per head, then sum(per_head) left to right.
        for (let h = 0; h < H; h++) weight += perHead[h] = this.surviving[base + h]! / total;
      }
      out.push(edge('attention', this.previous(target.layer, this.sources[e]!), target, weight, perHead));
    }
  }

  /** The kept edges entering `node` at threshold τ in `mode`, in Python's order. */
  incoming(node: NodeId, threshold: number, mode: ThresholdMode): RouteEdge[] {
    if (!MODES.includes(mode)) throw new LmscopeError(`unknown threshold mode '${String(mode)}'`);
    const {kind, layer, position} = node;
    const exists = kind === 'embedding' ? layer === 0 : kind in KIND_DEPTH && !(kind === 'post_attention' && this.parallelBlocks);
    if (!exists || !Number.isInteger(layer) || layer < 0 || layer >= this.nLayers || !Number.isInteger(position) || position < 0 || position >= this.nTokens) {
      throw new LmscopeError(`no node ${kind} at layer ${layer}, position ${position} in this trace`);
    }
    return this.kept(this.node(kind, layer, position), threshold, mode);
  }

  /** `incoming` for an interned, valid node. */
  private kept(node: NodeId, threshold: number, mode: ThresholdMode): RouteEdge[] {
    const {layer, position: i} = node;
    const found: RouteEdge[] = [];
    if (node.kind === 'embedding') return found;
    const at = layer * this.nTokens + i;
    const blocks = this.trace.blocks;
    const t32 = Math.fround(threshold); // NumPy compares float32 arrays with τ in float32
    const keep = (c: number) => (c > threshold ? c : 0); // Python floats: compared in float64
    if (this.parallelBlocks || node.kind === 'post_attention') {
      // A step with attention parts: the attention step, or a parallel block's only step.
      const prev = this.previous(layer, i);
      const parts = this.parallelBlocks ? [keep(blocks.residualAttention[at]!), keep(blocks.ffn[at]!)] : [keep(blocks.residualAttention[at]!)];
      const start = this.offsets[at]!, end = this.offsets[at + 1]!;
      const total = mode === 'raw' ? 1 : this.stepTotal(start, end, t32, parts);
      const scale = (c: number) => (mode === 'raw' ? c : total > 0 ? c / total : 0);
      const residual = scale(parts[0]!), ffn = scale(parts[1] ?? 0);
      if (node.kind === 'ffn') return ffn > 0 ? [edge('ffn', prev, node, ffn)] : [];
      if (residual > 0) found.push(edge('residual', prev, node, residual));
      if (mode === 'raw' || total > 0) this.pushAttention(found, node, start, end, t32, mode, total);
      if (ffn > 0) found.push(edge('ffn', this.node('ffn', layer, i), node, ffn));
      return found;
    }
    // The FFN step of a sequential block: two parts, f_i and x~_i.
    const residualFfn = blocks.residualFfn;
    if (residualFfn === null) throw new LmscopeError('a sequential-block trace without blocks.residualFfn');
    const [ffn, residual] = pairStep(blocks.ffn[at]!, residualFfn[at]!, threshold, mode);
    const afterAttention = this.node('post_attention', layer, i);
    if (node.kind === 'ffn') return ffn > 0 ? [edge('ffn', afterAttention, node, ffn)] : [];
    if (residual > 0) found.push(edge('residual', afterAttention, node, residual));
    if (ffn > 0) found.push(edge('ffn', this.node('ffn', layer, i), node, ffn));
    return found;
  }

  // --- routes ----------------------------------------------------------------------------------
  /**
   * The route of output token `token` (negative: from the end) at threshold τ: the edges
   * reachable top-down from R(L-1, token), expanding only nodes already on the route.
   * Checks like `Trace.route`: τ must be a finite number >= the trace's minThreshold.
   */
  route(token: number, threshold: number, mode: ThresholdMode = DEFAULTS.ThresholdMode): Route {
    if (typeof threshold !== 'number' || !Number.isFinite(threshold)) {
      throw new ThresholdError(`threshold must be a number, got ${String(threshold)}`);
    }
    if (threshold < this.minThreshold - 1e-12) {
      throw new ThresholdError(
        `threshold ${pyFloat(threshold)} is below ${pyFloat(this.minThreshold)}, the smallest this trace answers ` +
          '(trace again with a lower min_threshold)',
      );
    }
    if (!MODES.includes(mode)) throw new LmscopeError(`unknown threshold mode '${String(mode)}'`);
    const t = resolvePosition(token, this.nTokens);
    return {
      token: t,
      threshold,
      mode,
      nLayers: this.nLayers,
      nTokens: this.nTokens,
      parallelBlocks: this.parallelBlocks,
      edges: this.reach([this.outputNode(t)], threshold, mode),
    };
  }

  private reach(starts: NodeId[], threshold: number, mode: ThresholdMode): RouteEdge[] {
    const seen = new Uint8Array(4 * this.nLayers * this.nTokens);
    const key = (node: NodeId) => nodeIndex(node, this.nTokens);
    for (const s of starts) seen[key(s)] = 1;
    const queue = [...starts];
    const edges: RouteEdge[] = [];
    for (let head = 0; head < queue.length; head++) {
      for (const edge of this.kept(queue[head]!, threshold, mode)) {
        edges.push(edge);
        const k = key(edge.source);
        if (!seen[k]) {
          seen[k] = 1;
          queue.push(edge.source);
        }
      }
    }
    return edges;
  }
}

function edge(kind: EdgeKind, source: NodeId, target: NodeId, weight: number, heads: number[] = []): RouteEdge {
  return {kind, source, target, weight, heads};
}

/** A two-part step (the FFN step of a sequential block): Python's `_pair_step`. */
function pairStep(first: number, second: number, threshold: number, mode: ThresholdMode): [number, number] {
  const kept: [number, number] = [first > threshold ? first : 0, second > threshold ? second : 0];
  if (mode === 'raw') return kept;
  const total = kept[0] + kept[1];
  return total > 0 ? [kept[0] / total, kept[1] / total] : [0, 0];
}

// --- nodes, flow and the wire result ---------------------------------------------------------

const KIND_DEPTH: Record<NodeKind, number> = {embedding: 0, post_attention: 1, ffn: 2, residual: 3};
/** Python's Node order sorts kinds as strings. */
const KINDS_BY_NAME: readonly NodeKind[] = ['embedding', 'ffn', 'post_attention', 'residual'];

/** A dense index of a node, for visited sets: unique within one trace. */
function nodeIndex(node: NodeId, nTokens: number): number {
  return (node.layer * nTokens + node.position) * 4 + KIND_DEPTH[node.kind];
}

/** A string key of a node for maps (`"residual/2/5"`); display code should use `nodeLabel`. */
export function nodeKey(node: NodeId): string {
  return `${node.kind}/${node.layer}/${node.position}`;
}

/** Short human label, as Python's `Node.label()`: X3, A2.3, M2.3, R2.3 (display only; the
 * letters are the vocabulary's, display.ts). */
export function nodeLabel(node: NodeId): string {
  return nodeName(node);
}

/**
 * The nodes of a route on a dense grid ordered by depth in the residual stack (embeddings,
 * then per layer A, M, R; position last): slot = ((layer + 1) * 4 + kindDepth) * n + position,
 * embeddings at layer -1. Descending slots are a topological order (edges go up the stack).
 */
class RouteGrid {
  readonly node: (NodeId | undefined)[];
  /** Per slot, the route's edges entering it: edges[first[s]] .. edges[last[s]] (BFS adds a
   * node's incoming edges together, so they are contiguous). */
  readonly first: Int32Array;
  readonly last: Int32Array;

  constructor(readonly route: Route) {
    const size = (route.nLayers + 1) * 4 * route.nTokens;
    this.node = new Array<NodeId | undefined>(size);
    this.first = new Int32Array(size).fill(-1);
    this.last = new Int32Array(size).fill(-1);
    const output = outputOf(route);
    this.node[this.slot(output)] = output;
    route.edges.forEach((e, k) => {
      const target = this.slot(e.target);
      this.node[target] = e.target;
      this.node[this.slot(e.source)] = e.source;
      if (this.first[target] === -1) this.first[target] = k;
      this.last[target] = k;
    });
  }

  slot(node: NodeId): number {
    const level = node.kind === 'embedding' ? 0 : (node.layer + 1) * 4 + KIND_DEPTH[node.kind];
    return level * this.route.nTokens + node.position;
  }

  /** Each slot's share of the output (Python's Route.flow; 0 where no share reaches). */
  shares(): Float64Array {
    const share = new Float64Array(this.node.length);
    share[this.slot(outputOf(this.route))] = 1;
    const edges = this.route.edges;
    for (let s = this.node.length - 1; s >= 0; s--) {
      if (this.first[s] === -1) continue;
      const carried = share[s]!;
      for (let k = this.first[s]!; k <= this.last[s]!; k++) {
        const e = edges[k]!;
        const source = this.slot(e.source);
        // An FFN node computes from its one input alone: it passes its whole share down it.
        share[source] = share[source]! + (e.target.kind === 'ffn' ? carried : carried * e.weight);
      }
    }
    return share;
  }

  /** Every node on the route in Python's Node order, with its slot. */
  ordered(): [NodeId, number][] {
    const {nLayers, nTokens} = this.route;
    const out: [NodeId, number][] = [];
    for (const kind of KINDS_BY_NAME) {
      for (let layer = 0; layer < (kind === 'embedding' ? 1 : nLayers); layer++) {
        for (let position = 0; position < nTokens; position++) {
          const s = this.slot({kind, layer, position});
          const node = this.node[s];
          if (node !== undefined) out.push([node, s]);
        }
      }
    }
    return out;
  }
}

function outputOf(route: Route): NodeId {
  return {kind: 'residual', layer: route.nLayers - 1, position: route.token};
}

/**
 * The route as the daemon's `lmscope/route` answers it: every node touched by an edge, plus the
 * output node, in Python's Node order, each with its share of the output (Python's Route.flow):
 * 1 at the output node, and each node passes its share down its incoming edges in proportion
 * to their weights; an FFN node, which computes from its one input alone, passes all of it
 * (docs/method.md, "Flow"). In renormalise mode this is the product of weights summed over
 * every path to the output; raw weights need not sum to 1, so raw flows are relative only. Python adds the
 * shares of nodes at the same depth in set order; sums may differ from its by an ulp, no more.
 */
export function routeResult(route: Route): RouteResult {
  const grid = new RouteGrid(route);
  const share = grid.shares();
  const nodes: RouteNode[] = grid.ordered().map(([id, s]) => ({id, share: Number.isFinite(share[s]!) ? share[s]! : 0}));
  return {token: route.token, threshold: route.threshold, mode: route.mode, nodes, edges: route.edges.slice()};
}

/** A token position, negative values counting from the end (`Trace.position`). */
export function resolvePosition(token: number, nTokens: number): number {
  if (!Number.isInteger(token) || token < -nTokens || token >= nTokens) {
    throw new LmscopeError(`token position ${token} is out of range: the trace has ${nTokens} tokens`);
  }
  return token < 0 ? token + nTokens : token;
}
