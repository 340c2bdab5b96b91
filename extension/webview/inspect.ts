/**
 * Inspecting the drawn route: a hover (or keyboard focus) on a node or edge shows its card, a
 * click (or Enter/Space) opens the details panel: every head of an attention edge, the neurons
 * of an FFN node, the logit lens of a residual node (panels.ts; what needs the model is asked
 * of the daemon through `link`). Escape closes both.
 */

import type {NodeId} from '../shared/protocol/types';
import {el} from './dom';
import type {DaemonLink} from './drill';
import {edgeCard, headsPanel, neuronsPanel, nodeCard, projectionPanel} from './panels';
import {drawnAt} from './render';
import {canvas, card, details, hideCard, viewport} from './shell';
import {currentToken, shown, view} from './state';
import {panned} from './zoom';

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
  showCardAt(hit.element, (into) => (hit.node ? nodeCard(q, hit.node, into) : edgeCard(q, hit.edge!, into)));
}

function openDetails(link: DaemonLink, target: EventTarget | null): void {
  const hit = drawnAt(target);
  const q = shown.queries;
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
  const context = {token: currentToken(), threshold: view.threshold, mode: view.mode};
  const neurons = (node: NodeId, offset: number): void => show(() => neuronsPanel(q, link, context, node, offset, details, (to) => neurons(node, to)));
  if (hit.edge && hit.edge.kind === 'attention') show(() => headsPanel(q, link, hit.edge!.edge, details));
  else if (hit.node && hit.node.id.kind === 'ffn') neurons(hit.node.id, 0);
  else if (hit.node) show(() => projectionPanel(q, link, hit.node!.id, details));
  else show(() => edgeCard(q, hit.edge!, details));
}

export function installInspection(link: DaemonLink): void {
  viewport.addEventListener('mouseover', (event) => showCardFor(event.target));
  viewport.addEventListener('focusin', (event) => showCardFor(event.target));
  viewport.addEventListener('mouseout', (event) => {
    if (drawnAt(event.target)) hideCard();
  });
  viewport.addEventListener('focusout', hideCard);
  viewport.addEventListener('click', (event) => {
    if (!panned()) openDetails(link, event.target);
  });
  viewport.addEventListener('keydown', (event) => {
    if ((event.key === 'Enter' || event.key === ' ') && drawnAt(event.target)) {
      event.preventDefault();
      event.stopPropagation();
      openDetails(link, event.target);
    }
  });
  canvas.addEventListener('keydown', (event) => {
    if (event.key !== 'Escape') return;
    hideCard();
    details.hidden = true;
    event.preventDefault();
  });
}
