/**
 * The page's fixed shell, built once here (not in the host's HTML, which holds no data): the
 * toolbar's controls, the message line, the canvas with its SVG viewport, the details panel and
 * the hover card. Only elements; what fills and moves them is in the other modules.
 */

import {DEFAULTS} from '../shared/protocol/types';
import {byId, el, svg} from './dom';

const root = byId<HTMLDivElement>('root');
const header = el('header', {class: 'toolbar', role: 'toolbar', 'aria-label': 'Graph controls'});
export const title = el('span', {class: 'title'});
const tokenLabel = el('label', {}, 'Output ');
export const tokenSelect = el('select', {id: 'token', 'aria-label': 'Output token whose route is shown'});
tokenLabel.append(tokenSelect);
const thresholdLabel = el('label', {}, 'τ ');
// The controls span the lmscope.threshold setting's range (a typed number may go beyond, up to
// THRESHOLD_RANGE.max), from the default minThreshold (controls.ts follows the trace's).
const MAX = '0.1';
const MIN = String(DEFAULTS.MinThreshold);
export const thresholdRange = el('input', {id: 'threshold-range', type: 'range', min: MIN, max: MAX, step: '0.001', 'aria-label': 'Threshold'});
export const thresholdNumber = el('input', {id: 'threshold', type: 'number', min: MIN, max: MAX, step: '0.001', 'aria-label': 'Threshold (precise)'});
thresholdLabel.append(thresholdRange, thresholdNumber);
const modeLabel = el('label', {});
export const modeBox = el('input', {id: 'renormalize', type: 'checkbox'});
modeLabel.append(modeBox, document.createTextNode(' renormalize'));
const collapseLabel = el('label', {});
export const collapseBox = el('input', {id: 'collapse', type: 'checkbox'});
collapseLabel.append(collapseBox, document.createTextNode(' collapse off-route tokens'));
export const zoomOut = el('button', {type: 'button', title: 'Zoom out (-)', 'aria-label': 'Zoom out'}, '−');
export const zoomIn = el('button', {type: 'button', title: 'Zoom in (+)', 'aria-label': 'Zoom in'}, '+');
export const zoomFit = el('button', {type: 'button', title: 'Fit (0)', 'aria-label': 'Fit the graph'}, 'Fit');
export const summary = el('span', {class: 'summary', 'aria-live': 'polite'});
export const liveBadge = el('span', {class: 'badge live-badge', hidden: ''});
header.append(title, liveBadge, tokenLabel, thresholdLabel, modeLabel, collapseLabel, zoomOut, zoomIn, zoomFit, summary);

const message = el('div', {class: 'message', role: 'alert', hidden: ''});
const body = el('div', {class: 'body'});
export const canvas = el('div', {class: 'canvas', tabindex: '0', 'aria-label': 'Flow graph: drag or arrow keys to pan, wheel or +/- to zoom'});
export const graph = svg('svg', {class: 'graph', role: 'img'});
export const viewport = svg('g', {class: 'viewport'});
graph.append(viewport);
// The <svg> fills the canvas at 1:1; zoom and pan are the viewport group's transform only.
graph.setAttribute('width', '100%');
graph.setAttribute('height', '100%');
canvas.append(graph);
export const details = el('aside', {class: 'details', 'aria-live': 'polite', hidden: ''});
body.append(canvas, details);
export const card = el('div', {class: 'card', role: 'tooltip', hidden: ''});
root.append(header, message, body, card);

/** Show one line in place of the graph's message area (an error, say); null hides it. */
export function showMessage(text: string | null): void {
  message.hidden = text === null;
  message.textContent = text ?? '';
}

export function hideCard(): void {
  card.hidden = true;
}
