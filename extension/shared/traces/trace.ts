/**
 * What the custom editor asks of a saved trace, answered without the daemon: the twin of the
 * file-only paths of `lmscope.traces.trace.Trace` (predictions, routes, edge heads, FFN
 * neurons, projections), with the same checks and messages. (The class keeps its name,
 * TraceQueries: "trace" already names the file and the daemon's handle in the editor.) Results have the shapes of the
 * daemon's `lmscope/*` results, so the webview handles a saved trace and a live one alike.
 *
 * What a file does not store (edges below minThreshold, neurons beyond the stored top K, nodes
 * on no route at minThreshold) raises {@link NeedsModelError}: the daemon with the model
 * answers those.
 */

import {
  DEFAULTS,
  PARAM_DEFAULTS,
  type FfnExpertsResult,
  type FfnNeuronsResult,
  type HeadContribution,
  type NodeId,
  type ProjectionKind,
  type ProjectionResult,
  type RouteResult,
  type ThresholdMode,
} from '../protocol/types';
import {LmscopeError, NeedsModelError, pyFloat} from '../errors';
import type {TraceFile} from './lmtrace';
import type {ExpertLayout} from './experts';
import {ContributionGraph, nodeLabel, resolvePosition, routeResult} from '../graph/routes';

export {NeedsModelError};

export interface Prediction {
  readonly token: string; // display text (untrusted: escape before rendering)
  readonly id: number;
  readonly prob: number;
}

const NODE_KINDS: readonly string[] = ['embedding', 'post_attention', 'ffn', 'residual'];
const PROJECTION_KINDS: readonly string[] = ['lens', 'attention_update', 'ffn_update'];

/**
 * Whether a node kind has a projection of `kind` (lmscope.traces.data.projection_applies):
 * residual nodes have a lens; the attention update belongs to A(l,i), or R(l,i) with parallel
 * blocks; the FFN update to M(l,i).
 */
function projectionApplies(kind: string, nodeKind: string, parallelBlocks: boolean): boolean {
  if (kind === 'lens') return nodeKind === 'embedding' || nodeKind === 'post_attention' || nodeKind === 'residual';
  if (kind === 'attention_update') return nodeKind === (parallelBlocks ? 'residual' : 'post_attention');
  return kind === 'ffn_update' && nodeKind === 'ffn';
}

/**
 * The one order heads are listed in, by the daemon (`lmscope/edgeHeads`, Python's
 * `Trace.edge_heads`), this file and the webview: contribution, largest first; equal
 * contributions in head index order. A new, sorted array.
 */
export function byContribution<T extends {readonly head: number; readonly contribution: number}>(heads: readonly T[]): T[] {
  return [...heads].sort((a, b) => b.contribution - a.contribution || a.head - b.head);
}

/** One opened trace file and the questions the editor asks of it. */
export class TraceQueries {
  readonly graph: ContributionGraph;
  /** `${layer}/${position}` -> row of `trace.neurons`. */
  private readonly neuronRows = new Map<string, number>();
  /** `${kind}/${nodeKind}/${layer}/${position}` -> row of `trace.projections`. */
  private readonly projectionRows = new Map<string, number>();

  constructor(readonly trace: TraceFile) {
    this.graph = new ContributionGraph(trace);
    const {neurons, projections} = trace;
    neurons.layer.forEach((layer, row) => this.neuronRows.set(`${layer}/${neurons.position[row]}`, row));
    projections.layer.forEach((layer, row) =>
      this.projectionRows.set(`${projections.kind[row]}/${projections.nodeKind[row]}/${layer}/${projections.position[row]}`, row),
    );
  }

  // --- basic facts -------------------------------------------------------------------------------
  get nTokens(): number {
    return this.trace.dims.nTokens;
  }

  get nLayers(): number {
    return this.trace.dims.nLayers;
  }

  /** Display string of a token id (`<id N>` when the file has none). */
  tokenText(id: number): string {
    return this.trace.vocabulary.get(id) ?? `<id ${id}>`;
  }

  /** A token position, negative values counting from the end. */
  position(token: number): number {
    return resolvePosition(token, this.nTokens);
  }

  private layer(layer: number): number {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.nLayers) {
      throw new LmscopeError(`layer ${layer} is out of range: the model has ${this.nLayers}`);
    }
    return layer;
  }

  /** The model's top next tokens after position `token`, most probable first. */
  predictions(token: number = DEFAULTS.TokenPosition): Prediction[] {
    const row = this.position(token);
    const k = this.trace.dims.predictionTopK;
    const {ids, probs} = this.trace.predictions;
    return Array.from(ids.subarray(row * k, row * k + k), (id, r) => ({token: this.tokenText(id), id, prob: probs[row * k + r]!}));
  }

  // --- routes ------------------------------------------------------------------------------------
  /** The route of output token `token` at τ, shaped as the daemon's `lmscope/route` result. */
  route(token: number, threshold: number, mode: ThresholdMode = DEFAULTS.ThresholdMode): RouteResult {
    return routeResult(this.graph.route(token, threshold, mode));
  }

  // --- drill-down --------------------------------------------------------------------------------
  /** Every head's unthresholded contribution and attention weight for the attention edge
   * source -> target at `layer` (stored edges only), in {@link byContribution} order: the
   * daemon's `lmscope/edgeHeads` order, which the editor shows as it comes. */
  edgeHeads(layer: number, target: number, source: number): HeadContribution[] {
    layer = this.layer(layer);
    target = this.position(target);
    source = this.position(source);
    if (source > target) throw new LmscopeError(`no attention edge ${source} -> ${target}: the model is causal`);
    const [start, end] = this.graph.edgeRange(layer, target);
    const sources = this.trace.edges.source;
    let row = -1;
    for (let lo = start, hi = end; lo < hi; ) {
      const mid = (lo + hi) >>> 1; // sources ascend within one target (checked when read)
      if (sources[mid]! === source) {
        row = mid;
        break;
      }
      if (sources[mid]! < source) lo = mid + 1;
      else hi = mid;
    }
    if (row < 0) {
      throw new NeedsModelError(
        `edge L${layer} ${source} -> ${target} contributes at most ${pyFloat(this.trace.settings.minThreshold)}; ` +
          'its heads are not stored in this file',
      );
    }
    const H = this.trace.dims.nHeads;
    const {headContributions, headAttention} = this.trace.edges;
    return byContribution(
      Array.from({length: H}, (_, head) => ({
        head,
        contribution: headContributions[row * H + head]!,
        attention: headAttention[row * H + head]!,
      })),
    );
  }

  /**
   * Neurons of FFN node (layer, position), strongest contribution first, paged. Pages beyond the
   * stored top neurons need the model, unless the file stores them all.
   */
  ffnNeurons(
    layer: number,
    position: number,
    offset: number = PARAM_DEFAULTS['lmscope/ffnNeurons'].offset,
    limit: number = PARAM_DEFAULTS['lmscope/ffnNeurons'].limit,
  ): FfnNeuronsResult {
    layer = this.layer(layer);
    position = this.position(position);
    if (offset < 0 || limit < 0) throw new LmscopeError('offset and limit must be >= 0');
    const total = this.ffnWidth(layer);
    const row = this.neuronRows.get(`${layer}/${position}`);
    const stored = row === undefined ? 0 : this.trace.dims.nNeurons;
    if (row === undefined) {
      throw new NeedsModelError(
        `FFN node L${layer} at token ${position} is on no route at τ ≥ ${pyFloat(this.trace.settings.minThreshold)}; ` +
          'its neurons are not stored in this file',
      );
    }
    if (!(offset + limit <= stored || stored >= total)) {
      throw new NeedsModelError(
        `this file stores the top ${stored} neurons of each FFN node; neurons ${offset}..${offset + limit} ` +
          'need the model (open the trace with the model loaded)',
      );
    }
    const {index, contribution, activation, restContribution} = this.trace.neurons;
    const begin = row * stored + Math.min(offset, stored);
    const end = row * stored + Math.min(offset + limit, stored);
    const neurons = [];
    for (let x = begin; x < end; x++) {
      neurons.push({neuron: index[x]!, contribution: contribution[x]!, activation: activation[x]!});
    }
    return {total, offset, rest: restContribution[row]!, neurons};
  }

  // --- experts (docs/method.md, "Experts"; experts.ts) -------------------------------------------
  /** How the model's experts are numbered (null: a dense model). */
  get expertLayout(): ExpertLayout | null {
    return this.trace.experts?.layout ?? null;
  }

  /** Whether FFN nodes of `layer` split into experts (a sparse layer of an MoE model). */
  isSparse(layer: number): boolean {
    return this.expertLayout?.isSparse(layer) ?? false;
  }

  /**
   * Neurons that are parts at an FFN node of `layer`: dFfn, or for a sparse layer the chosen and
   * shared experts' neurons (their ids are flat over the layer's experts, experts.ts).
   */
  ffnWidth(layer: number): number {
    const layout = this.expertLayout;
    return layout === null ? this.trace.model.dFfn : layout.ffnWidth(layer);
  }

  /** `L5.N120`, or `L5.E3.N120` / `L5.S0.N120` for a neuron of a sparse layer. */
  neuronLabel(layer: number, neuron: number): string {
    const layout = this.expertLayout;
    return layout === null ? `L${layer}.N${neuron}` : layout.neuronLabel(layer, neuron);
  }

  /**
   * The experts of FFN node (layer, position) of a sparse layer, strongest first, as the
   * daemon's `lmscope/ffnExperts` answers: from the file's experts table; a node it has no row
   * for needs the model. A dense layer has no experts (an error, not an empty list).
   */
  ffnExperts(layer: number, position: number): FfnExpertsResult {
    layer = this.layer(layer);
    position = this.position(position);
    const stored = this.trace.experts;
    if (stored === null || !stored.layout.isSparse(layer)) throw new LmscopeError(`layer ${layer} has a dense FFN: it has no experts`);
    const {layout, table} = stored;
    let row = -1;
    for (let r = 0; r < table.layer.length && row < 0; r++) if (table.layer[r] === layer && table.position[r] === position) row = r;
    if (row < 0) {
      throw new NeedsModelError(
        `FFN node L${layer} at token ${position}: this file stores the experts of ${this.detailDescription()}; the others need the model`,
      );
    }
    const width = layout.topK + layout.nShared;
    const experts = [];
    for (let x = row * width; x < row * width + width; x++) {
      const expert = table.expert[x]!;
      experts.push({expert, label: layout.slotName(expert), gate: table.gate[x]!, contribution: table.contribution[x]!});
    }
    return {total: width, rest: table.rest[row]!, stored: true, experts};
  }

  /**
   * The final-logit soft-cap c of the model (`extra["lmscope.logitSoftcap"]`, Gemma 2), or null:
   * with a cap every projection is in pre-cap logits. Twin of lmscope.traces.data.logit_softcap
   * (anything but a positive finite number reads as null).
   */
  logitSoftcap(): number | null {
    const value = this.trace.extra['lmscope.logitSoftcap'];
    return typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : null;
  }

  /** Which nodes the file stores detail for (the engine's `extra["lmscope.detail"]`). */
  private detailDescription(): string {
    const detail = this.trace.extra['lmscope.detail'];
    if (detail !== null && typeof detail === 'object' && (detail as Record<string, unknown>)['scope'] === 'route') {
      const threshold = (detail as Record<string, unknown>)['threshold'];
      return `the nodes on the last token's route at τ = ${typeof threshold === 'number' ? pyFloat(threshold) : String(threshold)}`;
    }
    return `the nodes on a route at τ ≥ ${pyFloat(this.trace.settings.minThreshold)}`;
  }

  /**
   * Vocabulary projection of a node: kind "lens" (residual-stream nodes), "attention_update" or
   * "ffn_update". `prevRank` is the token's rank in the previous residual node's lens (null if
   * none).
   */
  projection(node: NodeId, kind: ProjectionKind = PARAM_DEFAULTS['lmscope/projection'].kind): ProjectionResult {
    if (!NODE_KINDS.includes(node.kind) || !PROJECTION_KINDS.includes(kind)) {
      throw new LmscopeError(`unknown node kind '${String(node.kind)}' or projection kind '${String(kind)}'`);
    }
    const resolved: NodeId = {kind: node.kind, layer: this.layer(node.layer), position: this.position(node.position)};
    if (!projectionApplies(kind, resolved.kind, this.trace.model.parallelBlocks)) {
      throw new LmscopeError(`a ${kind} projection does not apply to ${nodeLabel(resolved)}`);
    }
    const row = this.projectionRows.get(`${kind}/${resolved.kind}/${resolved.layer}/${resolved.position}`);
    if (row === undefined) {
      throw new NeedsModelError(
        `no ${kind} projection of ${nodeLabel(resolved)} in this trace: the file stores ` +
          `projections of ${this.detailDescription()}; trace it again with the model loaded to see any node`,
      );
    }
    const k = this.trace.dims.projectionTopK;
    const p = this.trace.projections;
    const top = [];
    const bottom = [];
    for (let x = row * k; x < row * k + k; x++) {
      const rank = p.topPrevRank[x]!;
      top.push({token: this.tokenText(p.topIds[x]!), id: p.topIds[x]!, logit: p.topLogits[x]!, prevRank: rank < 0 ? null : rank});
      bottom.push({token: this.tokenText(p.bottomIds[x]!), id: p.bottomIds[x]!, logit: p.bottomLogits[x]!});
    }
    return {top, bottom};
  }
}
