/**
 * The run view webview's entry (browser; bundled apart from the flow graph as dist/runView.js):
 * a corpus run folder (`lmscope run`) as a layers x heads heatmap with the FFN blocks as a column
 * beside it, the statistic chosen in the toolbar (mean share, or on-route frequency at τ 0.01 /
 * 0.04 / 0.1; a tag filter when the run has tags). Clicking a cell (or Enter on it) selects that
 * head or FFN block: the host asks the daemon again (lmscope/run with `component`) and the panel
 * lists the prompts where it matters most, each with a button that opens its trace.
 *
 * Every number comes from the host's `run` message (the daemon reads the run's tables; nothing is
 * computed here but colours). Prompt texts, ids, tags and the run's name are untrusted text: they
 * reach the DOM through `textContent` only.
 */

import './runView.css';
import {clip, cssColour, edgeColour, nodeColour} from '../shared/display';
import type {RunComponent, RunComponentStats, RunResult} from '../shared/protocol/types';
import {componentLabel, isHostToRunView, isRunQuery, RUN_THRESHOLDS, type RunQuery, type RunViewToHost} from '../shared/runMessages';
import {el} from './dom';

interface VsCodeApi {
  postMessage(message: RunViewToHost): void;
  getState(): unknown;
  setState(state: unknown): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

const api = acquireVsCodeApi();
const post = (message: RunViewToHost) => api.postMessage(message);
const PROMPT_CHARS = 240; // a prompt's text is cut in the list (its trace has all of it)

const saved = api.getState();
let query: RunQuery = isRunQuery(saved) ? saved : {stat: 'meanShare', threshold: 0.04, tag: null, component: null};
let asked = 0; // the id of the latest query: older answers are stale
let shown: RunResult | null = null;

// --- the fixed page --------------------------------------------------------------------------
const root = document.getElementById('root')!;
const title = el('span', {class: 'title'});
const summary = el('span', {class: 'summary'});
const statSelect = el('select', {id: 'run-stat', title: 'What each cell shows'});
statSelect.append(el('option', {value: 'meanShare'}, 'mean share'), el('option', {value: 'onRoute'}, 'on route (fraction of prompts)'));
const thresholdSelect = el('select', {id: 'run-threshold', title: 'The route threshold τ of "on route"'});
for (const tau of RUN_THRESHOLDS) thresholdSelect.append(el('option', {value: String(tau)}, `τ ${tau}`));
const tagSelect = el('select', {id: 'run-tag', title: 'Only the prompts with this tag'});
const tagGroup = el('label', {class: 'group', hidden: ''}, 'tag ');
tagGroup.append(tagSelect);
const statGroup = el('label', {class: 'group'}, 'show ');
statGroup.append(statSelect);
const busy = el('span', {class: 'busy', hidden: ''}, 'reading the run…');
const controls = el('div', {class: 'controls'});
controls.append(statGroup, thresholdSelect, tagGroup, busy);
const headline = el('div', {class: 'headline'});
headline.append(title, summary);
const toolbar = el('div', {class: 'toolbar'});
toolbar.append(headline, controls);
const message = el('div', {class: 'message', hidden: ''});
const heatmap = el('table', {class: 'heatmap', id: 'run-heatmap'});
const scale = el('div', {class: 'scale'});
const grid = el('div', {class: 'grid'});
grid.append(heatmap, scale);
const details = el('div', {class: 'details', id: 'run-details'});
const body = el('div', {class: 'run-body'});
body.append(grid, details);
root.append(toolbar, message, body);
root.style.setProperty('--run-head', cssColour(edgeColour('attention')));
root.style.setProperty('--run-ffn', cssColour(nodeColour('ffn')));

function showMessage(text: string | null): void {
  message.textContent = text ?? '';
  message.hidden = text === null;
}

function ask(): void {
  api.setState(query);
  busy.hidden = false;
  post({type: 'query', id: ++asked, query});
}

// --- numbers as text -------------------------------------------------------------------------
const percent = (value: number, digits: number) => `${(100 * value).toFixed(digits)}%`;

function statText(result: RunResult, value: number): string {
  return result.stat === 'meanShare' ? `mean share ${percent(value, 1)}` : `on the route in ${percent(value, 0)} of prompts at τ ${result.threshold}`;
}

function sameComponent(a: RunComponent | null, b: RunComponent | null): boolean {
  return a !== null && b !== null && componentLabel(a) === componentLabel(b);
}

// --- the heatmap -----------------------------------------------------------------------------
/** A cell coloured by `value / largest` of its group (heads, or FFN blocks): shares are scaled to
 * the largest shown, frequencies are fractions already (1 is every prompt). */
function cell(result: RunResult, component: RunComponent, value: number, largest: number): HTMLTableCellElement {
  const label = componentLabel(component);
  const td = el('td', {class: `cell ${component.kind}`, tabindex: '0', role: 'button', 'data-component': label, title: `${label}: ${statText(result, value)}`});
  td.setAttribute('aria-label', td.title);
  const strength = largest > 0 ? Math.max(0, Math.min(1, value / largest)) : 0;
  td.style.setProperty('--strength', `${Math.round(100 * strength)}%`);
  if (sameComponent(component, query.component)) td.classList.add('selected');
  const choose = () => {
    query = {...query, component};
    ask();
  };
  td.addEventListener('click', choose);
  td.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      choose();
    }
  });
  return td;
}

function drawHeatmap(result: RunResult): void {
  const {nLayers, nHeads} = result.run;
  const fraction = result.stat === 'onRoute';
  const headMax = fraction ? 1 : Math.max(0, ...result.heads.flat());
  const ffnMax = fraction ? 1 : Math.max(0, ...result.ffn);
  const head = el('tr');
  head.append(el('th', {class: 'corner'}, 'layer'));
  for (let h = 0; h < nHeads; h++) head.append(el('th', {scope: 'col'}, `H${h}`));
  head.append(el('th', {scope: 'col', class: 'ffn-head', title: 'The FFN (MLP) block of each layer'}, 'FFN'));
  const rows: HTMLTableRowElement[] = [head];
  // The last layer on top, as in the flow graph: the prediction is read from there.
  for (let layer = nLayers - 1; layer >= 0; layer--) {
    const row = el('tr');
    row.append(el('th', {scope: 'row'}, `L${layer}`));
    for (let h = 0; h < nHeads; h++) row.append(cell(result, {kind: 'head', layer, index: h}, result.heads[layer]![h]!, headMax));
    row.append(cell(result, {kind: 'ffn', layer}, result.ffn[layer]!, ffnMax));
    rows.push(row);
  }
  heatmap.replaceChildren(...rows);
  scale.textContent = fraction
    ? `Colour: the fraction of the ${result.nPrompts} prompts whose route (τ ${result.threshold}) has the component; full colour = every prompt.`
    : `Colour: mean share of the prediction over the ${result.nPrompts} prompts; full colour = the largest (heads ${percent(headMax, 1)}, FFN ${percent(ffnMax, 1)}).`;
}

// --- the selected component ------------------------------------------------------------------
function drawDetails(result: RunResult): void {
  const stats: RunComponentStats | null = result.component;
  if (stats === null) {
    details.replaceChildren(el('p', {class: 'hint'}, 'Click a cell to see the prompts where that head or FFN block matters most.'));
    return;
  }
  const label = componentLabel(stats.component);
  const heading = el('h3', {}, `${label} · ${stats.component.kind === 'head' ? 'attention head' : 'FFN block'}`);
  const figures = el(
    'p',
    {class: 'figures'},
    `on the route in ${percent(stats.onRouteFraction, 0)} of ${stats.nPrompts} prompts (τ 0.04) · mean share ${percent(stats.meanShare, 1)} ± ${percent(stats.stdShare, 1)}`,
  );
  if (stats.topPrompts.length === 0) {
    details.replaceChildren(heading, figures, el('p', {class: 'hint'}, 'No prompt of this run is traced yet.'));
    return;
  }
  const table = el('table', {class: 'top-prompts'});
  const head = el('tr');
  head.append(el('th', {}, 'share'), el('th', {}, 'id'), el('th', {}, 'prompt'), el('th', {}, ''));
  table.append(head);
  for (const prompt of stats.topPrompts) {
    const row = el('tr', {class: 'top-prompt', 'data-index': String(prompt.index)});
    const open = el('button', {class: 'open-trace', title: `Open ${prompt.trace}`}, 'Open trace');
    open.addEventListener('click', () => post({type: 'openTrace', trace: prompt.trace}));
    const action = el('td');
    action.append(open);
    row.append(el('td', {class: 'share'}, percent(prompt.share, 1)), el('td', {class: 'id'}, prompt.id), el('td', {class: 'text', title: clip(prompt.text, 2000)}, clip(prompt.text, PROMPT_CHARS)), action);
    table.append(row);
  }
  details.replaceChildren(heading, figures, table);
}

// --- the toolbar -----------------------------------------------------------------------------
function syncControls(result: RunResult | null): void {
  statSelect.value = query.stat;
  thresholdSelect.value = String(query.threshold);
  thresholdSelect.disabled = query.stat !== 'onRoute';
  const tags = result?.run.tags ?? [];
  tagGroup.hidden = tags.length === 0;
  const options = [el('option', {value: ''}, 'every prompt'), ...tags.map((tag) => el('option', {value: tag}, tag))];
  tagSelect.replaceChildren(...options);
  tagSelect.value = query.tag ?? '';
}

statSelect.addEventListener('change', () => {
  query = {...query, stat: statSelect.value === 'onRoute' ? 'onRoute' : 'meanShare'};
  ask();
});
thresholdSelect.addEventListener('change', () => {
  const tau = RUN_THRESHOLDS.find((t) => String(t) === thresholdSelect.value);
  if (tau !== undefined) query = {...query, threshold: tau};
  ask();
});
tagSelect.addEventListener('change', () => {
  query = {...query, tag: tagSelect.value === '' ? null : tagSelect.value};
  ask();
});

function show(result: RunResult): void {
  shown = result;
  const {run} = result;
  title.textContent = `run ${run.name}`;
  title.title = run.path;
  const failed = run.counts.failed > 0 ? `, ${run.counts.failed} failed` : '';
  const going = run.counts.done + run.counts.failed < run.counts.prompts ? ' (in progress)' : '';
  summary.textContent = `${run.model.name} · ${run.counts.done} of ${run.counts.prompts} prompts traced${failed}${going}${result.tag === null ? '' : ` · tag ${result.tag}: ${result.nPrompts} prompts`}`;
  showMessage(run.counts.done === 0 ? 'No prompt of this run is traced yet.' : null);
  syncControls(result);
  drawHeatmap(result);
  drawDetails(result);
}

window.addEventListener('message', (event: MessageEvent<unknown>) => {
  const data = event.data;
  if (!isHostToRunView(data) || data.id !== asked) return; // not ours, or stale
  busy.hidden = true;
  if (data.type === 'run') {
    show(data.result);
  } else {
    showMessage(data.message);
    // A query the run cannot answer (a tag or cell gone since): keep what was shown, and ask
    // from scratch next time.
    if (shown === null) heatmap.replaceChildren();
    query = {stat: query.stat, threshold: query.threshold, tag: null, component: null};
    api.setState(query);
  }
});
window.addEventListener('error', (event) => post({type: 'error', message: String(event.message)}));

syncControls(null);
post({type: 'ready'});
ask();
