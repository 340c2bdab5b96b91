/**
 * Where the flow graph draws each node and edge of a route: a pure function from a
 * `RouteResult` to SVG coordinates (no DOM, so it is tested under `node --test`).
 *
 * Tokens are columns (left to right), layers are rows (bottom to top): the embeddings at the
 * bottom, then per layer the post-attention node A, the FFN node M (offset to the right of its
 * column, between A and R) and the residual node R; the output node R(L-1, t) is at the top.
 * Columns with no node on the route are collapsed to a narrow strip when `collapse` is set, so a
 * 200-token prompt stays readable.
 *
 * Edges: residual edges are vertical lines inside a column; attention edges are curves between
 * columns, and the self-attention edge (source and target at the same position) is a loop to the
 * left of the column, so it never hides under the residual edge; FFN edges are short diagonals
 * to and from the offset M node.
 */

import type {EdgeKind, NodeId, NodeKind, RouteEdge, RouteResult} from '../shared/protocol/types';

export interface LayoutOptions {
  /** Width of a column holding route nodes. */
  readonly columnWidth: number;
  /** Width of a collapsed column (no route node). */
  readonly collapsedWidth: number;
  /** Vertical distance between the A and R levels of one layer. */
  readonly levelHeight: number;
  readonly marginX: number;
  /** Space above the output node and below the embeddings (token labels go there). */
  readonly marginY: number;
  readonly collapse: boolean;
}

export const DEFAULT_LAYOUT: LayoutOptions = {
  columnWidth: 72,
  collapsedWidth: 14,
  levelHeight: 34,
  marginX: 24,
  marginY: 56,
  collapse: true,
};

export interface NodeBox {
  readonly id: NodeId;
  readonly x: number;
  readonly y: number;
  /** Share of the output flowing through the node (0..1 in renormalize mode). */
  readonly share: number;
  readonly isOutput: boolean;
}

export interface EdgePath {
  readonly edge: RouteEdge;
  readonly kind: EdgeKind;
  /** Attention edge whose source and target are at the same position. */
  readonly selfAttention: boolean;
  readonly x1: number;
  readonly y1: number;
  readonly x2: number;
  readonly y2: number;
  /** SVG path data. */
  readonly d: string;
  /** Stroke width from the weight. */
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
  readonly y: number;
}

export interface GraphLayout {
  readonly width: number;
  readonly height: number;
  readonly columns: readonly Column[];
  readonly rows: readonly Row[];
  readonly nodes: readonly NodeBox[];
  readonly edges: readonly EdgePath[];
}

/** Level of a node in half-layer units from the bottom: X 0, A(l) 2l+1, M(l) 2l+1.5, R(l) 2l+2. */
export function nodeLevel(node: NodeId): number {
  const offsets: Record<NodeKind, number> = {embedding: 0, post_attention: 1, ffn: 1.5, residual: 2};
  return node.kind === 'embedding' ? 0 : 2 * node.layer + offsets[node.kind];
}

/** Stroke width of an edge of weight `w` (|w| clamped to 1): 0.75 .. 7 px. */
export function strokeWidth(weight: number): number {
  const w = Math.min(1, Math.abs(Number.isFinite(weight) ? weight : 0));
  return Math.round((0.75 + 6.25 * w) * 100) / 100;
}

const round = (v: number) => Math.round(v * 100) / 100;

export function layoutRoute(route: RouteResult, nTokens: number, nLayers: number, options: LayoutOptions = DEFAULT_LAYOUT): GraphLayout {
  const used = new Set<number>();
  for (const node of route.nodes) used.add(node.id.position);
  used.add(route.token);

  const columns: Column[] = [];
  let x = options.marginX;
  for (let position = 0; position < nTokens; position++) {
    const collapsed = options.collapse && !used.has(position);
    const width = collapsed ? options.collapsedWidth : options.columnWidth;
    columns.push({position, x: round(x + width / 2), width, collapsed});
    x += width;
  }
  const width = round(x + options.marginX);
  const topLevel = 2 * nLayers;
  const height = round(2 * options.marginY + topLevel * options.levelHeight);
  const levelY = (level: number) => round(options.marginY + (topLevel - level) * options.levelHeight);
  const rows: Row[] = [{layer: -1, y: levelY(0)}];
  for (let layer = 0; layer < nLayers; layer++) rows.push({layer, y: levelY(2 * layer + 2)});

  const position = (node: NodeId): [number, number] => {
    const column = columns[node.position];
    const cx = column === undefined ? options.marginX : column.x;
    const dx = node.kind === 'ffn' ? (column?.width ?? options.columnWidth) * 0.3 : 0;
    return [round(cx + dx), levelY(nodeLevel(node))];
  };

  const nodes: NodeBox[] = route.nodes.map(({id, share}) => {
    const [nx, ny] = position(id);
    return {
      id,
      x: nx,
      y: ny,
      share,
      isOutput: id.kind === 'residual' && id.layer === nLayers - 1 && id.position === route.token,
    };
  });

  const edges: EdgePath[] = route.edges.map((edge) => {
    const [x1, y1] = position(edge.source);
    const [x2, y2] = position(edge.target);
    const selfAttention = edge.kind === 'attention' && edge.source.position === edge.target.position;
    let d: string;
    if (selfAttention) {
      const bulge = round(Math.max(8, (columns[edge.target.position]?.width ?? options.columnWidth) * 0.35));
      d = `M${x1},${y1} C${round(x1 - bulge)},${y1} ${round(x2 - bulge)},${y2} ${x2},${y2}`;
    } else if (edge.kind === 'attention') {
      const my = round((y1 + y2) / 2);
      d = `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`;
    } else {
      d = `M${x1},${y1} L${x2},${y2}`;
    }
    return {edge, kind: edge.kind, selfAttention, x1, y1, x2, y2, d, width: strokeWidth(edge.weight)};
  });

  return {width, height, columns, rows, nodes, edges};
}

/** A token as the graph shows it: spaces as `·`, newlines as `⏎`, tabs as `→`, other control
 * characters as `\xXX` and other (invisible) whitespace and format characters (bidi overrides
 * and isolates, zero-width characters: they would reorder or hide what is shown) as `\uXXXX`.
 * The result is still untrusted text (use textContent). */
export function displayToken(text: string): string {
  let out = '';
  for (const ch of text) {
    const code = ch.codePointAt(0)!;
    if (ch === ' ') out += '·';
    else if (ch === '\n') out += '⏎';
    else if (ch === '\r') out += '↵';
    else if (ch === '\t') out += '→';
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, '0')}`;
    else if (/[\s\p{Cf}]/u.test(ch)) out += `\\u${code.toString(16).padStart(4, '0')}`;
    else out += ch;
  }
  return out.length === 0 ? '∅' : out;
}

/** At most `max` characters of a display token, with an ellipsis. */
export function clip(text: string, max: number): string {
  const chars = Array.from(text);
  return chars.length <= max ? text : chars.slice(0, Math.max(1, max - 1)).join('') + '…';
}
