/**
 * Exporting the shown route (the whole route, whatever the zoom) as a standalone SVG document or
 * a PNG image: the drawn edges and nodes, the token
 * labels above, the layer labels left, a title line and the legend's key. The document is built
 * as DOM nodes and serialised (XMLSerializer escapes every token); the PNG is that SVG drawn on
 * a canvas from a data: URL (allowed by the page's CSP; no network). Colours are the vocabulary's
 * fixed ones on white, as in the daemon's SVG export. The host saves either.
 */

import {el, shownToken, svg, SVG} from './dom';
import {clip, edgeColour, nodeColour, nodeOpacity, rowLabel} from '../shared/display';
import {COLOURS, EDGE_VOCABULARY, NODE_SIZES, NODE_VOCABULARY, OUTPUT_NODE} from '../shared/protocol/vocabulary';
import {MARGIN} from './layout';
import {exportButton, exportMenu, exportPng, exportSvg, summary, title} from './shell';
import {currentToken, post, shown} from './state';

/** PNG sides are kept under this (px) so the canvas stays within the browser's limits. */
const MAX_PNG_SIDE = 8000;
const LABEL_BAND = 70; // room for rotated token labels above the graph

/** The exported document's colours: the vocabulary's fixed hex values on white, as the daemon's
 * SVG export (`lmscope trace --svg`) draws them, whatever the editor's theme. */
const PAPER = {background: '#ffffff', foreground: '#222222', muted: '#777777'};

/** The route as an SVG document (text). */
export function routeSvg(): string {
  const q = shown.queries, layout = shown.layout;
  if (q === null || layout === null) throw new Error('no route is shown');
  const top = LABEL_BAND + 24;
  const width = layout.width, height = layout.height + top;
  const doc = svg('svg', {xmlns: SVG, width, height, viewBox: `0 0 ${width} ${height}`, 'font-family': 'monospace', 'font-size': 11});
  doc.append(svg('rect', {x: 0, y: 0, width, height, fill: PAPER.background}));
  const heading = svg('text', {x: 8, y: 16, fill: PAPER.foreground, 'font-size': 12});
  heading.textContent = `${title.textContent ?? ''} · token ${currentToken()} · ${summary.textContent ?? ''}`;
  doc.append(heading);
  const body = svg('g', {transform: `translate(0 ${top})`});
  doc.append(body);
  for (const row of layout.rows) {
    body.append(svg('line', {x1: MARGIN.left / 2, x2: width - MARGIN.right / 2, y1: row.y, y2: row.y, stroke: PAPER.muted, 'stroke-opacity': 0.2}));
    const label = svg('text', {x: 4, y: row.y - 3, fill: PAPER.muted, 'font-size': 9});
    label.textContent = rowLabel(row.layer);
    body.append(label);
  }
  for (const column of layout.columns) {
    if (column.collapsed) continue;
    const output = column.position === currentToken();
    const label = svg('text', {x: 0, y: 0, fill: output ? COLOURS[OUTPUT_NODE.colour].hex : PAPER.foreground, transform: `translate(${column.x} ${top - 6}) rotate(-60)`});
    label.textContent = `${column.position} ${clip(shownToken(q, column.position), 14)}`;
    doc.append(label);
  }
  for (const path of layout.edges) {
    const shape = svg('path', {
      d: path.d,
      fill: 'none',
      stroke: COLOURS[edgeColour(path.kind)].hex,
      'stroke-width': path.width,
      'stroke-opacity': (0.3 + 0.7 * Math.sqrt(Math.min(1, Math.abs(path.flow)))).toFixed(2),
      'stroke-linecap': 'round',
    });
    const dash = EDGE_VOCABULARY[path.kind].dash;
    if (dash !== null) shape.setAttribute('stroke-dasharray', dash);
    body.append(shape);
  }
  for (const node of layout.nodes) {
    const fill = COLOURS[nodeColour(node.id.kind)].hex;
    const opacity = nodeOpacity(node.share).toFixed(2);
    const side = node.r * 0.886;
    const shape =
      NODE_VOCABULARY[node.id.kind].shape === 'square'
        ? svg('rect', {x: node.x - side, y: node.y - side, width: 2 * side, height: 2 * side, rx: 1.5, fill, 'fill-opacity': opacity})
        : svg('circle', {cx: node.x, cy: node.y, r: node.r, fill, 'fill-opacity': opacity});
    if (node.isOutput) {
      shape.setAttribute('stroke', COLOURS[OUTPUT_NODE.colour].hex);
      shape.setAttribute('stroke-width', '2.5');
    }
    const tip = svg('title');
    tip.textContent = `${node.key} share ${node.share.toFixed(3)}`;
    shape.append(tip);
    body.append(shape);
  }
  const kinds = (['residual', 'post_attention', 'ffn', 'embedding'] as const).map((kind) => `${NODE_VOCABULARY[kind].letter} ${NODE_VOCABULARY[kind].name}`);
  const edges = (['attention', 'ffn', 'residual'] as const).map((kind) => `${EDGE_VOCABULARY[kind].name} edges`);
  const key = svg('text', {x: 8, y: 32, fill: PAPER.muted, 'font-size': 10});
  key.textContent = `${kinds.join(' · ')} · ${edges.join(' · ')} · ${NODE_SIZES.legend}`;
  doc.append(key);
  return new XMLSerializer().serializeToString(doc);
}

/** The route as PNG bytes, base64 (twice the layout's resolution, within MAX_PNG_SIDE). */
export async function routePng(): Promise<string> {
  const text = routeSvg();
  const layout = shown.layout!;
  const width = layout.width, height = layout.height + LABEL_BAND + 24;
  const scale = Math.min(2, MAX_PNG_SIDE / width, MAX_PNG_SIDE / height);
  const image = new Image();
  image.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(text)}`;
  await image.decode();
  const canvas = el('canvas', {width: String(Math.max(1, Math.round(width * scale))), height: String(Math.max(1, Math.round(height * scale)))});
  const ctx = canvas.getContext('2d');
  if (ctx === null) throw new Error('no 2D canvas');
  ctx.scale(scale, scale);
  ctx.drawImage(image, 0, 0, width, height);
  const url = canvas.toDataURL('image/png');
  return url.slice(url.indexOf(',') + 1);
}

function fileName(extension: string): string {
  const stem = (title.textContent ?? 'trace').replace(/\.lmtrace$/i, '').replace(/[^A-Za-z0-9._-]+/g, '-').slice(0, 80) || 'trace';
  return `${stem}.token-${currentToken()}.${extension}`;
}

export function installExport(): void {
  const close = () => {
    exportMenu.hidden = true;
    exportButton.setAttribute('aria-expanded', 'false');
  };
  exportButton.addEventListener('click', () => {
    exportMenu.hidden = !exportMenu.hidden;
    exportButton.setAttribute('aria-expanded', String(!exportMenu.hidden));
    if (!exportMenu.hidden) exportSvg.focus();
  });
  const run = (format: 'svg' | 'png') => {
    close();
    const made = format === 'svg' ? Promise.resolve(routeSvg()) : routePng();
    made.then(
      (data) => post({type: 'export', format, data, name: fileName(format)}),
      (error: unknown) => post({type: 'error', message: `export as ${format.toUpperCase()} failed: ${error instanceof Error ? error.message : String(error)}`}),
    );
  };
  exportSvg.addEventListener('click', () => run('svg'));
  exportPng.addEventListener('click', () => run('png'));
  window.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') close();
  });
  window.addEventListener('click', (event) => {
    if (event.target instanceof Node && !exportButton.contains(event.target) && !exportMenu.contains(event.target)) close();
  });
}
