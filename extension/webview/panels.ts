/**
 * What the webview shows about one node or edge: the hover cards (from the trace file alone,
 * TraceQueries), and the details panel (every head of an attention edge, then the chosen head's
 * maps and tokens; an FFN node's experts when its layer is a mixture of experts, its neurons,
 * paged, the chosen neuron's tokens and its block's; a residual node's logit lens). What the file cannot answer comes from the daemon (drill.ts).
 * Heads, the edge, FFN nodes and dense neurons get ablate toggles (causal.ts).
 * Token strings go through `quoted` into textContent only.
 */

import type {FfnExpertsResult, FfnNeuronsResult, NodeId, RouteEdge, ThresholdMode} from '../shared/protocol/types';
import {byContribution, NeedsModelError, type TraceQueries} from '../shared/traces/trace';
import {nodeLabel} from '../shared/graph/routes';
import {el, fmt, quoted, tokenAt} from './dom';
import {Ablations, ablationTarget} from './causal';
import {fromDaemon, headSection, neuronSection, projectionSection, type DaemonLink} from './drill';
import type {EdgePath, NodeBox} from './layout';

const ABLATE_HEAD_TITLE = 'Ablate (⊘) the head’s term of this edge, A[h,i,j]·v[j], on the model: how log p of the traced prediction changes';
const ABLATE_NEURON_TITLE = 'Ablate (⊘) the neuron’s activation at this token on the model: how log p of the traced prediction changes';

/** Neurons per page in the FFN panel. */
export const NEURON_PAGE = 10;

export function edgeTitle(edge: RouteEdge): string {
  const what = edge.kind === 'attention' ? (edge.source.position === edge.target.position ? 'self-attention' : 'attention') : edge.kind;
  return `${what} ${nodeLabel(edge.source)} → ${nodeLabel(edge.target)}, weight ${fmt(edge.weight)}`;
}

export function line(into: HTMLElement, label: string, value: string): void {
  const row = el('div', {class: 'kv'});
  row.append(el('span', {class: 'k'}, label), el('span', {class: 'v'}, value));
  into.append(row);
}

/** The lens list's title; on a model that soft-caps its logits the lens is pre-cap (docs/method.md). */
function lensTitle(q: TraceQueries): string {
  return q.logitSoftcap() === null ? 'Top next tokens (logit lens)' : 'Top next tokens (logit lens, pre-cap logits)';
}

export function nodeCard(q: TraceQueries, box: NodeBox, into: HTMLElement): void {
  into.append(el('div', {class: 'card-title'}, `${nodeLabel(box.id)} · ${box.id.kind.replace('_', '-')} · token ${box.id.position} ${tokenAt(q, box.id.position)}`));
  line(into, 'share of the prediction', fmt(box.share));
  if (box.id.kind === 'ffn') {
    into.append(el('div', {class: 'hint'}, q.isSparse(box.id.layer) ? 'Click for experts and neurons' : 'Click for neurons'));
    return;
  }
  try {
    const lens = q.projection(box.id, 'lens');
    into.append(el('div', {class: 'card-sub'}, lensTitle(q)));
    const list = el('ol', {class: 'tokens-list'});
    lens.top.slice(0, 5).forEach((t, rank) => {
      const change = t.prevRank === null ? 'new' : t.prevRank === rank ? '=' : t.prevRank > rank ? `▲${t.prevRank - rank}` : `▼${rank - t.prevRank}`;
      const item = el('li');
      item.append(el('span', {class: 'tok'}, quoted(t.token)), el('span', {class: 'num'}, ` ${fmt(t.logit, 2)} `), el('span', {class: 'rank'}, change));
      list.append(item);
    });
    into.append(list);
  } catch (error) {
    if (!(error instanceof NeedsModelError)) throw error;
    into.append(el('div', {class: 'hint'}, 'Its logit lens is not stored in this file: click to ask the daemon'));
  }
}

export function edgeCard(q: TraceQueries, path: EdgePath, into: HTMLElement): void {
  const edge = path.edge;
  into.append(el('div', {class: 'card-title'}, edgeTitle(edge)));
  line(into, 'from', `token ${edge.source.position} ${tokenAt(q, edge.source.position)}`);
  line(into, 'to', `token ${edge.target.position} ${tokenAt(q, edge.target.position)}`);
  line(into, 'weight (of its target’s input)', fmt(edge.weight));
  line(into, 'carries of the prediction', fmt(path.flow));
  if (edge.kind === 'attention' && edge.heads.length > 0) {
    // The heads' parts of this edge's weight, in the order the heads panel lists them.
    const top = byContribution(edge.heads.map((contribution, head) => ({head, contribution})).filter((h) => h.contribution !== 0)).slice(0, 3);
    into.append(el('div', {class: 'card-sub'}, 'Top heads (drawn: above τ, as the edge weight)'));
    for (const {head, contribution} of top) line(into, `L${edge.target.layer}H${head}`, fmt(contribution));
    into.append(el('div', {class: 'hint'}, 'Click for every head'));
  }
}

export function bar(value: number, scale: number): HTMLElement {
  const outer = el('span', {class: 'bar'});
  const inner = el('span', {class: value >= 0 ? 'fill pos' : 'fill neg'});
  inner.style.width = `${Math.round(100 * Math.min(1, Math.abs(value) / (scale || 1)))}%`;
  outer.append(inner);
  return outer;
}

export function headsPanel(q: TraceQueries, link: DaemonLink, edge: RouteEdge, mode: ThresholdMode, details: HTMLElement): void {
  const layer = edge.target.layer;
  details.append(el('h2', {}, `Heads of L${layer}: ${edge.source.position} ${tokenAt(q, edge.source.position)} → ${edge.target.position} ${tokenAt(q, edge.target.position)}`));
  const heads = q.edgeHeads(layer, edge.target.position, edge.source.position);
  const ablations = new Ablations(link);
  details.append(ablations.bar(), ablations.line(ablationTarget.edge(layer, edge.target.position, edge.source.position), 'the whole edge, through every head'));
  const scale = Math.max(...heads.map((h) => Math.abs(h.contribution)), 1e-9);
  const table = el('table', {class: 'list heads'});
  const head = el('tr');
  const drawnTitle =
    mode === 'renormalize'
      ? 'The head’s part of the edge weight the graph draws: heads under τ dropped, the rest renormalised so the node’s inputs sum to 1 (the hover card’s number)'
      : 'The head’s part of the edge weight the graph draws: heads under τ dropped, raw weights';
  const rawTitle = 'The head’s contribution to the target’s input, before τ and renormalisation (its proximity share)';
  head.append(
    el('th', {}, 'head'),
    el('th', {class: 'num', title: drawnTitle}, mode === 'renormalize' ? 'drawn (renorm.)' : 'drawn (raw)'),
    el('th', {class: 'num', title: rawTitle}, 'raw contribution'),
    el('th', {}, ''),
    el('th', {class: 'num', title: 'The head’s attention weight from the target token to the source token'}, 'attention'),
    el('th', {title: ABLATE_HEAD_TITLE}, '⊘'),
  );
  table.append(head);
  const chosen = el('div', {class: 'head-detail'});
  const position = {target: edge.target.position, source: edge.source.position};
  const rows: HTMLTableRowElement[] = [];
  const choose = (index: number, row: HTMLTableRowElement) => {
    rows.forEach((r) => r.setAttribute('aria-selected', String(r === row)));
    headSection(q, link, layer, index, position, chosen);
    chosen.querySelector('.head-title')?.after(ablations.line(ablationTarget.head(layer, index), 'the head at every position'));
  };
  // As returned: by contribution, largest first (byContribution), the daemon's order too.
  for (const h of heads) {
    const row = el('tr', {class: 'selectable', tabindex: '0', 'aria-selected': 'false', 'data-head': String(h.head)});
    const barCell = el('td');
    barCell.append(bar(h.contribution, scale));
    const drawn = edge.heads[h.head] ?? 0;
    row.append(
      el('td', {}, `L${layer}H${h.head}`),
      el('td', {class: drawn === 0 ? 'num dim' : 'num'}, drawn === 0 ? '—' : fmt(drawn, 4)),
      el('td', {class: 'num'}, fmt(h.contribution, 4)),
      barCell,
      el('td', {class: 'num'}, fmt(h.attention, 3)),
      ablations.cell(ablationTarget.headEdge(layer, h.head, edge.target.position, edge.source.position), row),
    );
    row.addEventListener('click', () => choose(h.head, row));
    row.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        choose(h.head, row);
      }
    });
    rows.push(row);
    table.append(row);
  }
  details.append(table);
  details.append(
    el(
      'p',
      {class: 'note'},
      `drawn: the head’s part of the edge as the graph draws it (${mode === 'renormalize' ? 'renormalised after τ; the hover card shows these' : 'raw, after τ'}; — under τ). raw contribution: before τ. Pick a head for its attention map, contribution map and tokens.`,
    ),
  );
  details.append(chosen);
  const first = heads[0];
  if (first !== undefined && rows[0] !== undefined) choose(first.head, rows[0]);
}

export function tokenList(title: string, tokens: readonly {token: string; logit: number}[]): HTMLElement {
  const section = el('div', {class: 'tok-section'});
  section.append(el('h3', {}, title));
  const list = el('ol', {class: 'tokens-list'});
  for (const t of tokens) {
    const item = el('li');
    item.append(el('span', {class: 'tok'}, quoted(t.token)), el('span', {class: 'num'}, ` ${fmt(t.logit, 2)}`));
    list.append(item);
  }
  section.append(list);
  return section;
}

/** The route the panel was opened from, for the daemon's cards. */
export interface RouteContext {
  readonly token: number;
  readonly threshold: number;
  readonly mode: ThresholdMode;
}

export function neuronsPanel(
  q: TraceQueries,
  link: DaemonLink,
  context: RouteContext,
  node: NodeId,
  offset: number,
  details: HTMLElement,
  showPage: (offset: number) => void,
): void {
  details.append(el('h2', {}, `FFN ${nodeLabel(node)} · token ${node.position} ${tokenAt(q, node.position)}`));
  const ablations = new Ablations(link);
  details.append(ablations.bar(), ablations.line(ablationTarget.ffn(node.layer, node.position), `the FFN block’s update at token ${node.position}`));
  // The daemon refuses neuron targets in a mixture-of-experts layer (ablate the FFN node).
  const neuronAblations = q.isSparse(node.layer) ? null : ablations;
  const list = el('div', {class: 'neuron-list'});
  const chosen = el('div', {class: 'neuron-detail'});
  const block = el('div', {class: 'block-tokens'});
  block.append(el('h3', {}, `Whole block L${node.layer}.ffn at token ${node.position}`));
  if (q.isSparse(node.layer)) {
    const experts = el('div', {class: 'expert-list'});
    details.append(experts);
    expertsSection(q, link, node, experts, list);
  }
  details.append(list, chosen, block);
  const total = q.ffnWidth(node.layer);
  try {
    // A file stores the top K neurons of each node it keeps: page within them.
    const stored = q.trace.dims.nNeurons;
    const available = stored >= total ? total : stored;
    const page = q.ffnNeurons(node.layer, node.position, offset, Math.max(0, Math.min(NEURON_PAGE, available - offset)));
    const more = available < total ? ` This file stores the top ${available}; the others need the model.` : '';
    neuronTable(q, link, neuronAblations, context, node, page, available, more, list, chosen, showPage);
  } catch (error) {
    if (!(error instanceof NeedsModelError)) throw error;
    // Not in the file: the live daemon has them all.
    if (!link.live) list.append(el('p', {class: 'note'}, error.message));
    else
      fromDaemon(link, list, `The neurons of ${nodeLabel(node)}`, 'lmscope/ffnNeurons', {layer: node.layer, position: node.position, offset, limit: NEURON_PAGE}, (page) =>
        neuronTable(q, link, neuronAblations, context, node, page, total, '', list, chosen, showPage),
      );
  }
  projectionSection(q, link, node, 'ffn_update', block, (p, into) =>
    into.append(tokenList('Block promotes', p.top.slice(0, 8)), tokenList('Block suppresses', p.bottom.slice(0, 8))),
  );
}

/**
 * The experts of an FFN node of a sparse layer, above its neurons: from the file's experts table,
 * else from the live daemon, else a note. Picking an expert shows only its neurons in `neurons`.
 */
function expertsSection(q: TraceQueries, link: DaemonLink, node: NodeId, into: HTMLElement, neurons: HTMLElement): void {
  const what = `The experts of ${nodeLabel(node)}`;
  try {
    expertTable(node, q.ffnExperts(node.layer, node.position), into, neurons);
  } catch (error) {
    if (!(error instanceof NeedsModelError)) throw error;
    if (!link.live) into.append(el('p', {class: 'note'}, error.message));
    else fromDaemon(link, into, what, 'lmscope/ffnExperts', {layer: node.layer, position: node.position}, (found) => expertTable(node, found, into, neurons));
  }
}

const EXPERT_TITLES = {
  gate: 'The router gate the forward pass multiplied the expert’s output by (a shared expert: its own gate, or 1)',
  contribution: 'c_e: the expert’s share of the node’s input at the expert step (with the rest, the shares sum to 1)',
  ofFfn: 'The expert’s part of the node’s FFN contribution: c_e over the sum of every listed expert’s c_e',
};

/** The node's experts, strongest first: label, gate, c_e, and the share of the FFN part. */
function expertTable(node: NodeId, found: FfnExpertsResult, into: HTMLElement, neurons: HTMLElement): void {
  into.append(el('h3', {}, `Experts (${found.total}: the chosen and shared ones)`));
  const ffn = found.experts.reduce((sum, e) => sum + e.contribution, 0);
  const scale = Math.max(...found.experts.map((e) => e.contribution), 1e-9);
  const table = el('table', {class: 'list experts'});
  const head = el('tr');
  head.append(
    el('th', {}, 'expert'),
    el('th', {class: 'num', title: EXPERT_TITLES.gate}, 'gate'),
    el('th', {class: 'num', title: EXPERT_TITLES.contribution}, 'contribution'),
    el('th', {}, ''),
    el('th', {class: 'num', title: EXPERT_TITLES.ofFfn}, 'of the FFN'),
  );
  table.append(head);
  const rows: HTMLTableRowElement[] = [];
  let filter: string | null = null;
  // Show only the chosen expert's neurons (rows carry data-expert); the same expert again: all.
  const choose = (label: string, row: HTMLTableRowElement) => {
    filter = filter === label ? null : label;
    rows.forEach((r) => r.setAttribute('aria-selected', String(filter !== null && r === row)));
    neurons.querySelectorAll<HTMLTableRowElement>('tr[data-neuron]').forEach((r) => (r.hidden = filter !== null && r.dataset['expert'] !== filter));
  };
  for (const e of found.experts) {
    const label = `L${node.layer}.${e.label}`;
    const row = el('tr', {class: 'selectable', tabindex: '0', 'aria-selected': 'false', 'data-expert': label});
    const barCell = el('td');
    barCell.append(bar(e.contribution, scale));
    row.append(
      el('td', {}, label),
      el('td', {class: 'num'}, fmt(e.gate, 3)),
      el('td', {class: 'num'}, fmt(e.contribution, 4)),
      barCell,
      el('td', {class: 'num'}, ffn > 0 ? `${fmt((100 * e.contribution) / ffn, 1)}%` : '—'),
    );
    row.addEventListener('click', () => choose(label, row));
    row.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        choose(label, row);
      }
    });
    rows.push(row);
    table.append(row);
  }
  into.append(table);
  into.append(
    el(
      'p',
      {class: 'note'},
      `gate: the router’s weight on the expert. contribution: its share of the node’s input at the expert step; the residual it adds to has ${fmt(found.rest, 4)}. of the FFN: its part of the experts’ sum. ${found.stored ? 'From this file.' : 'From the model.'} Pick an expert to show only its neurons below.`,
    ),
  );
}

/** One page of neurons (`available` can be paged through), the first one chosen. */
function neuronTable(
  q: TraceQueries,
  link: DaemonLink,
  ablations: Ablations | null,
  context: RouteContext,
  node: NodeId,
  page: FfnNeuronsResult,
  available: number,
  more: string,
  into: HTMLElement,
  chosen: HTMLElement,
  showPage: (offset: number) => void,
): void {
  const offset = page.offset;
  const scale = Math.max(...page.neurons.map((n) => Math.abs(n.contribution)), 1e-9);
  const table = el('table', {class: 'list'});
  const head = el('tr');
  head.append(el('th', {}, 'neuron'), el('th', {}, 'contribution'), el('th', {}, ''), el('th', {}, 'activation'));
  if (ablations !== null) head.append(el('th', {title: ABLATE_NEURON_TITLE}, '⊘'));
  table.append(head);
  const rows: HTMLTableRowElement[] = [];
  const choose = (neuron: number, row: HTMLTableRowElement) => {
    rows.forEach((r) => r.setAttribute('aria-selected', String(r === row)));
    neuronSection(link, q.expertLayout, node.layer, neuron, context, chosen);
  };
  for (const n of page.neurons) {
    const label = q.neuronLabel(node.layer, n.neuron);
    // Which expert the neuron belongs to (`L1.E2` of `L1.E2.N6`), for the experts table's filter.
    const expert: Record<string, string> = q.isSparse(node.layer) ? {'data-expert': label.slice(0, label.lastIndexOf('.'))} : {};
    const row = el('tr', {class: 'selectable', tabindex: '0', 'aria-selected': 'false', 'data-neuron': String(n.neuron), ...expert});
    row.addEventListener('click', () => choose(n.neuron, row));
    row.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        choose(n.neuron, row);
      }
    });
    rows.push(row);
    const barCell = el('td');
    barCell.append(bar(n.contribution, scale));
    const act = el('td', {class: `num ${n.activation >= 0 ? 'pos' : 'neg'}`}, (n.activation >= 0 ? '+' : '') + fmt(n.activation, 3));
    row.append(el('td', {}, label), el('td', {class: 'num'}, fmt(n.contribution, 4)), barCell, act);
    if (ablations !== null) row.append(ablations.cell(ablationTarget.neuron(node.layer, n.neuron, node.position), row));
    table.append(row);
  }
  into.append(table);
  into.append(el('p', {class: 'note'}, `Neurons ${offset + 1}–${offset + page.neurons.length} of ${page.total}; the block's non-neuron part (biases) contributes ${fmt(page.rest, 4)}.${more}`));
  const pager = el('div', {class: 'pager'});
  const prev = el('button', {type: 'button'}, '← Previous');
  const next = el('button', {type: 'button'}, 'Next →');
  prev.disabled = offset === 0;
  next.disabled = offset + NEURON_PAGE >= available;
  prev.addEventListener('click', () => showPage(Math.max(0, offset - NEURON_PAGE)));
  next.addEventListener('click', () => showPage(offset + NEURON_PAGE));
  pager.append(prev, next);
  into.append(pager);
  const first = page.neurons[0];
  if (first !== undefined && rows[0] !== undefined) choose(first.neuron, rows[0]);
}

export function projectionPanel(q: TraceQueries, link: DaemonLink, node: NodeId, details: HTMLElement): void {
  details.append(el('h2', {}, `${nodeLabel(node)} · token ${node.position} ${tokenAt(q, node.position)}`));
  projectionSection(q, link, node, 'lens', details, (lens, into) =>
    into.append(tokenList(lensTitle(q), lens.top), tokenList('Bottom tokens', lens.bottom)),
  );
}
