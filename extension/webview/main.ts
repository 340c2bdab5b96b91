/**
 * The flow-graph webview (browser). The host posts the `.lmtrace` bytes; this script decodes
 * them with the trace library and recomputes routes locally whenever the output token, the
 * threshold or the mode changes (no round trip). Everything from the trace (token strings above
 * all) is untrusted text: it only ever reaches the DOM through `textContent` / SVG text nodes.
 *
 * This module is the page: the controls, rendering a route, hover and click wiring, zoom and
 * pan, state restore (a little over our ~400-line guide, one section each). The card and panel
 * contents are in panels.ts, the DOM helpers in dom.ts, the geometry in layout.ts.
 */

import './style.css';
import {DEFAULTS, type NodeId, type ThresholdMode} from '../shared/protocol/types';
import {LmscopeError} from '../shared/errors';
import {readTraceFile} from '../shared/traces/lmtrace';
import {TraceQueries} from '../shared/traces/trace';
import {nodeLabel} from '../shared/graph/routes';
import {decodeBase64, isHostToWebview, THRESHOLD_RANGE, type GraphSettings, type WebviewToHost} from '../shared/webviewMessages';
import {byId, el, fmt, quoted, svg} from './dom';
import {clip, DEFAULT_LAYOUT, displayToken, layoutRoute, type EdgePath, type GraphLayout, type NodeBox} from './layout';
import {DaemonLink} from './drill';
import {edgeCard, edgeTitle, headsPanel, neuronsPanel, nodeCard, projectionPanel, tokenAt} from './panels';

interface VsCodeApi {
  postMessage(message: WebviewToHost): void;
  getState(): unknown;
  setState(state: unknown): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

interface ViewState {
  threshold: number;
  mode: ThresholdMode;
  token: number | null; // null: the last token
  collapse: boolean;
  zoom: {k: number; x: number; y: number};
}

const vscode = acquireVsCodeApi();
const link = new DaemonLink((m) => vscode.postMessage(m));

// ---- the fixed shell (built here, not in the host's HTML) ----------------------------------------
const root = byId<HTMLDivElement>('root');
const header = el('header', {class: 'toolbar', role: 'toolbar', 'aria-label': 'Graph controls'});
const title = el('span', {class: 'title'});
const tokenLabel = el('label', {}, 'Output ');
const tokenSelect = el('select', {id: 'token', 'aria-label': 'Output token whose route is shown'});
tokenLabel.append(tokenSelect);
const thresholdLabel = el('label', {}, 'τ ');
// The controls span the lmscope.threshold setting's range (a typed number may go beyond, up to
// THRESHOLD_RANGE.max), from the default minThreshold (syncControls follows the trace's).
const MAX = '0.1';
const MIN = String(DEFAULTS.MinThreshold);
const thresholdRange = el('input', {id: 'threshold-range', type: 'range', min: MIN, max: MAX, step: '0.001', 'aria-label': 'Threshold'});
const thresholdNumber = el('input', {id: 'threshold', type: 'number', min: MIN, max: MAX, step: '0.001', 'aria-label': 'Threshold (precise)'});
thresholdLabel.append(thresholdRange, thresholdNumber);
const modeLabel = el('label', {});
const modeBox = el('input', {id: 'renormalize', type: 'checkbox'});
modeLabel.append(modeBox, document.createTextNode(' renormalize'));
const collapseLabel = el('label', {});
const collapseBox = el('input', {id: 'collapse', type: 'checkbox'});
collapseLabel.append(collapseBox, document.createTextNode(' collapse off-route tokens'));
const zoomOut = el('button', {type: 'button', title: 'Zoom out (-)', 'aria-label': 'Zoom out'}, '−');
const zoomIn = el('button', {type: 'button', title: 'Zoom in (+)', 'aria-label': 'Zoom in'}, '+');
const zoomFit = el('button', {type: 'button', title: 'Fit (0)', 'aria-label': 'Fit the graph'}, 'Fit');
const summary = el('span', {class: 'summary', 'aria-live': 'polite'});
const liveBadge = el('span', {class: 'badge live-badge', hidden: ''});
header.append(title, liveBadge, tokenLabel, thresholdLabel, modeLabel, collapseLabel, zoomOut, zoomIn, zoomFit, summary);

const message = el('div', {class: 'message', role: 'alert', hidden: ''});
const body = el('div', {class: 'body'});
const canvas = el('div', {class: 'canvas', tabindex: '0', 'aria-label': 'Flow graph: drag or arrow keys to pan, wheel or +/- to zoom'});
const graph = svg('svg', {class: 'graph', role: 'img'});
const viewport = svg('g', {class: 'viewport'});
graph.append(viewport);
canvas.append(graph);
const details = el('aside', {class: 'details', 'aria-live': 'polite', hidden: ''});
body.append(canvas, details);
const card = el('div', {class: 'card', role: 'tooltip', hidden: ''});
root.append(header, message, body, card);

// ---- state -------------------------------------------------------------------------------------
let queries: TraceQueries | null = null;
let layout: GraphLayout | null = null;
const saved = vscode.getState() as Partial<ViewState> | undefined;
const state: ViewState = {
  threshold: typeof saved?.threshold === 'number' ? saved.threshold : DEFAULTS.Threshold,
  mode: saved?.mode === 'raw' || saved?.mode === 'renormalize' ? saved.mode : DEFAULTS.ThresholdMode,
  token: typeof saved?.token === 'number' ? saved.token : null,
  collapse: saved?.collapse !== false,
  zoom: saved?.zoom ?? {k: 1, x: 0, y: 0},
};
const restored = saved !== undefined && typeof saved.threshold === 'number';

function persist(): void {
  vscode.setState(state);
}

function showMessage(text: string | null): void {
  message.hidden = text === null;
  message.textContent = text ?? '';
}

// ---- loading -----------------------------------------------------------------------------------
window.addEventListener('message', (event: MessageEvent<unknown>) => {
  const data = event.data;
  if (!isHostToWebview(data)) return;
  if (data.type === 'daemon') {
    link.set(data.live, data.reason);
    liveBadge.textContent = data.live ? 'live' : 'saved';
    liveBadge.title = data.live ? 'The daemon holds this trace with its model: every drill-down works' : `Drill-downs that need the model are off: ${data.reason}`;
    liveBadge.hidden = false;
    return;
  }
  if (data.type === 'queryResult') {
    link.answer(data);
    return;
  }
  if (data.type === 'loadError') {
    queries = null;
    title.textContent = data.name;
    viewport.replaceChildren();
    showMessage(data.message);
    return;
  }
  title.textContent = data.name;
  try {
    queries = new TraceQueries(readTraceFile(decodeBase64(data.bytes), data.name));
  } catch (error) {
    queries = null;
    viewport.replaceChildren();
    showMessage(error instanceof LmscopeError ? error.message : `Could not read ${data.name}: ${String(error)}`);
    return;
  }
  if (!restored) applySettings(data.settings);
  // A trace answers thresholds >= its minThreshold only.
  state.threshold = Math.max(state.threshold, queries.trace.settings.minThreshold);
  showMessage(null);
  populateTokens(queries);
  syncControls();
  render();
  if (!restored) fit();
  applyZoom();
});

function applySettings(settings: GraphSettings): void {
  state.threshold = settings.threshold;
  state.mode = settings.mode;
}

function populateTokens(q: TraceQueries): void {
  const strings = q.trace.tokens.strings;
  const options = strings.map((text, i) => el('option', {value: String(i)}, `${i}: ${clip(displayToken(text), 24)}`));
  tokenSelect.replaceChildren(...options);
  if (state.token !== null && state.token >= strings.length) state.token = null;
}

function currentToken(): number {
  return state.token ?? (queries === null ? 0 : queries.nTokens - 1);
}

function syncControls(): void {
  const min = queries?.trace.settings.minThreshold ?? DEFAULTS.MinThreshold;
  const lower = String(Math.max(DEFAULTS.MinThreshold, min));
  thresholdRange.min = lower;
  thresholdNumber.min = String(min);
  thresholdRange.value = String(state.threshold);
  thresholdNumber.value = String(state.threshold);
  modeBox.checked = state.mode === 'renormalize';
  collapseBox.checked = state.collapse;
  tokenSelect.value = String(currentToken());
}

// ---- controls ----------------------------------------------------------------------------------
function setThreshold(value: number): void {
  if (!Number.isFinite(value)) return;
  const min = queries?.trace.settings.minThreshold ?? DEFAULTS.MinThreshold;
  state.threshold = Math.min(THRESHOLD_RANGE.max, Math.max(min, value));
  syncControls();
  changed();
}

thresholdRange.addEventListener('input', () => setThreshold(Number(thresholdRange.value)));
thresholdNumber.addEventListener('change', () => setThreshold(Number(thresholdNumber.value)));
modeBox.addEventListener('change', () => {
  state.mode = modeBox.checked ? 'renormalize' : 'raw';
  changed();
});
collapseBox.addEventListener('change', () => {
  state.collapse = collapseBox.checked;
  changed();
});
tokenSelect.addEventListener('change', () => {
  const value = Number(tokenSelect.value);
  state.token = queries !== null && value === queries.nTokens - 1 ? null : value;
  changed();
});

function changed(): void {
  persist();
  vscode.postMessage({type: 'settingsChanged', settings: {threshold: state.threshold, mode: state.mode}});
  render();
}

// ---- rendering ---------------------------------------------------------------------------------
const nodeElements = new Map<SVGElement, NodeBox>();
const edgeElements = new Map<SVGElement, EdgePath>();

function render(): void {
  hideCard();
  nodeElements.clear();
  edgeElements.clear();
  if (queries === null) return;
  const q = queries;
  let route;
  try {
    route = q.route(currentToken(), state.threshold, state.mode);
  } catch (error) {
    viewport.replaceChildren();
    showMessage(error instanceof Error ? error.message : String(error));
    return;
  }
  showMessage(null);
  layout = layoutRoute(route, q.nTokens, q.nLayers, {...DEFAULT_LAYOUT, collapse: state.collapse});
  // The <svg> fills the canvas at 1:1; zoom and pan are the viewport group's transform only.
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
    const shown = displayToken(q.trace.tokens.strings[column.position] ?? '');
    for (const y of labelRows) {
      const label = svg('text', {x: column.x, y, class: column.collapsed ? 'token collapsed' : 'token', 'text-anchor': 'middle'});
      label.textContent = column.collapsed ? '⋮' : clip(shown, 9);
      const tip = svg('title');
      tip.textContent = `${column.position}: ${shown}`;
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

// ---- hover cards -------------------------------------------------------------------------------
function hideCard(): void {
  card.hidden = true;
}

function showCardAt(target: Element, fill: (into: HTMLElement) => void): void {
  card.replaceChildren();
  fill(card);
  card.hidden = false;
  const box = target.getBoundingClientRect();
  const left = Math.min(window.innerWidth - card.offsetWidth - 8, box.right + 8);
  const top = Math.min(window.innerHeight - card.offsetHeight - 8, box.top);
  card.style.left = `${Math.max(4, left)}px`;
  card.style.top = `${Math.max(4, top)}px`;
}

function hoverTarget(target: EventTarget | null): {node?: NodeBox; edge?: EdgePath; element: SVGElement} | null {
  if (!(target instanceof SVGElement)) return null;
  const node = nodeElements.get(target);
  if (node) return {node, element: target};
  const edge = edgeElements.get(target);
  if (edge) return {edge, element: target};
  return null;
}

function showCardFor(target: EventTarget | null): void {
  const hit = hoverTarget(target);
  if (hit === null) return;
  const q = queries;
  if (q === null) return;
  showCardAt(hit.element, (into) => (hit.node ? nodeCard(q, hit.node, into) : edgeCard(q, hit.edge!, into)));
}

viewport.addEventListener('mouseover', (event) => showCardFor(event.target));
viewport.addEventListener('focusin', (event) => showCardFor(event.target));
viewport.addEventListener('mouseout', (event) => {
  if (hoverTarget(event.target)) hideCard();
});
viewport.addEventListener('focusout', hideCard);
viewport.addEventListener('click', (event) => {
  if (!dragged) openDetails(event.target);
});
viewport.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' || event.key === ' ') {
    if (hoverTarget(event.target)) {
      event.preventDefault();
      event.stopPropagation();
      openDetails(event.target);
    }
  }
});

// ---- click: details panel ----------------------------------------------------------------------
function openDetails(target: EventTarget | null): void {
  const hit = hoverTarget(target);
  const q = queries;
  if (hit === null || q === null) return;
  const show = (fill: () => void) => {
    details.replaceChildren();
    const close = el('button', {type: 'button', class: 'close', 'aria-label': 'Close details'}, '×');
    close.addEventListener('click', () => {
      details.hidden = true;
      canvas.focus();
    });
    details.append(close);
    try {
      fill();
    } catch (error) {
      details.append(el('p', {class: 'note'}, error instanceof Error ? error.message : String(error)));
    }
    details.hidden = false;
    close.focus();
  };
  const context = {token: currentToken(), threshold: state.threshold, mode: state.mode};
  const neurons = (node: NodeId, offset: number): void => show(() => neuronsPanel(q, link, context, node, offset, details, (to) => neurons(node, to)));
  if (hit.edge && hit.edge.kind === 'attention') show(() => headsPanel(q, link, hit.edge!.edge, details));
  else if (hit.node && hit.node.id.kind === 'ffn') neurons(hit.node.id, 0);
  else if (hit.node) show(() => projectionPanel(q, link, hit.node!.id, details));
  else show(() => edgeCard(q, hit.edge!, details));
}

// ---- zoom and pan ------------------------------------------------------------------------------
function applyZoom(): void {
  const {k, x, y} = state.zoom;
  viewport.setAttribute('transform', `translate(${x} ${y}) scale(${k})`);
}

function zoomBy(factor: number, cx = canvas.clientWidth / 2, cy = canvas.clientHeight / 2): void {
  const z = state.zoom;
  const k = Math.min(8, Math.max(0.05, z.k * factor));
  state.zoom = {k, x: cx - ((cx - z.x) * k) / z.k, y: cy - ((cy - z.y) * k) / z.k};
  applyZoom();
  persist();
}

function fit(): void {
  if (layout === null) return;
  // The whole graph when it stays legible; else fit the width and show the top (the output).
  const w = canvas.clientWidth || 800, h = canvas.clientHeight || 600;
  const whole = Math.min(w / layout.width, h / layout.height);
  const k = Math.min(2, whole >= 0.4 ? whole : Math.max(0.4, Math.min(1, w / layout.width)));
  state.zoom = {k, x: Math.max(0, (w - layout.width * k) / 2), y: Math.max(0, (h - layout.height * k) / 2)};
  applyZoom();
  persist();
}

graph.setAttribute('width', '100%');
graph.setAttribute('height', '100%');
canvas.addEventListener(
  'wheel',
  (event) => {
    event.preventDefault();
    const box = canvas.getBoundingClientRect();
    zoomBy(Math.exp(-event.deltaY * 0.0015), event.clientX - box.left, event.clientY - box.top);
  },
  {passive: false},
);
let drag: {x: number; y: number; zx: number; zy: number; moved: boolean} | null = null;
let dragged = false; // the last pointer gesture panned: its click opens nothing
canvas.addEventListener('pointerdown', (event) => {
  if (event.button !== 0) return;
  drag = {x: event.clientX, y: event.clientY, zx: state.zoom.x, zy: state.zoom.y, moved: false};
  dragged = false;
});
window.addEventListener('pointermove', (event) => {
  if (drag === null) return;
  const dx = event.clientX - drag.x, dy = event.clientY - drag.y;
  if (!drag.moved && Math.hypot(dx, dy) < 3) return;
  if (!drag.moved) canvas.setPointerCapture(event.pointerId);
  drag.moved = true;
  state.zoom = {...state.zoom, x: drag.zx + dx, y: drag.zy + dy};
  applyZoom();
});
window.addEventListener('pointerup', () => {
  if (drag?.moved) persist();
  dragged = drag?.moved ?? false;
  drag = null;
});
canvas.addEventListener('keydown', (event) => {
  const step = 40;
  const pan = (dx: number, dy: number) => {
    state.zoom = {...state.zoom, x: state.zoom.x + dx, y: state.zoom.y + dy};
    applyZoom();
    persist();
  };
  switch (event.key) {
    case '+':
    case '=':
      zoomBy(1.25);
      break;
    case '-':
    case '_':
      zoomBy(0.8);
      break;
    case '0':
      fit();
      break;
    case 'ArrowLeft':
      pan(step, 0);
      break;
    case 'ArrowRight':
      pan(-step, 0);
      break;
    case 'ArrowUp':
      pan(0, step);
      break;
    case 'ArrowDown':
      pan(0, -step);
      break;
    case 'Escape':
      hideCard();
      details.hidden = true;
      break;
    default:
      return;
  }
  event.preventDefault();
});
zoomIn.addEventListener('click', () => zoomBy(1.25));
zoomOut.addEventListener('click', () => zoomBy(0.8));
zoomFit.addEventListener('click', fit);

window.addEventListener('error', (event) => vscode.postMessage({type: 'error', message: String(event.message)}));
syncControls();
vscode.postMessage({type: 'ready'});
