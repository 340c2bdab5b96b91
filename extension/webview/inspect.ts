/**
 * Inspecting the drawn route: a hover (or keyboard focus) on a node or edge shows its card, a
 * click (or Enter/Space) opens the details panel: every head of an attention edge, the neurons
 * of an FFN node, the logit lens of a residual node (panels.ts; what needs the model is asked
 * of the daemon through `link`). Escape closes both.
 *
 * The panel never hides the graph: it is the other half of a split (beside the graph in a wide
 * view, below it in a narrow one, resizable with the splitter), the graph is laid out again for
 * what is left, and the clicked node or edge is kept in view. The panel follows the route: when
 * the output token, τ or the mode change it shows the same node or edge again if the new route
 * has it, and closes if not.
 */

import type {NodeId} from '../shared/protocol/types';
import {el} from './dom';
import type {DaemonLink} from './drill';
import {diffCardLines} from './diffView';
import {edgeCard, headsPanel, neuronsPanel, nodeCard, projectionPanel} from './panels';
import {describe, drawnAt, elementOf, markSelected, render} from './render';
import {body, canvas, card, details, hideCard, splitter, viewport} from './shell';
import {currentToken, persist, shown, view} from './state';
import {atFit, fit, measureCanvas, reveal} from './zoom';

/** Below this body width the panel goes under the graph instead of beside it. */
const STACK_BELOW = 760;

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

function showCardFor(target: EventTarget | null): void {
  const hit = drawnAt(target);
  const q = shown.queries;
  if (hit === null || q === null) return;
  describe(hit.element);
  showCardAt(hit.element, (into) => {
    if (hit.node) nodeCard(q, hit.node, into);
    else edgeCard(q, hit.edge!, into);
    diffCardLines(hit.node?.key ?? hit.edge!.key, into); // the diff view: A, B and Δ
  });
}

/** Size the split from the body's width and the saved panel size. */
function layoutSplit(): void {
  const stacked = body.clientWidth < STACK_BELOW;
  body.classList.toggle('stacked', stacked);
  if (stacked) {
    details.style.width = '';
    details.style.height = `${Math.round(Math.min(view.panel.below, body.clientHeight * 0.7))}px`;
  } else {
    details.style.height = '';
    details.style.width = `${Math.round(Math.min(view.panel.side, body.clientWidth * 0.6))}px`;
  }
}

export function closeDetails(): void {
  if (details.hidden) return;
  details.hidden = true;
  splitter.hidden = true;
  shown.selected = null;
  markSelected();
}

/** Keep the selected node or edge inside the canvas. */
export function revealSelected(): void {
  if (shown.selected === null) return;
  const hit = elementOf(shown.selected);
  if (hit === null) return;
  if (hit.node) reveal(hit.node.x, hit.node.y);
  else if (hit.edge) reveal((hit.edge.x1 + hit.edge.x2) / 2, (hit.edge.y1 + hit.edge.y2) / 2);
}

function openDetails(link: DaemonLink, target: EventTarget | null, focus = true): void {
  const hit = drawnAt(target);
  const q = shown.queries;
  if (hit === null || q === null) return;
  const show = (fill: () => void) => {
    details.replaceChildren();
    const close = el('button', {type: 'button', class: 'close', 'aria-label': 'Close details'}, '×');
    close.addEventListener('click', () => {
      closeDetails();
      canvas.focus();
    });
    details.append(close);
    try {
      fill();
    } catch (error) {
      details.append(el('p', {class: 'note'}, error instanceof Error ? error.message : String(error)));
    }
    const opening = details.hidden;
    details.hidden = false;
    splitter.hidden = false;
    layoutSplit();
    if (focus) close.focus({preventScroll: true});
    if (opening) relayout();
  };
  shown.selected = hit.node ? hit.node.key : hit.edge!.key;
  markSelected();
  const context = {token: currentToken(), threshold: view.threshold, mode: view.mode};
  const neurons = (node: NodeId, offset: number): void => show(() => neuronsPanel(q, link, context, node, offset, details, (to) => neurons(node, to)));
  if (hit.edge && hit.edge.kind === 'attention') show(() => headsPanel(q, link, hit.edge!.edge, view.mode, details));
  else if (hit.node && hit.node.id.kind === 'ffn') neurons(hit.node.id, 0);
  else if (hit.node) show(() => projectionPanel(q, link, hit.node!.id, details));
  else show(() => edgeCard(q, hit.edge!, details));
  revealSelected();
}

let laidOutFor = {w: 0, h: 0};

/** The canvas changed size: lay the route out for it, at fit if it was, the selection in view. */
export function relayout(): void {
  const wasFit = atFit();
  measureCanvas();
  laidOutFor = {w: canvas.clientWidth, h: canvas.clientHeight};
  if (shown.queries === null) return;
  render();
  if (wasFit) fit();
  revealSelected();
}

/** After the route changed (token, τ, mode): show the selection again, or close the panel. */
export function followRoute(link: DaemonLink): void {
  if (details.hidden || shown.selected === null) return;
  const hit = elementOf(shown.selected);
  if (hit === null) closeDetails();
  else openDetails(link, hit.element, false);
}

function installSplitter(): void {
  let drag: {start: number; size: number; stacked: boolean} | null = null;
  splitter.addEventListener('pointerdown', (event) => {
    const stacked = body.classList.contains('stacked');
    drag = {start: stacked ? event.clientY : event.clientX, size: stacked ? details.offsetHeight : details.offsetWidth, stacked};
    splitter.setPointerCapture(event.pointerId);
    event.preventDefault();
  });
  splitter.addEventListener('pointermove', (event) => {
    if (drag === null) return;
    const delta = (drag.stacked ? event.clientY : event.clientX) - drag.start;
    const size = Math.max(160, drag.size - delta);
    if (drag.stacked) view.panel.below = size;
    else view.panel.side = size;
    layoutSplit();
  });
  splitter.addEventListener('pointerup', () => {
    if (drag === null) return;
    drag = null;
    persist();
  });
  splitter.addEventListener('keydown', (event) => {
    const stacked = body.classList.contains('stacked');
    const grow = stacked ? 'ArrowUp' : 'ArrowLeft', shrink = stacked ? 'ArrowDown' : 'ArrowRight';
    if (event.key !== grow && event.key !== shrink) return;
    const key = stacked ? 'below' : 'side';
    view.panel[key] = Math.max(160, view.panel[key] + (event.key === grow ? 24 : -24));
    layoutSplit();
    persist();
    event.preventDefault();
  });
}

export function installInspection(link: DaemonLink): void {
  viewport.addEventListener('mouseover', (event) => showCardFor(event.target));
  viewport.addEventListener('focusin', (event) => showCardFor(event.target));
  viewport.addEventListener('mouseout', (event) => {
    if (drawnAt(event.target)) hideCard();
  });
  viewport.addEventListener('focusout', hideCard);
  // d3-zoom swallows the click that ends a drag, so a click here is a click.
  viewport.addEventListener('click', (event) => openDetails(link, event.target));
  viewport.addEventListener('keydown', (event) => {
    if ((event.key === 'Enter' || event.key === ' ') && drawnAt(event.target)) {
      event.preventDefault();
      event.stopPropagation();
      openDetails(link, event.target);
    }
  });
  window.addEventListener('keydown', (event) => {
    if (event.key !== 'Escape') return;
    hideCard();
    closeDetails();
  });
  installSplitter();
  // One re-layout per frame, whatever resized the canvas (the window, the split, the panel).
  let pending = false;
  const observer = new ResizeObserver(() => {
    layoutSplit();
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      if (canvas.clientWidth === laidOutFor.w && canvas.clientHeight === laidOutFor.h) return;
      relayout();
    });
  });
  observer.observe(body);
  observer.observe(canvas);
}
