/**
 * The flow-graph webview's entry (browser). The host posts the `.lmtrace` bytes; this script
 * decodes them with the shared trace library and recomputes routes locally whenever the output
 * token, the threshold or the mode changes (no round trip). Everything from the trace (token
 * strings above all) is untrusted text: it only ever reaches the DOM through `textContent` / SVG
 * text nodes.
 *
 * This module handles the host's messages and wires the page together: state.ts (what is
 * shown and saved), shell.ts (the fixed elements), controls.ts (the toolbar), render.ts (drawing
 * the route), inspect.ts (hover cards and the details panel, with panels.ts and drill.ts),
 * zoom.ts (zoom and pan); dom.ts and layout.ts are their helpers.
 */

import './style.css';
import {LmscopeError} from '../shared/errors';
import {readTraceFile} from '../shared/traces/lmtrace';
import {TraceQueries} from '../shared/traces/trace';
import {decodeBase64, isHostToWebview, type HostToWebview} from '../shared/webviewMessages';
import {applySettings, installControls, populateTokens, syncControls} from './controls';
import {DaemonLink} from './drill';
import {installInspection} from './inspect';
import {render} from './render';
import {liveBadge, showMessage, title, viewport} from './shell';
import {post, restored, shown, view} from './state';
import {applyZoom, fit, installZoom} from './zoom';

const link = new DaemonLink(post);

/** A new trace (or its file changed on disk): decode it and draw its route. */
function load(message: Extract<HostToWebview, {type: 'load'}>): void {
  title.textContent = message.name;
  let queries: TraceQueries;
  try {
    queries = new TraceQueries(readTraceFile(decodeBase64(message.bytes), message.name));
  } catch (error) {
    shown.queries = null;
    viewport.replaceChildren();
    showMessage(error instanceof LmscopeError ? error.message : `Could not read ${message.name}: ${String(error)}`);
    return;
  }
  shown.queries = queries;
  if (!restored) applySettings(message.settings);
  // A trace answers thresholds >= its minThreshold only.
  view.threshold = Math.max(view.threshold, queries.trace.settings.minThreshold);
  showMessage(null);
  populateTokens(queries);
  syncControls();
  render();
  if (!restored) fit();
  applyZoom();
}

window.addEventListener('message', (event: MessageEvent<unknown>) => {
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
      shown.queries = null;
      title.textContent = data.name;
      viewport.replaceChildren();
      showMessage(data.message);
      break;
    case 'load':
      load(data);
      break;
  }
});

installControls(render);
installInspection(link);
installZoom();
window.addEventListener('error', (event) => post({type: 'error', message: String(event.message)}));
syncControls();
post({type: 'ready'});
