/**
 * Drawing the shown route: the route of the current output token at the current threshold and
 * mode, laid out for the canvas (layout.ts) and drawn into the SVG viewport (layer lines, column
 * guides, edges, nodes), with the pinned token and layer labels and the summary line. Remembers
 * which SVG element stands for which node or edge, for the hover cards and the details panel
 * (inspect.ts). Token text reaches the page as text only.
 *
 * Labels take a level-of-detail form: a token label gets its column's width on screen (the rest
 * is cut with an ellipsis) and is left out when that is too narrow to read; layer labels are
 * left out where they would crowd, the top layer's kept. So labels never overlap.
 */

import type {ZoomTransform} from 'd3-zoom';
import {clip, nodeOpacity, rowLabel, tokenHints} from '../shared/display';
import {chatOf, generationOf, isTemplateToken, TEMPLATE_TOKEN_TITLE} from '../shared/traces/chat';
import {EDGE_VOCABULARY} from '../shared/protocol/vocabulary';
import {fmt, quoted, shownToken, svg, tokenAt, el} from './dom';
import {layoutRoute, MARGIN, type Column, type EdgePath, type GraphLayout, type NodeBox, type Row} from './layout';
import {diffActive, diffEdgeClass, diffNodeClass, diffRoute, diffSummary} from './diffView';
import {edgeTitle} from './panels';
import {columnLabels, graph, hideCard, rowLabels, showMessage, summary, viewport} from './shell';
import {currentToken, shown, view} from './state';
import {canvasHeight, canvasWidth, constrain, currentTransform, onTransform, setBounds} from './zoom';

const nodeElements = new Map<SVGElement, NodeBox>();
const edgeElements = new Map<SVGElement, EdgePath>();
/** The drawn elements by node and edge key, reused by the next render. */
/** Every node and edge element made for this trace, by key, drawn or not: a re-route at another
 * τ puts back the elements it had before instead of making them again (at most POOL_SIZE kept). */
let nodePool = new Map<string, SVGElement>();
let edgePool = new Map<string, SVGPathElement>();
/** The keys drawn now. */
let drawnNodes = new Set<string>();
let drawnEdges = new Set<string>();
const POOL_SIZE = 40_000;
let gridGroup: SVGGElement = svg('g', {class: 'grid'});
const edgesGroup = svg('g', {class: 'edges'});
const nodesGroup = svg('g', {class: 'nodes'});

/** The attribute values each drawn element was given, so a render sets only what changed. */
const given = new WeakMap<Element, Map<string, string>>();

function set(element: Element, name: string, value: string): void {
  let values = given.get(element);
  if (values === undefined) given.set(element, (values = new Map<string, string>()));
  if (values.get(name) === value) return;
  values.set(name, value);
  element.setAttribute(name, value);
}

/** A drawn node's or edge's accessible name, given when it is first focused or pointed at
 * (thousands of names nobody reads would slow every render). */
export function describe(element: SVGElement): void {
  const q = shown.queries;
  const node = nodeElements.get(element);
  if (node && q) element.setAttribute('aria-label', `${node.key} ${tokenAt(q, node.id.position)}, share ${fmt(node.share)}`);
  const edge = edgeElements.get(element);
  if (edge) element.setAttribute('aria-label', edgeTitle(edge.edge));
}

/** Forget every drawn element (a new trace, or none). */
export function clearDrawing(): void {
  nodePool = new Map();
  edgePool = new Map();
  drawnNodes = new Set();
  drawnEdges = new Set();
  nodeElements.clear();
  edgeElements.clear();
  edgesGroup.replaceChildren();
  nodesGroup.replaceChildren();
  viewport.replaceChildren();
  columnLabels.replaceChildren();
  rowLabels.replaceChildren();
}
let columnLabelElements: {column: Column; label: HTMLElement}[] = [];
let rowLabelElements: {row: Row; label: HTMLElement}[] = [];

/** A token label is at least this wide (px), and its column's width less this gap. */
const LABEL_WIDTH = 40;
const LABEL_GAP = 3;
/** Token labels take up to this many staggered rows (the pinned strip is this tall). */
const LABEL_ROWS = 2;
const LABEL_ROW_HEIGHT = 15;
/** Layer labels closer than this (px) to the one above are left out. */
const ROW_LABEL_SPACING = 13;

/** The node or edge an event's target draws, with its element; null for anything else. */
export function drawnAt(target: EventTarget | null): {node?: NodeBox; edge?: EdgePath; element: SVGElement} | null {
  if (!(target instanceof SVGElement)) return null;
  const node = nodeElements.get(target);
  if (node) return {node, element: target};
  const edge = edgeElements.get(target);
  if (edge) return {edge, element: target};
  return null;
}

/** The element drawing the node or edge of `key` (NodeBox.key / EdgePath.key), if shown. */
export function elementOf(key: string): {node?: NodeBox; edge?: EdgePath; element: SVGElement} | null {
  for (const [element, node] of nodeElements) if (node.key === key) return {node, element};
  for (const [element, edge] of edgeElements) if (edge.key === key) return {edge, element};
  return null;
}

/** Place the pinned labels for the transform `t` (called on every zoom and pan). A token label
 * gets its column's width on screen, or LABEL_WIDTH when the column is narrower; labels are
 * placed by importance (the output column, then by the share of the prediction in the column),
 * on the first of LABEL_ROWS staggered rows where it overlaps no placed one, else left out. */
export function placeLabels(t: ZoomTransform): void {
  const width = canvasWidth();
  const placed: [number, number][][] = Array.from({length: LABEL_ROWS}, () => []);
  for (const {column, label} of columnLabelElements) {
    const centre = t.applyX(column.x);
    const own = column.width * t.k - LABEL_GAP;
    const w = Math.max(own, LABEL_WIDTH);
    // A column near an edge of the canvas keeps its label, moved inside.
    const left = Math.min(width - w, Math.max(MARGIN.left - 4, centre - w / 2));
    const inside = centre >= MARGIN.left - 4 && centre <= width;
    const row = inside ? placed.findIndex((taken) => taken.every(([l, r]) => left + w <= l || left >= r)) : -1;
    label.hidden = row < 0;
    if (row < 0) continue;
    placed[row]!.push([left, left + w]);
    label.style.top = `${3 + row * LABEL_ROW_HEIGHT}px`;
    label.style.left = `${left}px`;
    label.style.width = `${w}px`;
  }
  const height = canvasHeight();
  let above = -Infinity; // screen y of the last label shown, going down from the top layer
  for (let i = rowLabelElements.length - 1; i >= 0; i--) {
    const {label, row} = rowLabelElements[i]!;
    const y = t.applyY(row.y);
    const visible = y >= MARGIN.top - 2 && y <= height - 4 && y - above >= ROW_LABEL_SPACING;
    label.hidden = !visible;
    if (visible) {
      label.style.top = `${y - 7}px`;
      above = y;
    }
  }
}
onTransform(placeLabels);

function drawLabels(layout: GraphLayout): void {
  const q = shown.queries!;
  columnLabelElements = [];
  const columns: HTMLElement[] = [];
  // A column's importance: the share of the prediction its nodes carry (the output's first).
  const weight = new Float64Array(layout.columns.length);
  for (const node of layout.nodes) weight[node.id.position] = weight[node.id.position]! + Math.abs(node.share);
  weight[currentToken()] = Infinity;
  const chat = chatOf(q.trace.extra, q.nTokens);
  const generation = generationOf(q.trace.extra, q.nTokens);
  for (const column of layout.columns) {
    if (column.collapsed) continue;
    const text = shownToken(q, column.position);
    const hints = tokenHints(q.trace.tokens.strings[column.position] ?? '', q.trace.tokens.bytes[column.position] ?? null);
    // Tokens the chat template added (role headers, separators) are dimmed and italic.
    const template = isTemplateToken(chat, generation, column.position);
    if (template) hints.push(TEMPLATE_TOKEN_TITLE + (chat?.exact === false ? ' (approximately)' : ''));
    const k = generation === null ? -1 : column.position - generation.promptTokens;
    if (generation !== null && k >= 0) hints.push(`generated token ${k + 1}`);
    const title = [`${column.position}: ${clip(text, 200)}`, ...hints].join('\n');
    const classes = ['column-label', ...(column.position === currentToken() ? ['output'] : []), ...(template ? ['template'] : []), ...(k >= 0 ? ['generated'] : [])];
    const label = el('div', {class: classes.join(' '), title}, clip(text, 40));
    label.dataset['position'] = String(column.position);
    columnLabelElements.push({column, label});
    columns.push(label);
  }
  columnLabelElements.sort((a, b) => weight[b.column.position]! - weight[a.column.position]! || a.column.position - b.column.position);
  columnLabels.replaceChildren(...columns);
  rowLabelElements = layout.rows.map((row) => ({row, label: el('div', {class: row.quiet ? 'row-label quiet' : 'row-label'}, rowLabel(row.layer))}));
  rowLabels.replaceChildren(...rowLabelElements.map((r) => r.label));
}

/** Recompute the route and draw it for the canvas's size (a route the trace cannot answer
 * shows its error instead). Keeps the zoom where it is, within the new bounds. */
export function render(): void {
  hideCard();
  nodeElements.clear();
  edgeElements.clear();
  const q = shown.queries;
  if (q === null) return;
  let route;
  try {
    route = diffActive() ? diffRoute(q, currentToken(), view.threshold, view.mode) : q.route(currentToken(), view.threshold, view.mode);
  } catch (error) {
    clearDrawing();
    showMessage(error instanceof Error ? error.message : String(error));
    return;
  }
  showMessage(null);
  const layout = layoutRoute(route, q.nTokens, q.nLayers, {width: canvasWidth(), height: canvasHeight(), collapse: view.collapse});
  shown.layout = layout;
  const predicted = q.predictions(currentToken())[0];
  summary.textContent = diffActive()
    ? diffSummary()
    : `${route.edges.length} edges, ${route.nodes.length} nodes` + (predicted ? ` · predicts ${quoted(predicted.token)} (${fmt(predicted.prob, 2)})` : '');
  graph.setAttribute('aria-label', `Route of token ${currentToken()}: ${route.edges.length} edges`);
  const grid = svg('g', {class: 'grid'});
  for (const row of layout.rows) grid.append(svg('line', {x1: MARGIN.left / 2, x2: layout.width - MARGIN.right / 2, y1: row.y, y2: row.y, class: row.quiet ? 'row-line quiet' : 'row-line'}));
  const top = layout.rows[layout.rows.length - 1]?.y ?? 0, bottom = layout.rows[0]?.y ?? 0;
  for (const column of layout.columns) {
    if (!column.collapsed) grid.append(svg('line', {x1: column.x, x2: column.x, y1: top, y2: bottom, class: column.position === currentToken() ? 'column-line output' : 'column-line'}));
  }

  // Elements are kept by key across renders (a new τ keeps most of the route): only what
  // changed is created or removed, which keeps re-routing a 1000-token trace quick.
  const keptEdges = new Set<string>();
  const addedEdges = document.createDocumentFragment();
  for (const path of layout.edges) {
    let e = edgePool.get(path.key);
    if (e === undefined) {
      e = svg('path', {class: `edge ${path.kind}${path.selfAttention ? ' self' : ''}`, tabindex: '0', role: 'button', 'data-edge': path.key});
      const dash = EDGE_VOCABULARY[path.kind].dash;
      if (dash !== null) e.setAttribute('stroke-dasharray', dash);
      edgePool.set(path.key, e);
    }
    if (!drawnEdges.has(path.key)) addedEdges.append(e);
    set(e, 'class', `edge ${path.kind}${path.selfAttention ? ' self' : ''}${diffEdgeClass(path.key)}`);
    set(e, 'd', path.d);
    set(e, 'stroke-width', String(path.width));
    set(e, 'stroke-opacity', fmt(Math.min(1, 0.3 + 0.7 * Math.sqrt(Math.abs(path.flow))), 2));
    keptEdges.add(path.key);
    edgeElements.set(e, path);
  }
  for (const key of drawnEdges) if (!keptEdges.has(key)) edgePool.get(key)?.remove();
  edgesGroup.append(addedEdges);
  drawnEdges = keptEdges;
  const keptNodes = new Set<string>();
  const addedNodes = document.createDocumentFragment();
  for (const box of layout.nodes) {
    const r = box.r;
    let shape = nodePool.get(box.key);
    if (shape === undefined) {
      shape = box.id.kind === 'ffn' ? svg('rect', {rx: 1.5}) : svg('circle');
      shape.setAttribute('tabindex', '0');
      shape.setAttribute('role', 'button');
      shape.setAttribute('data-node', box.key);
      nodePool.set(box.key, shape);
    }
    if (!drawnNodes.has(box.key)) addedNodes.append(shape);
    set(shape, 'class', `node ${box.id.kind}${box.isOutput ? ' output' : ''}${diffNodeClass(box.key)}`);
    if (box.id.kind === 'ffn') {
      const side = Math.round(r * 88.6) / 100;
      set(shape, 'x', String(box.x - side));
      set(shape, 'y', String(box.y - side));
      set(shape, 'width', String(2 * side));
      set(shape, 'height', String(2 * side));
    } else {
      set(shape, 'cx', String(box.x));
      set(shape, 'cy', String(box.y));
      set(shape, 'r', String(r));
    }
    set(shape, 'fill-opacity', fmt(nodeOpacity(box.share), 2));
    keptNodes.add(box.key);
    nodeElements.set(shape, box);
  }
  for (const key of drawnNodes) if (!keptNodes.has(key)) nodePool.get(key)?.remove();
  nodesGroup.append(addedNodes);
  drawnNodes = keptNodes;
  // A trace with very many routes seen: forget the elements not drawn now.
  if (edgePool.size + nodePool.size > POOL_SIZE) {
    for (const key of edgePool.keys()) if (!keptEdges.has(key)) edgePool.delete(key);
    for (const key of nodePool.keys()) if (!keptNodes.has(key)) nodePool.delete(key);
  }
  gridGroup.replaceWith(grid);
  gridGroup = grid;
  if (!viewport.contains(edgesGroup)) viewport.replaceChildren(gridGroup, edgesGroup, nodesGroup);
  drawLabels(layout);
  markSelected();
  setBounds(layout);
  constrain();
  placeLabels(currentTransform());
}

/** Mark the selected node or edge (the one the details panel shows). */
export function markSelected(): void {
  for (const element of viewport.querySelectorAll('.selected')) element.classList.remove('selected');
  if (shown.selected === null) return;
  elementOf(shown.selected)?.element.classList.add('selected');
}
