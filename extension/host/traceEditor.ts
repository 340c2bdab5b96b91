/**
 * The read-only custom editor for `.lmtrace` files (viewType `lmscope.traceViewer`). It needs no
 * daemon and no model: the webview decodes the file's bytes itself. The host only reads the file
 * (vscode.workspace.fs, so remote and virtual workspaces work), posts its bytes as binary, and
 * posts them again when the file's content changes on disk (the file watcher) or when Trace
 * Selection has just replaced it (`reload`, without waiting for the watcher). A watcher event for
 * content already shown (same size and modification time) loads nothing, so a graph opened
 * right after the daemon saved its file loads once. It also tells the webview whether a live
 * daemon trace backs the file (LiveTraces), forwards the webview's drill-down queries to it, saves
 * the webview's SVG/PNG exports (checked by exportFile.ts), and marks the phases of a Trace
 * Selection's timing (timing.ts) until the graph is painted.
 */

import * as vscode from 'vscode';
import {ResponseError} from 'vscode-languageclient/node';
import {NotLiveError, type LiveTraces} from './liveTraces';
import {DEFAULTS, ErrorCodes, type ThresholdMode} from '../shared/protocol/types';
import {graphThreshold, isWebviewToHost, type ExportMessage, type GraphSettings, type HostToWebview, type QueryMessage} from '../shared/webviewMessages';
import {ExportError, exportBytes, exportFileName} from './exportFile';
import type {PendingTimings} from './timing';
import {transferableBytes} from './transfer';
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

/** The key of a trace file in PendingTimings and for `reload`: its fsPath (a file) or URI. */
export function traceFileKey(uri: vscode.Uri): string {
  return uri.scheme === 'file' ? uri.fsPath : uri.toString();
}

export class TraceEditorProvider implements vscode.CustomReadonlyEditorProvider<TraceDocument> {
  /** The graphs on screen, by traceFileKey: each one's "post the file again now". */
  private readonly reloaders = new Map<string, Set<() => void>>();

  static register(provider: TraceEditorProvider): vscode.Disposable {
    return vscode.window.registerCustomEditorProvider(TRACE_VIEW_TYPE, provider, {
      supportsMultipleEditorsPerDocument: true,
      webviewOptions: {retainContextWhenHidden: false},
    });
  }

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly log: vscode.LogOutputChannel,
    private readonly live: LiveTraces,
    private readonly timings: PendingTimings,
  ) {}

  openCustomDocument(uri: vscode.Uri): TraceDocument {
    return new TraceDocument(uri);
  }

  /** The file `key` was just rewritten (Trace Selection replaced it): every graph showing it
   * loads it now. Returns whether any graph shows it. */
  reload(key: string): boolean {
    const shown = this.reloaders.get(key);
    for (const reload of shown ?? []) reload();
    return shown !== undefined && shown.size > 0;
  }

  resolveCustomEditor(document: TraceDocument, panel: vscode.WebviewPanel): void {
    const file = traceFileKey(document.uri);
    this.timings.mark(file, 'editor resolved');
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
      this.timings.drop(file);
      return;
    }
    const name = document.uri.path.split('/').pop() ?? 'trace';
    const post = (message: HostToWebview) => void webview.postMessage(message);
    let ready = false;
    /** Size and modification time of the content last posted ("" before the first). */
    let postedVersion = '';
    /** Post the file's bytes; `onlyIfChanged`: not when its content is the one last posted. */
    const send = async (onlyIfChanged: boolean) => {
      try {
        const started = performance.now();
        const stat = await vscode.workspace.fs.stat(document.uri);
        const version = `${stat.size}:${stat.mtime}`;
        if (onlyIfChanged && version === postedVersion) {
          this.log.debug(`graph ${name}: changed on disk, content already shown`);
          return;
        }
        postedVersion = version;
        const bytes = transferableBytes(await vscode.workspace.fs.readFile(document.uri));
        const read = performance.now();
        post({type: 'load', name, bytes, settings: configuredGraphSettings()});
        const detail = `(${bytes.length} bytes: read ${Math.round(read - started)} ms, post ${Math.round(performance.now() - read)} ms)`;
        if (this.timings.has(file)) this.timings.mark(file, 'load posted', detail);
        else this.log.info(`graph ${name}: load posted ${detail}`);
      } catch (error) {
        postedVersion = '';
        const text = error instanceof Error ? error.message : String(error);
        this.log.error(`reading ${document.uri.toString()}: ${text}`);
        post({type: 'loadError', name, message: `Could not read ${name}: ${text}`});
        this.timings.drop(file);
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
    // Before `ready` the webview cannot take a load; its `ready` posts the newest file anyway.
    const reload = () => {
      if (ready) void send(false).then(sendLink);
    };
    const reloaders = this.reloaders.get(file) ?? new Set();
    reloaders.add(reload);
    this.reloaders.set(file, reloaders);
    const disposables: vscode.Disposable[] = [this.live.onDidChange(() => void sendLink())];
    disposables.push(
      webview.onDidReceiveMessage((message: unknown) => {
        if (!isWebviewToHost(message)) {
          this.log.warn('ignored a malformed message from the graph webview');
          return;
        }
        switch (message.type) {
          case 'ready':
            ready = true;
            this.timings.mark(file, 'webview ready');
            void send(false).then(sendLink);
            break;
          case 'painted':
            if (!this.timings.finish(file, 'painted', `(webview ${Math.round(message.ms)} ms, ${message.edges} edges)`)) {
              this.log.info(`graph ${name}: painted in ${Math.round(message.ms)} ms (${message.edges} edges)`);
            }
            break;
          case 'export':
            void this.saveExport(document.uri, name, message);
            break;
          case 'query':
            void answer(message);
            break;
          case 'settingsChanged':
            this.log.debug(`graph ${name}: threshold ${message.settings.threshold}, ${message.settings.mode}`);
            break;
          case 'error':
            this.log.error(`graph webview (${name}): ${message.message}`);
            // A graph that failed (to decode its file, above all) will not be painted.
            this.timings.drop(file);
            break;
        }
      }),
    );
    if (document.uri.scheme === 'file') {
      const watcher = vscode.workspace.createFileSystemWatcher(new vscode.RelativePattern(vscode.Uri.joinPath(document.uri, '..'), name));
      // An atomic save (a rename over the file) may come as a create, a change or both.
      const changed = () => {
        if (ready) void send(true);
      };
      disposables.push(watcher, watcher.onDidChange(changed), watcher.onDidCreate(changed));
    }
    panel.onDidDispose(() => {
      reloaders.delete(reload);
      if (reloaders.size === 0) this.reloaders.delete(file);
      this.timings.drop(file);
      for (const d of disposables) d.dispose();
    });
  }

  /** Save an export of the graph of `trace`: checked, then where the user says (proposed:
   * next to the trace), then reported with its path. */
  private async saveExport(trace: vscode.Uri, traceName: string, message: ExportMessage): Promise<void> {
    const kind = message.format.toUpperCase();
    let bytes: Uint8Array;
    try {
      bytes = exportBytes(message.format, message.data);
    } catch (error) {
      const text = error instanceof ExportError ? error.message : String(error);
      this.log.error(`graph ${traceName}: export as ${kind} refused: ${text}`);
      void vscode.window.showErrorMessage(`lmscope: cannot export the graph as ${kind}: ${text}.`);
      return;
    }
    const proposed = vscode.Uri.joinPath(trace, '..', exportFileName(message.name, traceName, message.format));
    const target = await vscode.window.showSaveDialog({
      defaultUri: proposed,
      filters: message.format === 'svg' ? {'SVG image': ['svg']} : {'PNG image': ['png']},
      saveLabel: `Export ${kind}`,
      title: `lmscope: export the route of ${traceName} as ${kind}`,
    });
    if (target === undefined) return;
    const shown = target.scheme === 'file' ? target.fsPath : target.toString();
    try {
      await vscode.workspace.fs.writeFile(target, bytes);
    } catch (error) {
      const text = error instanceof Error ? error.message : String(error);
      this.log.error(`graph ${traceName}: writing ${shown} failed: ${text}`);
      void vscode.window.showErrorMessage(`lmscope: could not save ${shown}: ${text}`);
      return;
    }
    this.log.info(`graph ${traceName}: exported ${kind} (${bytes.length} bytes) to ${shown}`);
    void vscode.window.showInformationMessage(`lmscope: saved the route as ${shown}`);
  }
}
