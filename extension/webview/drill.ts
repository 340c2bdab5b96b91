/**
 * The drill-downs that need the model, asked of the daemon through the host: a head's attention
 * map and contribution map over the prompt with its promoted/suppressed tokens, a neuron's
 * promoted/suppressed tokens, and projections the file does not store. The host says whether a
 * live daemon trace backs the graph (`daemon` message); without one each section says what is
 * missing and how to get it (trace again with the model). Token strings reach the DOM as text
 * only; the maps are drawn on a <canvas> with the cell under the pointer described in text.
 */

import type {ComponentRef, NodeId, ProjectionResult, ThresholdMode, TokenScore} from '../shared/protocol/types';
import type {ExpertLayout} from '../shared/traces/experts';
import {NeedsModelError, type TraceQueries} from '../shared/traces/trace';
import {nodeLabel} from '../shared/graph/routes';
import type {DaemonQueries, DaemonQueryMethod, QueryResultMessage, WebviewToHost} from '../shared/webviewMessages';
import {clip} from '../shared/display';
import {COLOURS} from '../shared/protocol/vocabulary';
import {el, fmt, quoted, shownToken, tokenAt} from './dom';

export const NEEDS_MODEL = 'needs the model — trace again';

/** A query the daemon could not answer; `needsModel`: no model for this trace. */
export class QueryError extends Error {
  constructor(
    message: string,
    readonly needsModel: boolean,
  ) {
    super(message);
  }
}

/** The webview's side of the host's daemon link: whether it is live, and queries through it. */
export class DaemonLink {
  live = false;
  reason = 'waiting for the editor to say whether the daemon has this trace';
  private nextId = 1;
  private readonly pending = new Map<number, {resolve: (value: unknown) => void; reject: (error: Error) => void}>();

  constructor(private readonly post: (message: WebviewToHost) => void) {}

  set(live: boolean, reason: string): void {
    this.live = live;
    this.reason = reason;
  }

  ask<M extends DaemonQueryMethod>(method: M, params: DaemonQueries[M]['params']): Promise<DaemonQueries[M]['result']> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, {resolve: resolve as (value: unknown) => void, reject});
      this.post({type: 'query', id, method, params});
    });
  }

  answer(message: QueryResultMessage): void {
    const waiting = this.pending.get(message.id);
    if (waiting === undefined) return;
    this.pending.delete(message.id);
    if (message.error !== undefined) waiting.reject(new QueryError(message.error.message, message.error.needsModel));
    else waiting.resolve(message.result);
  }
}

/** A note that `what` needs the model, with the reason there is none. */
export function needsModelNote(what: string, reason: string): HTMLElement {
  const note = el('p', {class: 'note needs-model'});
  note.append(el('strong', {}, `${what} ${NEEDS_MODEL}`), document.createTextNode(` (Trace Selection with the daemon running; here: ${reason}).`));
  return note;
}

export function scoreList(title: string, tokens: readonly TokenScore[]): HTMLElement {
  const section = el('div', {class: 'tok-section'});
  section.append(el('h3', {}, title));
  const list = el('ol', {class: 'tokens-list'});
  for (const t of tokens) {
    const item = el('li');
    item.append(el('span', {class: 'tok'}, quoted(t.token)), el('span', {class: 'num'}, ` ${fmt(t.score, 2)}`));
    list.append(item);
  }
  section.append(list);
  return section;
}

/**
 * Fill `into` (a section already in the panel) from a daemon query: "loading…" first, then
 * `render(result)`, or the note of what went wrong. Nothing is added once `into` has left the
 * page (another panel replaced it).
 */
export function fromDaemon<M extends DaemonQueryMethod>(
  link: DaemonLink,
  into: HTMLElement,
  what: string,
  method: M,
  params: DaemonQueries[M]['params'],
  render: (result: DaemonQueries[M]['result']) => void,
): void {
  if (!link.live) {
    into.replaceChildren(needsModelNote(what, link.reason));
    return;
  }
  const loading = el('p', {class: 'note loading'}, `${what}: asking the daemon…`);
  into.replaceChildren(loading);
  link.ask(method, params).then(
    (result) => {
      if (!into.isConnected) return;
      into.replaceChildren();
      render(result);
    },
    (error: unknown) => {
      if (!into.isConnected) return;
      const text = error instanceof Error ? error.message : String(error);
      into.replaceChildren(error instanceof QueryError && error.needsModel ? needsModelNote(what, text) : el('p', {class: 'note'}, `${what}: ${text}`));
    },
  );
}

// ---- heads ---------------------------------------------------------------------------------------
/** Room for the token labels left of and above a map (CSS px). */
const MAP_LABELS = 70;
/** Labels need this much room (px) per cell; narrower cells label every k-th token. */
const LABEL_PITCH = 11;

/**
 * One causal map (row i: sources 0..i) on a canvas as wide as the panel, with the tokens on both
 * axes (every one when cells are tall enough, else every k-th, the clicked edge's always) and a
 * readout of the cell under the pointer. `mark` is the clicked edge's cell. Tokens are drawn by
 * the canvas (fillText), never parsed as markup.
 */
function mapCanvas(q: TraceQueries, title: string, rows: readonly (readonly number[])[], signed: boolean, mark: {target: number; source: number}, width: number): HTMLElement {
  const n = rows.length;
  const cell = Math.max(2, Math.min(22, Math.floor((width - MAP_LABELS - 4) / Math.max(1, n))));
  const size = MAP_LABELS + n * cell;
  const section = el('div', {class: 'map'});
  section.append(el('h3', {}, title));
  const ratio = Math.min(2, window.devicePixelRatio || 1);
  const canvas = el('canvas', {width: String(Math.round(size * ratio)), height: String(Math.round(size * ratio)), role: 'img', 'aria-label': `${title}: rows are attending tokens, columns attended tokens`});
  canvas.style.width = `${size}px`;
  canvas.style.height = `${size}px`;
  const scale = Math.max(1e-9, ...rows.flatMap((row) => row.map((v) => Math.abs(v))));
  const style = getComputedStyle(document.body);
  const positive = style.getPropertyValue('--edge-attention').trim() || COLOURS.attention.hex;
  const negative = style.getPropertyValue('--negative').trim() || COLOURS.negative.hex;
  const ctx = canvas.getContext('2d');
  if (ctx !== null) {
    ctx.scale(ratio, ratio);
    ctx.save();
    ctx.translate(MAP_LABELS, MAP_LABELS);
    rows.forEach((row, i) =>
      row.forEach((v, j) => {
        ctx.globalAlpha = Math.min(1, Math.abs(v) / scale);
        ctx.fillStyle = signed && v < 0 ? negative : positive;
        ctx.fillRect(j * cell, i * cell, cell, cell);
      }),
    );
    ctx.globalAlpha = 1;
    ctx.strokeStyle = style.getPropertyValue('--vscode-focusBorder').trim() || '#888';
    ctx.lineWidth = 1.5;
    ctx.strokeRect(mark.source * cell, mark.target * cell, Math.max(2, cell), Math.max(2, cell));
    ctx.strokeStyle = style.getPropertyValue('--vscode-panel-border').trim() || 'rgba(128,128,128,0.4)';
    ctx.lineWidth = 1;
    ctx.strokeRect(0, 0, n * cell, n * cell);
    ctx.restore();
    // Token labels: rows left of the map, columns above it (rotated).
    const every = Math.max(1, Math.ceil(LABEL_PITCH / cell));
    const labelled = (i: number) => i % every === 0 || i === mark.target || i === mark.source;
    ctx.fillStyle = style.getPropertyValue('--vscode-descriptionForeground').trim() || '#888';
    ctx.font = `10px ${style.getPropertyValue('--vscode-editor-font-family').trim() || 'monospace'}`;
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    const label = (i: number) => clip(shownToken(q, i), 9);
    for (let i = 0; i < n; i++) if (labelled(i)) ctx.fillText(label(i), MAP_LABELS - 3, MAP_LABELS + (i + 0.5) * cell, MAP_LABELS - 4);
    for (let j = 0; j < n; j++) {
      if (!labelled(j)) continue;
      ctx.save();
      ctx.translate(MAP_LABELS + (j + 0.5) * cell, MAP_LABELS - 3);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = 'left';
      ctx.fillText(label(j), 0, 0, MAP_LABELS - 4);
      ctx.restore();
    }
  }
  const readout = el('div', {class: 'note map-readout'}, `${n} × ${n}; point at a cell (row: attending token, column: attended token)`);
  canvas.addEventListener('mousemove', (event) => {
    const box = canvas.getBoundingClientRect();
    const i = Math.floor((event.clientY - box.top - MAP_LABELS) / cell);
    const j = Math.floor((event.clientX - box.left - MAP_LABELS) / cell);
    const value = rows[i]?.[j];
    if (value === undefined) return;
    readout.textContent = `${i} ${tokenAt(q, i)} ← ${j} ${tokenAt(q, j)}: ${fmt(value, 4)}`;
  });
  section.append(canvas, readout);
  return section;
}

/** The chosen head of an attention edge: its maps and promoted/suppressed tokens (daemon). */
export function headSection(q: TraceQueries, link: DaemonLink, layer: number, head: number, edge: {target: number; source: number}, into: HTMLElement): void {
  into.replaceChildren();
  into.append(el('h3', {class: 'head-title'}, `L${layer}H${head}`));
  const body = el('div', {class: 'head-body'});
  into.append(body);
  fromDaemon(link, body, `The attention map, contribution map and promoted/suppressed tokens of L${layer}H${head}`, 'lmscope/headMaps', {layer, head, position: edge.target}, (maps) => {
    const width = Math.max(240, (into.closest('.details')?.clientWidth ?? 380) - 28);
    body.append(
      mapCanvas(q, `Attention map of L${layer}H${head}`, maps.attention, false, edge, width),
      mapCanvas(q, `Contribution map of L${layer}H${head}`, maps.contribution, true, edge, width),
      el('p', {class: 'note'}, `Tokens its output at token ${maps.position} ${tokenAt(q, maps.position)} promotes and suppresses:`),
      scoreList('Head promotes', maps.promoted),
      scoreList('Head suppresses', maps.suppressed),
    );
  });
}

// ---- neurons and blocks -----------------------------------------------------------------------------
/**
 * A neuron's promoted/suppressed tokens (from the model's weights, via the daemon). In a sparse
 * layer `neuron` is a flat id over the experts (experts.ts): the card asked for is the expert
 * neuron's (`L1.E2.N6`).
 */
export function neuronSection(
  link: DaemonLink,
  layout: ExpertLayout | null,
  layer: number,
  neuron: number,
  context: {token: number; threshold: number; mode: ThresholdMode},
  into: HTMLElement,
): void {
  const label = layout === null ? `L${layer}.N${neuron}` : layout.neuronLabel(layer, neuron);
  into.replaceChildren();
  into.append(el('h3', {class: 'neuron-title'}, label));
  const body = el('div', {class: 'neuron-body'});
  into.append(body);
  fromDaemon(link, body, `The promoted/suppressed tokens of ${label}`, 'lmscope/component', {component: neuronRef(layout, layer, neuron), ...context}, (card) => {
    body.append(scoreList('Neuron promotes', card.promoted), scoreList('Neuron suppresses', card.suppressed));
    for (const note of card.notes) body.append(el('p', {class: 'note'}, note));
  });
}

/** The component of a neuron: a dense one, or in a sparse layer the expert neuron of its flat id. */
function neuronRef(layout: ExpertLayout | null, layer: number, neuron: number): ComponentRef {
  if (layout === null || !layout.isSparse(layer)) return {kind: 'neuron', layer, index: neuron};
  const [slot, index] = layout.split(neuron);
  const shared = slot >= layout.nExperts;
  return {kind: 'expert_neuron', layer, expert: shared ? slot - layout.nExperts : slot, shared, index};
}

/**
 * A node's projection: from the file when it stores it; else from the daemon when live; else a
 * note that this file does not store it. `render` gets the lists.
 */
export function projectionSection(
  q: TraceQueries,
  link: DaemonLink,
  node: NodeId,
  kind: 'lens' | 'ffn_update' | 'attention_update',
  into: HTMLElement,
  render: (p: ProjectionResult, target: HTMLElement) => void,
): void {
  let stored: ProjectionResult | null = null;
  try {
    stored = q.projection(node, kind);
  } catch (error) {
    if (!(error instanceof NeedsModelError)) throw error;
  }
  if (stored !== null) {
    render(stored, into);
    return;
  }
  const what = `The ${kind === 'lens' ? 'logit lens' : kind.replace('_', ' ')} of ${nodeLabel(node)}`;
  if (!link.live) {
    into.append(el('p', {class: 'note not-stored'}, `${what} is not stored in this file; it ${NEEDS_MODEL} (here: ${link.reason}).`));
    return;
  }
  const section = el('div');
  into.append(section);
  fromDaemon(link, section, what, 'lmscope/projection', {node, kind}, (p) => render(p, section));
}
