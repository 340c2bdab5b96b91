/**
 * The read-only custom editor for `.lmtrace` files (viewType `lmscope.traceViewer`). It needs no
 * daemon and no model: the webview decodes the file's bytes itself. The host only reads the file
 * (vscode.workspace.fs, so remote and virtual workspaces work), sends it, and sends it again when
 * the file changes on disk. It also tells the webview whether a live daemon trace backs the file
 * (LiveTraces) and forwards the webview's drill-down queries to it.
 */

import * as vscode from 'vscode';
import {ResponseError} from 'vscode-languageclient/node';
import {NotLiveError, type LiveTraces} from './liveTraces';
import {DEFAULTS, ErrorCodes, type ThresholdMode} from '../shared/protocol/types';
import {encodeBase64, graphThreshold, isWebviewToHost, type GraphSettings, type HostToWebview, type QueryMessage} from '../shared/webviewMessages';
import {makeNonce, shellHtml} from './webviewHtml';

export const TRACE_VIEW_TYPE = 'lmscope.traceViewer';

/** The graph settings from the lmscope.* configuration (unset: the protocol's defaults). */
export function configuredGraphSettings(): GraphSettings {
  const config = vscode.workspace.getConfiguration('lmscope');
  const threshold = graphThreshold(config.get<number>('threshold', DEFAULTS.Threshold));
  const mode: ThresholdMode = config.get<boolean>('renormalize', DEFAULTS.ThresholdMode === 'renormalize') ? 'renormalize' : 'raw';
  return {threshold, mode};
}

/** Shown when the webview shell cannot be built (a fixed page: no data, no script). */
const FAILED_HTML = `<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="default-src 'none'"></head>
<body><p>lmscope could not show this trace: see "lmscope: Show Log".</p></body></html>`;

class TraceDocument implements vscode.CustomDocument {
  constructor(readonly uri: vscode.Uri) {}
  dispose(): void {}
}

export class TraceEditorProvider implements vscode.CustomReadonlyEditorProvider<TraceDocument> {
  static register(context: vscode.ExtensionContext, log: vscode.LogOutputChannel, live: LiveTraces): vscode.Disposable {
    return vscode.window.registerCustomEditorProvider(TRACE_VIEW_TYPE, new TraceEditorProvider(context, log, live), {
      supportsMultipleEditorsPerDocument: true,
      webviewOptions: {retainContextWhenHidden: false},
    });
  }

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly log: vscode.LogOutputChannel,
    private readonly live: LiveTraces,
  ) {}

  openCustomDocument(uri: vscode.Uri): TraceDocument {
    return new TraceDocument(uri);
  }

  resolveCustomEditor(document: TraceDocument, panel: vscode.WebviewPanel): void {
    const dist = vscode.Uri.joinPath(this.context.extensionUri, 'dist');
    const webview = panel.webview;
    webview.options = {enableScripts: true, localResourceRoots: [dist]};
    try {
      webview.html = shellHtml({
        cspSource: webview.cspSource,
        scriptUri: webview.asWebviewUri(vscode.Uri.joinPath(dist, 'webview.js')).toString(),
        styleUri: webview.asWebviewUri(vscode.Uri.joinPath(dist, 'webview.css')).toString(),
        nonce: makeNonce(),
      });
    } catch (error) {
      this.log.error(`cannot show the graph of ${document.uri.toString()}: ${error instanceof Error ? error.message : String(error)}`);
      webview.options = {enableScripts: false, localResourceRoots: []};
      webview.html = FAILED_HTML;
      return;
    }
    const name = document.uri.path.split('/').pop() ?? 'trace';
    const post = (message: HostToWebview) => void webview.postMessage(message);
    const send = async () => {
      try {
        const bytes = await vscode.workspace.fs.readFile(document.uri);
        post({type: 'load', name, bytes: encodeBase64(bytes), settings: configuredGraphSettings()});
      } catch (error) {
        const text = error instanceof Error ? error.message : String(error);
        this.log.error(`reading ${document.uri.toString()}: ${text}`);
        post({type: 'loadError', name, message: `Could not read ${name}: ${text}`});
      }
    };
    const sendLink = async () => {
      const link = await this.live.link(document.uri);
      post(link.live ? {type: 'daemon', live: true, reason: ''} : {type: 'daemon', live: false, reason: link.reason});
    };
    const answer = async (query: QueryMessage) => {
      try {
        const result = await this.live.query(document.uri, query.method, query.params);
        post({type: 'queryResult', id: query.id, result});
      } catch (error) {
        const text = error instanceof Error ? error.message : String(error);
        const needsModel = error instanceof NotLiveError || (error instanceof ResponseError && error.code === ErrorCodes.NeedsModel);
        if (!needsModel) this.log.error(`graph ${name}: ${query.method} failed: ${text}`);
        post({type: 'queryResult', id: query.id, error: {message: text, needsModel}});
      }
    };
    const disposables: vscode.Disposable[] = [this.live.onDidChange(() => void sendLink())];
    disposables.push(
      webview.onDidReceiveMessage((message: unknown) => {
        if (!isWebviewToHost(message)) {
          this.log.warn('ignored a malformed message from the graph webview');
          return;
        }
        switch (message.type) {
          case 'ready':
            void send().then(sendLink);
            break;
          case 'query':
            void answer(message);
            break;
          case 'settingsChanged':
            this.log.debug(`graph ${name}: threshold ${message.settings.threshold}, ${message.settings.mode}`);
            break;
          case 'error':
            this.log.error(`graph webview (${name}): ${message.message}`);
            break;
        }
      }),
    );
    if (document.uri.scheme === 'file') {
      const watcher = vscode.workspace.createFileSystemWatcher(new vscode.RelativePattern(vscode.Uri.joinPath(document.uri, '..'), name));
      disposables.push(watcher, watcher.onDidChange(() => void send()), watcher.onDidCreate(() => void send()));
    }
    panel.onDidDispose(() => {
      for (const d of disposables) d.dispose();
    });
  }
}
