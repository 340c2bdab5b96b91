/**
 * The page's fixed shell, built once here (not in the host's HTML, which holds no data): the
 * toolbar (two lines: what is shown, then the controls in groups that never split), the legend,
 * the message line, the split body (the canvas with its SVG viewport and pinned labels, a
 * splitter, the details panel) and the hover card. Only elements; what fills and moves them is
 * in the other modules.
 */

import {DEFAULTS} from '../shared/protocol/types';
import {byId, el, svg} from './dom';
import {legend as buildLegend} from './legend';

const root = byId<HTMLDivElement>('root');
const header = el('header', {class: 'toolbar', role: 'toolbar', 'aria-label': 'Graph controls'});
const headline = el('div', {class: 'headline'});
export const title = el('span', {class: 'title'});
export const liveBadge = el('span', {class: 'badge live-badge', hidden: ''});
export const summary = el('span', {class: 'summary', 'aria-live': 'polite'});
/** The route's faithfulness once verified (causal.ts), beside the edge count. */
export const faithfulness = el('span', {class: 'faithfulness', 'aria-live': 'polite', hidden: ''});
headline.append(title, liveBadge, summary, faithfulness);

const controls = el('div', {class: 'controls'});
const group = (...children: HTMLElement[]) => {
  const g = el('span', {class: 'group'});
  g.append(...children);
  return g;
};
const tokenLabel = el('label', {title: 'The output token whose route is shown'}, 'Output ');
export const tokenSelect = el('select', {id: 'token', 'aria-label': 'Output token whose route is shown'});
tokenLabel.append(tokenSelect);
const thresholdLabel = el('label', {title: 'Threshold τ: edges carrying less than this share of a node’s input are hidden'}, 'τ ');
// The controls span the lmscope.threshold setting's range (a typed number may go beyond, up to
// THRESHOLD_RANGE.max), from the default minThreshold (controls.ts follows the trace's).
const MAX = '0.1';
const MIN = String(DEFAULTS.MinThreshold);
export const thresholdRange = el('input', {id: 'threshold-range', type: 'range', min: MIN, max: MAX, step: '0.001', 'aria-label': 'Threshold'});
export const thresholdNumber = el('input', {id: 'threshold', type: 'number', min: MIN, max: MAX, step: '0.001', 'aria-label': 'Threshold (precise)'});
thresholdLabel.append(thresholdRange, thresholdNumber);
const modeLabel = el('label', {title: 'Renormalise the contributions that survive τ so each node’s inputs sum to 1 (off: raw weights)'});
export const modeBox = el('input', {id: 'renormalize', type: 'checkbox'});
modeLabel.append(modeBox, document.createTextNode(' renormalise'));
const collapseLabel = el('label', {title: 'Collapse the columns of tokens with no node on the route'});
export const collapseBox = el('input', {id: 'collapse', type: 'checkbox'});
collapseLabel.append(collapseBox, document.createTextNode(' collapse'));
export const zoomOut = el('button', {type: 'button', class: 'zoom-out', title: 'Zoom out (-)', 'aria-label': 'Zoom out'}, '−');
export const zoomIn = el('button', {type: 'button', class: 'zoom-in', title: 'Zoom in (+)', 'aria-label': 'Zoom in'}, '+');
export const zoomFit = el('button', {type: 'button', class: 'fit', title: 'Fit the whole route (0)', 'aria-label': 'Fit the graph'}, 'Fit');
export const exportButton = el('button', {type: 'button', class: 'export', title: 'Export the shown route', 'aria-haspopup': 'menu', 'aria-expanded': 'false'}, 'Export ▾');
export const exportMenu = el('div', {class: 'export-menu', role: 'menu', hidden: ''});
export const exportSvg = el('button', {type: 'button', class: 'export-svg', role: 'menuitem'}, 'SVG');
export const exportPng = el('button', {type: 'button', class: 'export-png', role: 'menuitem'}, 'PNG');
exportMenu.append(exportSvg, exportPng);
const exportGroup = group(exportButton, exportMenu);
exportGroup.classList.add('export-group');
export const verifyButton = el(
  'button',
  {type: 'button', class: 'verify-route', title: 'Keep only the shown route on the model, ablate every other attention term and FFN node, and compare the prediction’s probability with the full model’s and with random sets of the same size'},
  'Verify route',
);
controls.append(group(tokenLabel), group(thresholdLabel), group(modeLabel, collapseLabel), group(zoomOut, zoomIn, zoomFit), exportGroup, group(verifyButton));
header.append(headline, controls);

export const legend = buildLegend();

const message = el('div', {class: 'message', role: 'alert', hidden: ''});
export const body = el('div', {class: 'body'});
export const canvas = el('div', {class: 'canvas', tabindex: '0', 'aria-label': 'Flow graph: drag or arrow keys to pan, wheel or +/- to zoom, 0 to fit'});
export const graph = svg('svg', {class: 'graph', role: 'img'});
export const viewport = svg('g', {class: 'viewport'});
graph.append(viewport);
// The <svg> fills the canvas at 1:1; zoom and pan are the viewport group's transform only.
graph.setAttribute('width', '100%');
graph.setAttribute('height', '100%');
/** Token labels pinned above the graph and layer labels pinned left of it (HTML, so they stay
 * legible at any zoom and in place while panning). */
export const columnLabels = el('div', {class: 'column-labels', 'aria-hidden': 'true'});
export const rowLabels = el('div', {class: 'row-labels', 'aria-hidden': 'true'});
canvas.append(graph, columnLabels, rowLabels);
export const splitter = el('div', {class: 'splitter', role: 'separator', tabindex: '0', 'aria-label': 'Resize the details panel', hidden: ''});
export const details = el('aside', {class: 'details', 'aria-live': 'polite', hidden: ''});
body.append(canvas, splitter, details);
export const card = el('div', {class: 'card', role: 'tooltip', hidden: ''});
root.append(header, legend, message, body, card);

/** Show one line in place of the graph's message area (an error, say); null hides it. */
export function showMessage(text: string | null): void {
  message.hidden = text === null;
  message.textContent = text ?? '';
}

export function hideCard(): void {
  card.hidden = true;
}
