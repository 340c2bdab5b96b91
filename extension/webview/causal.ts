/**
 * The causal checks of the graph webview (docs/method.md, "Causal checks"), asked of the daemon
 * through the host: "ablate" toggles in the details panel (a head of an attention edge, the edge
 * through every head, a head everywhere, an FFN node, a neuron), each showing where it was
 * clicked how log p of the traced prediction changes; and the toolbar's "Verify route", whose
 * faithfulness figure stands beside the edge count until τ, the mode or the output token change.
 * Both need the model: without a live daemon trace, or when the daemon answers NeedsModel, they
 * show the drill-downs' "needs the model" note. Token strings reach the DOM as text only.
 */

import type {AblateResult, VerifyRouteResult} from '../shared/protocol/types';
import {el, quoted} from './dom';
import {NEEDS_MODEL, needsModelNote, QueryError, type DaemonLink} from './drill';
import {faithfulness, verifyButton} from './shell';
import {currentToken, shown, view} from './state';

/** How an ablated component is replaced (patch needs a second prompt: the CLI and API have it). */
export type AblationKind = 'zero' | 'mean';

const KIND_TITLE = 'How an ablated component is replaced: zero, or its mean over the prompt’s positions';

/** The kind every toggle and Verify route use; the panel's selector changes it. */
let kind: AblationKind = 'zero';

/** Ablation targets as the daemon writes them (daemon/lmscope/causal/targets.py). */
export const ablationTarget = {
  /** One attention edge `target` ← `source` through one head. */
  headEdge: (layer: number, head: number, target: number, source: number) => `L${layer}H${head}:${target}<-${source}`,
  /** The attention edge `target` ← `source` through every head. */
  edge: (layer: number, target: number, source: number) => `L${layer}:${target}<-${source}`,
  /** A head at every position. */
  head: (layer: number, head: number) => `L${layer}H${head}`,
  /** The FFN block's update at one position. */
  ffn: (layer: number, position: number) => `L${layer}.ffn@${position}`,
  /** A (dense) neuron's activation at one position. */
  neuron: (layer: number, neuron: number, position: number) => `L${layer}.N${neuron}@${position}`,
};

/** A signed number with a real minus sign: −0.26, +0.04, ±0. */
export function signed(value: number): string {
  if (value === 0) return '±0';
  const size = Math.abs(value);
  const text = size >= 0.01 ? size.toFixed(2) : size.toPrecision(2);
  return `${value < 0 ? '−' : '+'}${text}`;
}

/** A probability: a percentage while it reads as one, else in scientific notation (5.7e-9). */
export function probability(p: number): string {
  return p >= 0.001 ? `${(100 * p).toFixed(1)}%` : p.toExponential(1);
}

/** A ratio of probabilities (the faithfulness figure): 0.83, 1.2, 5.7e-9. */
export function ratio(value: number): string {
  return value >= 0.01 ? value.toPrecision(2) : value.toExponential(1);
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** What an ablation did, in one line; the title says it in full. */
function ablationLine(result: AblateResult): HTMLElement {
  const before = Math.exp(result.logprob);
  const after = Math.exp(result.ablatedLogprob);
  const top = result.top[0];
  const text = `Δ log p ${signed(result.deltaLogprob)} (p ${probability(before)} → ${probability(after)})` + (top === undefined ? '' : ` · top ${quoted(top.token)} ${probability(top.prob)}`);
  const title =
    `Ablating ${result.targets.join(', ')} (${result.kind}) in one forward pass of the model: log p of the traced prediction ${quoted(result.token)} at token ${result.position} ` +
    `goes from ${result.logprob.toFixed(3)} to ${result.ablatedLogprob.toFixed(3)} (Δ ${signed(result.deltaLogprob)}; p ${probability(before)} → ${probability(after)}). ` +
    `Most probable next tokens after the ablation: ${result.top.map((t) => `${quoted(t.token)} ${probability(t.prob)}`).join(', ')}.`;
  return el('span', {class: `ablation-result ${result.deltaLogprob < 0 ? 'neg' : 'pos'}`, title}, text);
}

/**
 * The ablate toggles of one details panel. Pressing a toggle asks the daemon to ablate its target
 * (the selector's kind, at the shown output token) and shows the answer in the toggle's slot;
 * pressing it again takes the answer away (one still on its way is then dropped). The pressed
 * toggles can be ablated together, as one set, from the panel's bar.
 */
export class Ablations {
  /** Every toggle made for this panel, by target (a re-rendered one replaces its entry). */
  private readonly toggles = new Map<string, HTMLButtonElement>();
  private readonly together = el('button', {type: 'button', class: 'ablate-together', title: 'Ablate every pressed ⊘ target of this panel in one forward pass'}, 'ablate selected together');
  private readonly togetherResult = el('span', {class: 'ablation'});
  /** Answers older than this are not shown (the set changed since, or was asked again). */
  private togetherAsked = 0;

  constructor(private readonly link: DaemonLink) {
    this.together.disabled = true;
    this.together.addEventListener('click', () => {
      const targets = this.pressed();
      if (targets.length < 2) return;
      const asked = ++this.togetherAsked;
      this.ask(targets, this.togetherResult, this.together, () => asked === this.togetherAsked);
    });
  }

  /** The panel header's bar: the kind selector and "ablate selected together" with its answer. */
  bar(): HTMLElement {
    const bar = el('div', {class: 'ablate-bar'});
    const label = el('label', {title: KIND_TITLE}, 'ablate (⊘) as ');
    const select = el('select', {class: 'ablate-kind', 'aria-label': 'Ablation kind'});
    select.append(el('option', {value: 'zero'}, 'zero'), el('option', {value: 'mean'}, 'mean'));
    select.value = kind;
    select.addEventListener('change', () => {
      kind = select.value === 'mean' ? 'mean' : 'zero';
    });
    label.append(select);
    bar.append(label, this.together, this.togetherResult);
    return bar;
  }

  /** A toggle with its answer beside it, on a line of its own: `what` says what it ablates. */
  line(target: string, what: string): HTMLElement {
    const line = el('div', {class: 'ablate-line'});
    const slot = el('span', {class: 'ablation'});
    line.append(this.toggle(target, slot), el('span', {class: 'ablate-what'}, what), slot);
    return line;
  }

  /** A table cell holding a toggle for `row`; its answer goes in a row below `row`, across it. */
  cell(target: string, row: HTMLTableRowElement): HTMLTableCellElement {
    const cell = el('td', {class: 'ablate'});
    const answerRow = el('tr', {class: 'ablation-row', hidden: ''});
    const answer = el('td');
    const slot = el('div', {class: 'ablation'});
    answer.append(slot);
    answerRow.append(answer);
    const show = () => {
      if (!answerRow.isConnected) row.after(answerRow);
      answer.colSpan = row.children.length;
      answerRow.hidden = slot.childElementCount === 0;
    };
    const button = this.toggle(target, slot, show);
    cell.append(button);
    return cell;
  }

  private toggle(target: string, slot: HTMLElement, changed: () => void = () => {}): HTMLButtonElement {
    const button = el('button', {type: 'button', class: 'ablate-toggle', 'aria-pressed': 'false', 'aria-label': `Ablate ${target}`, title: `Ablate ${target} and show how log p of the traced prediction changes`}, '⊘');
    this.toggles.set(target, button);
    let asked = 0;
    button.addEventListener('click', (event) => {
      event.stopPropagation(); // not a click on the row (which picks a head or neuron)
      const pressing = button.getAttribute('aria-pressed') !== 'true';
      button.setAttribute('aria-pressed', String(pressing));
      const mine = ++asked;
      if (pressing) this.ask([target], slot, button, () => mine === asked && button.getAttribute('aria-pressed') === 'true', changed);
      else {
        slot.replaceChildren();
        button.removeAttribute('aria-busy');
      }
      changed();
      this.syncTogether();
    });
    // Enter and Space act on the button, not on the row around it.
    button.addEventListener('keydown', (event) => event.stopPropagation());
    return button;
  }

  /** The pressed toggles still on the page, in the order they were made. */
  private pressed(): string[] {
    return [...this.toggles].filter(([, b]) => b.isConnected && b.getAttribute('aria-pressed') === 'true').map(([t]) => t);
  }

  private syncTogether(): void {
    const n = this.pressed().length;
    this.together.disabled = n < 2;
    this.together.textContent = n < 2 ? 'ablate selected together' : `ablate ${n} selected together`;
    this.togetherAsked++;
    this.togetherResult.replaceChildren();
  }

  /**
   * Ablate `targets` and show the answer in `slot` while `current()` holds (the toggle is still
   * pressed, nothing newer was asked); `busy` is marked while the daemon works.
   */
  private ask(targets: string[], slot: HTMLElement, busy: HTMLButtonElement, current: () => boolean, changed: () => void = () => {}): void {
    const what = `Ablating ${targets.join(', ')}`;
    if (!this.link.live) {
      slot.replaceChildren(needsModelNote(what, this.link.reason));
      if (busy.classList.contains('ablate-toggle')) busy.setAttribute('aria-pressed', 'false');
      return;
    }
    const chosen = kind;
    slot.replaceChildren(el('span', {class: 'note loading'}, `ablating (${chosen})… asking the daemon`));
    busy.setAttribute('aria-busy', 'true');
    const settle = (fill: () => void) => {
      if (!current() || !slot.isConnected) return;
      busy.removeAttribute('aria-busy');
      fill();
      changed();
    };
    this.link.ask('lmscope/ablate', {targets: targets as [string, ...string[]], kind: chosen, token: currentToken()}).then(
      (result) => settle(() => slot.replaceChildren(ablationLine(result))),
      (error: unknown) =>
        settle(() => slot.replaceChildren(error instanceof QueryError && error.needsModel ? needsModelNote(what, error.message) : el('p', {class: 'note'}, `${what}: ${errorText(error)}`))),
    );
  }
}

// ---- Verify route ----------------------------------------------------------------------------------
/** The route a figure (or the question for one) belongs to; null: none shown. */
let verified: {token: number; threshold: number; mode: string; asked: number} | null = null;
let asks = 0;

function routeNow(): {token: number; threshold: number; mode: string} {
  return {token: currentToken(), threshold: view.threshold, mode: view.mode};
}

function showFigure(text: string, title: string, className: string): void {
  faithfulness.replaceChildren(className === 'needs-model' ? el('strong', {}, text) : document.createTextNode(text));
  faithfulness.className = `faithfulness ${className}`;
  faithfulness.title = title;
  faithfulness.hidden = false;
}

/** The figure in the header: compact; its title explains it in full. */
function faithfulnessFigure(result: VerifyRouteResult): void {
  const sets = result.randomProbs.length;
  const text = `kept p ${ratio(result.kept)} of full` + (sets > 0 ? `; random ${ratio(result.randomKept)} (seed ${result.seed})` : '');
  const title =
    `Verify route at τ ${result.threshold} (${view.mode === 'raw' ? 'raw' : 'renormalised'}, ${result.kind} ablation): keeping only the route — ` +
    `${result.keptEdges} of ${result.totalEdges} attention terms (head, i←j) and ${result.keptFfn} of ${result.totalFfn} FFN nodes — and ablating the rest, ` +
    `p(${quoted(result.token)}) at token ${result.position} goes from ${probability(result.fullProb)} to ${probability(result.routeProb)}: ${ratio(result.kept)} of the full model’s.` +
    (sets > 0 ? ` ${sets} random sets of the same size (seed ${result.seed}) keep ${ratio(result.randomKept)} on average.` : ' No random sets were drawn.');
  showFigure(text, title, 'verified');
}

/** Ask the daemon to verify the shown route (the selector's kind), showing the figure when it answers. */
function verify(link: DaemonLink): void {
  if (shown.queries === null) return;
  const route = routeNow();
  const asked = ++asks;
  verified = {...route, asked};
  if (!link.live) {
    showFigure(`verify route ${NEEDS_MODEL}`, `Verifying the route runs the model: here ${link.reason}. Trace Selection with the daemon running.`, 'needs-model');
    return;
  }
  const chosen = kind;
  showFigure(`verifying route (${chosen})…`, 'Asking the daemon: one plain pass, one with only the route kept, one per random set', 'loading');
  verifyButton.disabled = true;
  verifyButton.setAttribute('aria-busy', 'true');
  const settle = (fill: () => void) => {
    if (asked !== asks) return; // a newer question, or the route changed
    verifyButton.disabled = false;
    verifyButton.removeAttribute('aria-busy');
    fill();
  };
  link.ask('lmscope/verifyRoute', {token: route.token, threshold: route.threshold, mode: view.mode, kind: chosen}).then(
    (result) => settle(() => faithfulnessFigure(result)),
    (error: unknown) =>
      settle(() =>
        error instanceof QueryError && error.needsModel
          ? showFigure(`verify route ${NEEDS_MODEL}`, errorText(error), 'needs-model')
          : showFigure('verify route failed', errorText(error), 'failed'),
      ),
  );
}

/** Take the figure away (a new trace), dropping an answer still on its way. */
export function clearVerification(): void {
  asks++;
  verified = null;
  faithfulness.hidden = true;
  faithfulness.replaceChildren();
  faithfulness.title = '';
  verifyButton.disabled = false;
  verifyButton.removeAttribute('aria-busy');
}

/** The settings changed: the figure goes when the route it verified is no longer the one shown. */
export function followVerification(): void {
  if (verified === null) return;
  const now = routeNow();
  if (now.token !== verified.token || now.threshold !== verified.threshold || now.mode !== verified.mode) clearVerification();
}

export function installVerify(link: DaemonLink): void {
  verifyButton.addEventListener('click', () => verify(link));
}
