/**
 * "Compare With…" (`lmscope.compareWith`): open the diff view of two `.lmtrace` files
 * (docs/method.md, "Comparing two traces"). From an open trace's editor title it asks for the
 * other file (a quick pick of the workspace's traces, or a file dialog); from the Explorer with
 * exactly two `.lmtrace` files selected it compares those. The view is the flow-graph webview
 * (same shell, CSP and bundle) sent a `loadDiff` with both files' bytes: it diffs them itself
 * at every τ (shared/diff), so it works offline, without the daemon. Traces of different
 * lengths need the user's alignment: the command asks how many last tokens to align, never
 * guesses.
 */

import * as vscode from 'vscode';
import {readTraceFile} from '../shared/traces/lmtrace';
import {isWebviewToHost, type HostToWebview} from '../shared/webviewMessages';
import {configuredGraphSettings} from './traceEditor';
import {transferableBytes} from './transfer';
import {makeNonce, shellHtml} from './webviewHtml';

const BROWSE = 'Browse…';

function fileName(uri: vscode.Uri): string {
  return uri.path.split('/').pop() ?? 'trace';
}

function isTraceFile(uri: unknown): uri is vscode.Uri {
  return uri instanceof vscode.Uri && uri.path.endsWith('.lmtrace');
}

/** The two files to compare from the command's arguments, asking for what is missing. */
async function chooseFiles(clicked: unknown, selected: unknown): Promise<[vscode.Uri, vscode.Uri] | undefined> {
  const picked = Array.isArray(selected) ? selected.filter(isTraceFile) : [];
  if (picked.length === 2) return [picked[0]!, picked[1]!];
  if (picked.length > 2) {
    void vscode.window.showErrorMessage('lmscope: Compare With… compares two .lmtrace files: select exactly two.');
    return undefined;
  }
  const first = isTraceFile(clicked) ? clicked : activeTraceUri();
  if (first === undefined) {
    void vscode.window.showErrorMessage('lmscope: open a .lmtrace file (or select two in the Explorer) to compare.');
    return undefined;
  }
  const others = (await vscode.workspace.findFiles('**/*.lmtrace', '**/node_modules/**', 500)).filter((u) => u.toString() !== first.toString());
  const items = [...others.map((uri) => ({label: fileName(uri), description: vscode.workspace.asRelativePath(uri), uri})), {label: BROWSE, description: '', uri: undefined}];
  const choice = await vscode.window.showQuickPick(items, {placeHolder: `Compare ${fileName(first)} (A) with… (B, a trace of the same model)`});
  if (choice === undefined) return undefined;
  let second = choice.uri;
  if (second === undefined) {
    const chosen = await vscode.window.showOpenDialog({canSelectMany: false, filters: {'lmscope traces': ['lmtrace']}, openLabel: 'Compare'});
    second = chosen?.[0];
  }
  return second === undefined ? undefined : [first, second];
}

/** The file of the active lmscope trace editor (a custom editor: its tab's input). */
function activeTraceUri(): vscode.Uri | undefined {
  const input = vscode.window.tabGroups.activeTabGroup.activeTab?.input;
  return input instanceof vscode.TabInputCustom && isTraceFile(input.uri) ? input.uri : undefined;
}

/** How many last tokens to align, when the counts differ (undefined: the user cancelled). */
async function askAlignment(nA: number, nB: number): Promise<number | undefined> {
  const most = Math.min(nA, nB);
  const answer = await vscode.window.showInputBox({
    title: `The traces have ${nA} and ${nB} tokens`,
    prompt: `Positions cannot be matched one to one: align the last K tokens of each (1..${most})`,
    value: String(most),
    validateInput: (text) => (/^\d+$/.test(text) && Number(text) >= 1 && Number(text) <= most ? null : `a whole number within 1..${most}`),
  });
  return answer === undefined ? undefined : Number(answer);
}

/** Run "Compare With…": `clicked` and `selected` are what VS Code passes (Explorer or editor title). */
export async function compareWith(context: vscode.ExtensionContext, log: vscode.LogOutputChannel, clicked?: unknown, selected?: unknown): Promise<void> {
  const files = await chooseFiles(clicked, selected);
  if (files === undefined) return;
  const [a, b] = files;
  let bytesA: Uint8Array, bytesB: Uint8Array, alignLast: number | null = null;
  try {
    bytesA = await vscode.workspace.fs.readFile(a);
    bytesB = await vscode.workspace.fs.readFile(b);
    const nA = readTraceFile(bytesA, fileName(a)).dims.nTokens, nB = readTraceFile(bytesB, fileName(b)).dims.nTokens;
    if (nA !== nB) {
      const k = await askAlignment(nA, nB);
      if (k === undefined) return;
      alignLast = k;
    }
  } catch (error) {
    void vscode.window.showErrorMessage(`lmscope: cannot compare: ${error instanceof Error ? error.message : String(error)}`);
    return;
  }
  const dist = vscode.Uri.joinPath(context.extensionUri, 'dist');
  const panel = vscode.window.createWebviewPanel('lmscope.diff', `${fileName(a)} ↔ ${fileName(b)}`, vscode.ViewColumn.Active, {
    enableScripts: true,
    localResourceRoots: [dist],
    retainContextWhenHidden: false,
  });
  const webview = panel.webview;
  webview.html = shellHtml({
    cspSource: webview.cspSource,
    scriptUri: webview.asWebviewUri(vscode.Uri.joinPath(dist, 'webview.js')).toString(),
    styleUri: webview.asWebviewUri(vscode.Uri.joinPath(dist, 'webview.css')).toString(),
    nonce: makeNonce(),
  });
  const post = (message: HostToWebview) => void webview.postMessage(message);
  const subscription = webview.onDidReceiveMessage((message: unknown) => {
    if (!isWebviewToHost(message)) return;
    if (message.type === 'ready') {
      post({type: 'daemon', live: false, reason: 'a comparison shows what both files store'});
      post({type: 'loadDiff', nameA: fileName(a), nameB: fileName(b), bytesA: transferableBytes(bytesA), bytesB: transferableBytes(bytesB), alignLast, settings: configuredGraphSettings()});
    } else if (message.type === 'query') {
      // Drill-downs that need the model answer from one trace's daemon handle; a diff has two.
      post({type: 'queryResult', id: message.id, error: {message: 'drill-downs that need the model are not available in a comparison: open either trace', needsModel: true}});
    } else if (message.type === 'error') {
      log.error(`compare ${fileName(a)} with ${fileName(b)}: ${message.message}`);
    }
  });
  panel.onDidDispose(() => {
    subscription.dispose();
  });
}
