/**
 * Drawing the shown route: the route of the current output token at the current threshold and
 * mode, laid out (layout.ts) and drawn into the SVG viewport (rows, token labels, edges, nodes),
 * with the summary line. Remembers which SVG element stands for which node or edge, for the
 * hover cards and the details panel (inspect.ts). Token text reaches the SVG as text only.
 */

import {nodeLabel} from '../shared/graph/routes';
import {fmt, quoted, svg, tokenAt} from './dom';
import {clip, DEFAULT_LAYOUT, displayToken, layoutRoute, type EdgePath, type NodeBox} from './layout';
import {edgeTitle} from './panels';
import {graph, hideCard, showMessage, summary, viewport} from './shell';
import {currentToken, shown, view} from './state';

const nodeElements = new Map<SVGElement, NodeBox>();
const edgeElements = new Map<SVGElement, EdgePath>();

/** The node or edge an event's target draws, with its element; null for anything else. */
export function drawnAt(target: EventTarget | null): {node?: NodeBox; edge?: EdgePath; element: SVGElement} | null {
  if (!(target instanceof SVGElement)) return null;
  const node = nodeElements.get(target);
  if (node) return {node, element: target};
  const edge = edgeElements.get(target);
  if (edge) return {edge, element: target};
  return null;
}

/** Recompute and draw the route (a route the trace cannot answer shows its error instead). */
export function render(): void {
  hideCard();
  nodeElements.clear();
  edgeElements.clear();
  const q = shown.queries;
  if (q === null) return;
  let route;
  try {
    route = q.route(currentToken(), view.threshold, view.mode);
  } catch (error) {
    viewport.replaceChildren();
    showMessage(error instanceof Error ? error.message : String(error));
    return;
  }
  showMessage(null);
  const layout = layoutRoute(route, q.nTokens, q.nLayers, {...DEFAULT_LAYOUT, collapse: view.collapse});
  shown.layout = layout;
  const predicted = q.predictions(currentToken())[0];
  summary.textContent =
    `${route.edges.length} edges, ${route.nodes.length} nodes` + (predicted ? ` · predicts ${quoted(predicted.token)} (${fmt(predicted.prob, 2)})` : '');
  graph.setAttribute('aria-label', `Route of token ${currentToken()}: ${route.edges.length} edges`);

  const grid = svg('g', {class: 'grid'});
  for (const row of layout.rows) {
    grid.append(svg('line', {x1: 0, x2: layout.width, y1: row.y, y2: row.y, class: 'row-line'}));
    const label = svg('text', {x: 4, y: row.y - 4, class: 'row-label'});
    label.textContent = row.layer < 0 ? 'emb' : `L${row.layer}`;
    grid.append(label);
  }
  const labels = svg('g', {class: 'tokens'});
  // Token labels below the embeddings and above the output row (a tall graph opens at the top).
  const labelRows = [layout.height - DEFAULT_LAYOUT.marginY + 22, DEFAULT_LAYOUT.marginY - 26];
  for (const column of layout.columns) {
    const text = displayToken(q.trace.tokens.strings[column.position] ?? '');
    for (const y of labelRows) {
      const label = svg('text', {x: column.x, y, class: column.collapsed ? 'token collapsed' : 'token', 'text-anchor': 'middle'});
      label.textContent = column.collapsed ? '⋮' : clip(text, 9);
      const tip = svg('title');
      tip.textContent = `${column.position}: ${text}`;
      label.append(tip);
      if (column.position === currentToken()) label.classList.add('output');
      labels.append(label);
    }
  }

  const edgesGroup = svg('g', {class: 'edges'});
  for (const path of layout.edges) {
    const e = svg('path', {
      d: path.d,
      class: `edge ${path.kind}${path.selfAttention ? ' self' : ''}`,
      'stroke-width': path.width,
      'stroke-opacity': String(Math.min(1, 0.35 + Math.abs(path.edge.weight))),
      tabindex: '0',
      role: 'button',
      'aria-label': edgeTitle(path.edge),
    });
    edgeElements.set(e, path);
    edgesGroup.append(e);
  }
  const nodesGroup = svg('g', {class: 'nodes'});
  for (const box of layout.nodes) {
    const r = box.id.kind === 'ffn' ? 4.5 : 5.5;
    const shape =
      box.id.kind === 'ffn'
        ? svg('rect', {x: box.x - r, y: box.y - r, width: 2 * r, height: 2 * r, rx: 1.5})
        : svg('circle', {cx: box.x, cy: box.y, r: box.isOutput ? r + 2 : r});
    shape.setAttribute('class', `node ${box.id.kind}${box.isOutput ? ' output' : ''}`);
    shape.setAttribute('fill-opacity', String(Math.min(1, 0.3 + Math.abs(box.share))));
    shape.setAttribute('tabindex', '0');
    shape.setAttribute('role', 'button');
    shape.setAttribute('aria-label', `${nodeLabel(box.id)} ${tokenAt(q, box.id.position)}, share ${fmt(box.share)}`);
    nodeElements.set(shape, box);
    nodesGroup.append(shape);
  }
  viewport.replaceChildren(grid, labels, edgesGroup, nodesGroup);
}
