/**
 * Where the flow graph draws each node and edge of a route: a pure function from a
 * `RouteResult` and the canvas's size to SVG coordinates (no DOM, so it is tested under
 * `node --test`).
 *
 * Fit means the whole route: the layout is computed for the canvas it is shown in, so at zoom 1
 * every layer and every route column is visible at once. Only when that would make a column or
 * a layer smaller than legible (MIN_COLUMN, MIN_UNIT) does the layout grow past the canvas, and
 * Fit then zooms out (zoom.ts).
 *
 * Tokens are columns (left to right), layers are rows (bottom to top): the embeddings X at the
 * bottom, then per layer the post-attention node A, the FFN node M (to the right of its column,
 * halfway between A and R) and the residual node R; the output node R(L-1, t) is at the top.
 * - Columns with no route node collapse to a narrow strip (`collapse`), so a 1000-token prompt
 *   keeps its route columns readable.
 * - A quiet layer (no attention edge and no FFN node on the route: the residual stream only
 *   passes through) gets a fraction of a busy layer's height.
 * - A node's size and a edge's width follow its share of the prediction (`share`, the flow that
 *   reaches it from the output), FFN nodes included.
 *
 * Edges: residual edges are vertical lines inside a column; attention edges are curves between
 * columns, and the self-attention edge (source and target at the same position) is a loop to the
 * left of the column, so it never hides under the residual edge; FFN edges are short diagonals
 * to and from the offset M node.
 */

import {nodeRadius as vocabularyRadius} from '../shared/display';
import {nodeKey, nodeLabel} from '../shared/graph/routes';
import type {EdgeKind, NodeId, NodeKind, RouteEdge, RouteResult} from '../shared/protocol/types';

export interface LayoutOptions {
  /** The canvas the graph is shown in, in CSS pixels. */
  readonly width: number;
  readonly height: number;
  /** Collapse the columns of tokens with no route node. */
  readonly collapse: boolean;
}

/** Room kept free around the graph: the pinned token labels above, the layer labels left. */
export const MARGIN = {top: 46, left: 34, right: 14, bottom: 14} as const;
/** The narrowest route column and the smallest height unit (a busy layer is 1.6 units). */
export const MIN_COLUMN = 14;
export const MIN_UNIT = 7;
const MAX_COLUMN = 120;
const MAX_UNIT = 40;
/** Heights in units: a busy layer's R(l-1) -> A(l) and A(l) -> R(l) steps; a quiet layer's. */
const STEP_ATTENTION = 1;
const STEP_BLOCK = 0.6;
const QUIET_LAYER = 0.35;

export interface NodeBox {
  readonly id: NodeId;
  /** `R22.2`, `A23.14`, `M29.14`, `X3` (nodeLabel): the node's name everywhere. */
  readonly key: string;
  readonly x: number;
  readonly y: number;
  /** Radius (half the side of an FFN square of the same area). */
  readonly r: number;
  /** Share of the prediction flowing through the node (0..1 in renormalize mode). */
  readonly share: number;
  readonly isOutput: boolean;
}

export interface EdgePath {
  readonly edge: RouteEdge;
  /** A stable key of the edge (its kind and two nodes), to find it again in another route. */
  readonly key: string;
  readonly kind: EdgeKind;
  /** Attention edge whose source and target are at the same position. */
  readonly selfAttention: boolean;
  readonly x1: number;
  readonly y1: number;
  readonly x2: number;
  readonly y2: number;
  /** SVG path data. */
  readonly d: string;
  /** The share of the prediction the edge carries: its target's share times its weight (an
   * FFN node's one input carries its whole share). */
  readonly flow: number;
  /** Stroke width in screen pixels, from the flow. */
  readonly width: number;
}

export interface Column {
  readonly position: number;
  readonly x: number;
  readonly width: number;
  readonly collapsed: boolean;
}

export interface Row {
  readonly layer: number; // -1: embeddings
  /** The row's R level (X for the embeddings). */
  readonly y: number;
  /** No attention edge and no FFN node of this layer is on the route. */
  readonly quiet: boolean;
}

export interface GraphLayout {
  readonly width: number;
  readonly height: number;
  readonly columns: readonly Column[];
  readonly rows: readonly Row[];
  readonly nodes: readonly NodeBox[];
  readonly edges: readonly EdgePath[];
  /** The largest node radius (a node of share 1). */
  readonly maxRadius: number;
  /** The zoom that shows all of it in the canvas (1 unless its columns needed more room). */
  readonly scale: number;
}

/** Level of a node in half-layer units from the bottom: X 0, A(l) 2l+1, M(l) 2l+1.5, R(l) 2l+2. */
export function nodeLevel(node: NodeId): number {
  const offsets: Record<NodeKind, number> = {embedding: 0, post_attention: 1, ffn: 1.5, residual: 2};
  return node.kind === 'embedding' ? 0 : 2 * node.layer + offsets[node.kind];
}

/** Stroke width (px) of an edge carrying `flow` of the prediction (|flow| clamped to 1). */
export function strokeWidth(flow: number): number {
  const f = Math.min(1, Math.abs(Number.isFinite(flow) ? flow : 0));
  return round(0.8 + 5.7 * Math.sqrt(f));
}

/** Radius of a node of `share`, for a graph whose largest node has radius `max` (the vocabulary's
 * sizes: protocol/vocabulary.json). */
export function nodeRadius(share: number, max: number): number {
  return round(vocabularyRadius(share, max));
}

export function edgeKey(edge: RouteEdge): string {
  return `${edge.kind}:${nodeKey(edge.source)}>${nodeKey(edge.target)}`;
}

function round(v: number): number {
  return Math.round(v * 100) / 100;
}

function clamp(v: number, low: number, high: number): number {
  return Math.max(low, Math.min(high, v));
}

export function layoutRoute(route: RouteResult, nTokens: number, nLayers: number, options: LayoutOptions): GraphLayout {
  // --- columns: the route's tokens get the width; the others a strip -------------------------
  const used = new Uint8Array(nTokens);
  for (const node of route.nodes) used[node.id.position] = 1;
  if (route.token >= 0 && route.token < nTokens) used[route.token] = 1;
  let nUsed = 0;
  for (let i = 0; i < nTokens; i++) nUsed += used[i]!;
  const collapse = options.collapse && nUsed < nTokens;
  const availableWidth = Math.max(1, options.width - MARGIN.left - MARGIN.right);
  const nCollapsed = collapse ? nTokens - nUsed : 0;
  // Collapsed strips take at most a quarter of the width (6 px each at most): many of them
  // shrink to slivers, so the route's own columns keep the room.
  const strip = nCollapsed === 0 ? 0 : Math.min(6, availableWidth / 4 / nCollapsed);
  const wide = collapse ? nUsed : nTokens;
  const columnWidth = clamp((availableWidth - nCollapsed * strip) / Math.max(1, wide), collapse ? MIN_COLUMN : 2, MAX_COLUMN);
  // When the route's columns cannot be legible in the canvas, the layout is made wider and
  // fitting it zooms out by `scale`; the margins and the height are made for that zoom, so the
  // fitted graph still fills the canvas and its labels keep their room on screen.
  const content = wide * columnWidth + nCollapsed * strip;
  const scale = Math.min(1, availableWidth / content);
  const columns: Column[] = new Array<Column>(nTokens);
  let x = MARGIN.left / scale;
  for (let position = 0; position < nTokens; position++) {
    const collapsed = collapse && used[position] === 0;
    const width = collapsed ? strip : columnWidth;
    columns[position] = {position, x: round(x + width / 2), width: round(width), collapsed};
    x += width;
  }
  const width = round(Math.max(options.width / scale, x + MARGIN.right / scale));

  // --- rows: busy layers get the height; quiet ones a fraction ------------------------------
  const busy = new Uint8Array(nLayers);
  for (const edge of route.edges) {
    if (edge.kind === 'attention' || edge.kind === 'ffn') busy[edge.target.layer] = 1;
  }
  let units = 0.6; // the embeddings' step below layer 0
  for (let l = 0; l < nLayers; l++) units += busy[l] ? STEP_ATTENTION + STEP_BLOCK : QUIET_LAYER;
  const top = MARGIN.top / scale, bottom = MARGIN.bottom / scale;
  const availableHeight = Math.max(1, options.height / scale - top - bottom);
  const unit = clamp(availableHeight / units, MIN_UNIT / scale, MAX_UNIT);
  const height = round(Math.max(options.height / scale, top + bottom + units * unit));
  // y of each level, bottom-up: level 0 (X), then per layer A (2l+1) and R (2l+2).
  const levelY = new Float64Array(2 * nLayers + 1);
  let y = top + units * unit;
  levelY[0] = y;
  y -= 0.6 * unit;
  for (let l = 0; l < nLayers; l++) {
    const quiet = busy[l] === 0;
    y -= (quiet ? QUIET_LAYER / 2 : STEP_ATTENTION) * unit;
    levelY[2 * l + 1] = y;
    y -= (quiet ? QUIET_LAYER / 2 : STEP_BLOCK) * unit;
    levelY[2 * l + 2] = y;
  }
  // Centre vertically when the graph is shorter than the canvas.
  const shift = Math.max(0, (availableHeight - units * unit) / 2);
  const yOf = (level: number): number => {
    const whole = Math.floor(level);
    const v = whole === level ? levelY[level]! : (levelY[whole]! + levelY[whole + 1]!) / 2;
    return round(v + shift);
  };
  const rows: Row[] = [{layer: -1, y: yOf(0), quiet: false}];
  for (let layer = 0; layer < nLayers; layer++) rows.push({layer, y: yOf(2 * layer + 2), quiet: busy[layer] === 0});

  // --- nodes and edges ----------------------------------------------------------------------
  // Neighbouring A and R nodes (STEP_BLOCK apart) may touch when both carry the whole share.
  const maxRadius = round(clamp(Math.min(columnWidth * 0.3, unit * STEP_BLOCK * 0.95), 2.5, 11));
  const place = (node: NodeId): [number, number] => {
    const column = columns[node.position];
    const cx = column === undefined ? MARGIN.left : column.x;
    const dx = node.kind === 'ffn' ? Math.max(maxRadius + 2, columnWidth * 0.28) : 0;
    return [round(cx + dx), yOf(nodeLevel(node))];
  };
  const shareOf = new Map<string, number>();
  const nodes: NodeBox[] = route.nodes.map(({id, share}) => {
    const [nx, ny] = place(id);
    const key = nodeLabel(id);
    shareOf.set(nodeKey(id), share);
    const isOutput = id.kind === 'residual' && id.layer === nLayers - 1 && id.position === route.token;
    return {id, key, x: nx, y: ny, r: isOutput ? round(maxRadius + 1.5) : nodeRadius(share, maxRadius), share, isOutput};
  });

  const edges: EdgePath[] = route.edges.map((edge) => {
    const [x1, y1] = place(edge.source);
    const [x2, y2] = place(edge.target);
    const selfAttention = edge.kind === 'attention' && edge.source.position === edge.target.position;
    let d: string;
    if (selfAttention) {
      const bulge = round(Math.max(4, (columns[edge.target.position]?.width ?? columnWidth) * 0.32));
      d = `M${x1},${y1} C${round(x1 - bulge)},${y1} ${round(x2 - bulge)},${y2} ${x2},${y2}`;
    } else if (edge.kind === 'attention') {
      const my = round((y1 + y2) / 2);
      d = `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`;
    } else {
      d = `M${x1},${y1} L${x2},${y2}`;
    }
    const targetShare = shareOf.get(nodeKey(edge.target)) ?? 0;
    const flow = edge.target.kind === 'ffn' ? targetShare : targetShare * edge.weight;
    return {edge, key: edgeKey(edge), kind: edge.kind, selfAttention, x1, y1, x2, y2, d, flow, width: strokeWidth(flow)};
  });

  return {width, height, columns, rows, nodes, edges, maxRadius, scale};
}
