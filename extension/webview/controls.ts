/**
 * The toolbar's controls and the view settings they edit: the output token, the threshold τ
 * (slider and precise input), renormalisation and collapsing. A change is saved (VS Code's page
 * state), told to the host (which logs it) and redrawn; routes are recomputed here, with no
 * round trip.
 */

import {DEFAULTS} from '../shared/protocol/types';
import {generatedOutputs, generationOf} from '../shared/traces/chat';
import type {TraceQueries} from '../shared/traces/trace';
import {THRESHOLD_RANGE, type GraphSettings} from '../shared/webviewMessages';
import {clip} from '../shared/display';
import {el, shownToken} from './dom';
import {collapseBox, modeBox, thresholdNumber, thresholdRange, tokenSelect} from './shell';
import {currentToken, persist, post, shown, view} from './state';

/** The host's settings (from the lmscope.* configuration), for a page with none saved. */
export function applySettings(settings: GraphSettings): void {
  view.threshold = settings.threshold;
  view.mode = settings.mode;
}

/** One option per token of the trace; a chosen token past its end falls back to the last. A
 * trace with generated tokens gets a second group, "generated": option `#k: token` shows the
 * route of the position that predicted generated token k (one click to why it was chosen). */
export function populateTokens(q: TraceQueries): void {
  const strings = q.trace.tokens.strings;
  const options = strings.map((_, i) => el('option', {value: String(i)}, `${i}: ${clip(shownToken(q, i), 24)}`));
  const generated = generatedOutputs(generationOf(q.trace.extra, strings.length));
  if (generated.length === 0) {
    tokenSelect.replaceChildren(...options);
  } else {
    const prompt = el('optgroup', {label: 'tokens'});
    prompt.append(...options);
    const group = el('optgroup', {label: 'generated (route that predicted it)'});
    group.append(
      ...generated.map((g) =>
        el('option', {value: String(g.predictedBy), title: `the route of position ${g.predictedBy}, which predicted generated token ${g.index}`}, `#${g.index}: ${clip(shownToken(q, g.position), 24)}`),
      ),
    );
    tokenSelect.replaceChildren(prompt, group);
  }
  if (view.token !== null && view.token >= strings.length) view.token = null;
}

/** Show `view` in the controls; the threshold's lower bound is the trace's minThreshold. */
export function syncControls(): void {
  const min = shown.queries?.trace.settings.minThreshold ?? DEFAULTS.MinThreshold;
  thresholdRange.min = String(Math.max(DEFAULTS.MinThreshold, min));
  thresholdNumber.min = String(min);
  thresholdRange.value = String(view.threshold);
  thresholdNumber.value = String(view.threshold);
  modeBox.checked = view.mode === 'renormalize';
  collapseBox.checked = view.collapse;
  tokenSelect.value = String(currentToken());
}

/** Listen to the controls; `redraw` shows the route of the changed settings. */
export function installControls(redraw: () => void): void {
  const changed = () => {
    persist();
    post({type: 'settingsChanged', settings: {threshold: view.threshold, mode: view.mode}});
    redraw();
  };
  const setThreshold = (value: number) => {
    if (!Number.isFinite(value)) return;
    const min = shown.queries?.trace.settings.minThreshold ?? DEFAULTS.MinThreshold;
    view.threshold = Math.min(THRESHOLD_RANGE.max, Math.max(min, value));
    syncControls();
    changed();
  };
  thresholdRange.addEventListener('input', () => setThreshold(Number(thresholdRange.value)));
  thresholdNumber.addEventListener('change', () => setThreshold(Number(thresholdNumber.value)));
  modeBox.addEventListener('change', () => {
    view.mode = modeBox.checked ? 'renormalize' : 'raw';
    changed();
  });
  collapseBox.addEventListener('change', () => {
    view.collapse = collapseBox.checked;
    changed();
  });
  tokenSelect.addEventListener('change', () => {
    const value = Number(tokenSelect.value);
    view.token = shown.queries !== null && value === shown.queries.nTokens - 1 ? null : value;
    changed();
  });
}
