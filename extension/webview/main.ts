/**
 * The flow-graph webview's entry (browser). The host posts the `.lmtrace` bytes; this script
 * decodes them with the shared trace library and recomputes routes locally whenever the output
 * token, the threshold or the mode changes (no round trip). Everything from the trace (token
 * strings above all) is untrusted text: it only ever reaches the DOM through `textContent` / SVG
 * text nodes.
 *
 * This module handles the host's messages and wires the page together: state.ts (what is
 * shown and saved), shell.ts (the fixed elements), legend.ts, controls.ts (the toolbar),
 * render.ts (drawing the route and its pinned labels), inspect.ts (hover cards and the split
 * details panel, with panels.ts and drill.ts), causal.ts (ablate toggles, Verify route), zoom.ts (zoom and pan, d3-zoom), export.ts (SVG
 * and PNG); dom.ts and layout.ts are their helpers.
 */

import './style.css';
import {checkSameModel} from '../shared/diff/diff';
import {LmscopeError} from '../shared/errors';
import {readTraceFile} from '../shared/traces/lmtrace';
import {TraceQueries} from '../shared/traces/trace';
import {decodeBase64, isHostToWebview, type HostToWebview} from '../shared/webviewMessages';
import {clearVerification, followVerification, installVerify} from './causal';
import {applySettings, installControls, populateTokens, syncControls} from './controls';
import {DaemonLink} from './drill';
import {installExport} from './export';
import {closeDetails, followRoute, installInspection, relayout} from './inspect';
import {diffHeader, startDiff} from './diffView';
import {applyVocabularyColours} from './legend';
import {clearDrawing, render} from './render';
import {legend, liveBadge, showMessage, title} from './shell';
import {persist, post, restored, shown, view} from './state';
import {applyZoom, fit, installZoom} from './zoom';

const link = new DaemonLink(post);
let firstLoad = true;

function clearGraph(): void {
  shown.queries = null;
  shown.layout = null;
  clearDrawing();
  closeDetails();
}

/** A new trace (or its file changed on disk): decode it and draw its route. */
function load(message: Extract<HostToWebview, {type: 'load'}>, arrived: number, decoded?: TraceQueries): void {
  title.textContent = message.name;
  title.title = message.name;
  let queries: TraceQueries;
  try {
    const bytes = typeof message.bytes === 'string' ? decodeBase64(message.bytes) : message.bytes;
    queries = decoded ?? new TraceQueries(readTraceFile(bytes, message.name)); // decoded: the diff view's A
  } catch (error) {
    clearGraph();
    const text = error instanceof LmscopeError ? error.message : `Could not read ${message.name}: ${String(error)}`;
    showMessage(text);
    // The host is waiting for this load's `painted`: tell it there will be none.
    post({type: 'error', message: text});
    return;
  }
  closeDetails();
  clearVerification(); // the figure was of the route of the trace before
  shown.queries = queries;
  if (!restored) applySettings(message.settings);
  // A trace answers thresholds >= its minThreshold only.
  view.threshold = Math.max(view.threshold, queries.trace.settings.minThreshold);
  showMessage(null);
  populateTokens(queries);
  syncControls();
  relayout();
  if (restored && firstLoad) applyZoom();
  else fit();
  firstLoad = false;
  // The first frame with the route in it: the host logs how long the graph took.
  requestAnimationFrame(() => {
    const edges = shown.layout?.edges.length ?? 0;
    post({type: 'painted', ms: Math.round(performance.now() - arrived), edges});
  });
}

/** Two traces to compare (the diff view): A is the page's trace, B is diffed against it. */
function loadDiff(message: Extract<HostToWebview, {type: 'loadDiff'}>, arrived: number): void {
  let a: TraceQueries, b: TraceQueries;
  try {
    const open = (bytes: Uint8Array | string, name: string) => new TraceQueries(readTraceFile(typeof bytes === 'string' ? decodeBase64(bytes) : bytes, name));
    a = open(message.bytesA, message.nameA);
    b = open(message.bytesB, message.nameB);
    checkSameModel(a, b);
  } catch (error) {
    clearGraph();
    const text = error instanceof LmscopeError ? error.message : `Could not read the traces: ${String(error)}`;
    showMessage(text);
    post({type: 'error', message: text});
    return;
  }
  startDiff(b, message.alignLast);
  // Both traces answer thresholds >= their own minThreshold: the slider starts at B's too.
  view.threshold = Math.max(view.threshold, b.trace.settings.minThreshold);
  load({type: 'load', name: diffHeader(a, b), bytes: new Uint8Array(), settings: message.settings}, arrived, a);
}

window.addEventListener('message', (event: MessageEvent<unknown>) => {
  const arrived = performance.now();
  const data = event.data;
  if (!isHostToWebview(data)) return;
  switch (data.type) {
    case 'daemon':
      link.set(data.live, data.reason);
      liveBadge.textContent = data.live ? 'live' : 'saved';
      liveBadge.title = data.live ? 'The daemon holds this trace with its model: every drill-down works' : `Drill-downs that need the model are off: ${data.reason}`;
      liveBadge.hidden = false;
      break;
    case 'queryResult':
      link.answer(data);
      break;
    case 'loadError':
      clearGraph();
      title.textContent = data.name;
      showMessage(data.message);
      break;
    case 'load':
      load(data, arrived);
      break;
    case 'loadDiff':
      loadDiff(data, arrived);
      break;
  }
});

applyVocabularyColours();
legend.open = view.legend;
legend.addEventListener('toggle', () => {
  view.legend = legend.open;
  persist();
});
installControls(() => {
  render();
  followRoute(link);
  followVerification();
});
installInspection(link);
installVerify(link);
installZoom();
installExport();
window.addEventListener('error', (event) => post({type: 'error', message: String(event.message)}));
syncControls();
post({type: 'ready'});
