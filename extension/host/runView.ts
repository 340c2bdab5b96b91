/**
 * The run view (`lmscope.openRun`): a corpus run folder (`lmscope run PROMPTS --out runs/NAME/`)
 * in a webview panel, one per folder: its heads and FFN blocks as a heatmap, the prompts where a
 * clicked one matters most, and a button that opens any of them in the `.lmtrace` editor. The
 * webview (extension/webview/runView.ts, bundled as dist/runView.js in the same CSP shell as the
 * graph) asks for each view of the run; the host forwards it to the daemon as `lmscope/run`,
 * which reads the run's tables (no model needed, no re-tracing).
 *
 * It also keeps the daemon's active run (`lmscope/setActiveRun`), the run that hover cards of
 * heads and FFN blocks cite: the run view focused last, else the `lmscope.run` setting; sent
 * again whenever the daemon (re)starts.
 */

import * as vscode from 'vscode';
import type {Daemon, DaemonState} from './daemon';
import {Methods, type RunParams} from '../shared/protocol/types';
import {isRunViewToHost, traceSegments, type HostToRunView, type RunQuery} from '../shared/runMessages';
import {TRACE_VIEW_TYPE} from './traceEditor';
import {makeNonce, shellHtml} from './webviewHtml';

export const RUN_VIEW_TYPE = 'lmscope.run';
const RUN_JSON = 'run.json';

/** Shown when the webview shell cannot be built (a fixed page: no data, no script). */
const FAILED_HTML = `<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="default-src 'none'"></head>
<body><p>lmscope could not show this run: see "lmscope: Show Log".</p></body></html>`;

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The run folder of what the command was given: a folder, or its run.json. */
export function runFolderOf(uri: vscode.Uri): vscode.Uri {
  return uri.path.endsWith(`/${RUN_JSON}`) ? vscode.Uri.joinPath(uri, '..') : uri;
}

/** A daemon that can take requests now (started, not stopping or failed). */
function serving(state: DaemonState): boolean {
  return state.kind === 'ready' || state.kind === 'loading' || state.kind === 'tracing';
}

export class RunViews implements vscode.Disposable {
  /** The open run views, by folder fsPath. */
  private readonly panels = new Map<string, vscode.WebviewPanel>();
  /** The folder of the run view focused last (null: none since start, or it was closed). */
  private focused: string | null = null;
  /** The active run the daemon was last told (undefined: not told since it started). */
  private told: string | null | undefined = undefined;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly daemon: Daemon,
    private readonly log: vscode.LogOutputChannel,
  ) {
    this.disposables.push(
      daemon.onDidChangeState((state) => {
        if (!serving(state)) this.told = undefined; // a restarted daemon knows no run
        else void this.syncActiveRun();
      }),
      vscode.workspace.onDidChangeConfiguration((event) => {
        if (event.affectsConfiguration('lmscope.run')) void this.syncActiveRun();
      }),
    );
  }

  /** The `lmscope.run` setting as an absolute folder (relative: to the first workspace folder). */
  private configuredRun(): string | null {
    const value = vscode.workspace.getConfiguration('lmscope').get<string>('run', '').trim();
    if (value === '') return null;
    const base = vscode.workspace.workspaceFolders?.[0]?.uri;
    const absolute = value.startsWith('/') || /^[A-Za-z]:[\\/]/.test(value) || base === undefined ? vscode.Uri.file(value) : vscode.Uri.joinPath(base, value);
    return runFolderOf(absolute).fsPath;
  }

  /** Tell the daemon which run cards cite, when it changed and the daemon runs (never starts it). */
  private async syncActiveRun(): Promise<void> {
    const wanted = this.focused ?? this.configuredRun();
    if (!this.daemon.running || !serving(this.daemon.state) || wanted === this.told) return;
    this.told = wanted;
    try {
      const answer = await this.daemon.request(Methods.setActiveRun, {path: wanted});
      this.log.info(answer.run === null ? 'hover cards cite no run' : `hover cards cite run ${answer.run.name} (${answer.run.path})`);
    } catch (error) {
      this.told = undefined;
      this.log.warn(`hover cards cannot cite run ${wanted ?? ''}: ${message(error)}`);
    }
  }

  /** Run `lmscope.openRun`: `clicked` is the Explorer's (or editor title's) run.json or folder;
   * from the palette, the run.json in the active editor, else ask for a folder. */
  async open(clicked?: unknown): Promise<void> {
    const editing = vscode.window.activeTextEditor?.document.uri;
    const given = clicked instanceof vscode.Uri ? clicked : editing?.path.endsWith(`/${RUN_JSON}`) ? editing : undefined;
    let folder = given === undefined ? undefined : runFolderOf(given);
    if (folder === undefined) {
      const chosen = await vscode.window.showOpenDialog({canSelectFiles: false, canSelectFolders: true, canSelectMany: false, openLabel: 'Open Run', title: 'lmscope: a run folder (lmscope run … --out runs/NAME/)'});
      if (chosen?.[0] === undefined) return;
      folder = chosen[0];
    }
    if (folder.scheme !== 'file') {
      void vscode.window.showErrorMessage('lmscope: the daemon reads local run folders only.');
      return;
    }
    const key = folder.fsPath;
    const existing = this.panels.get(key);
    if (existing !== undefined) {
      existing.reveal();
      return;
    }
    this.show(folder);
  }

  private show(folder: vscode.Uri): void {
    const key = folder.fsPath;
    const name = folder.path.split('/').filter((s) => s !== '').pop() ?? 'run';
    const dist = vscode.Uri.joinPath(this.context.extensionUri, 'dist');
    const panel = vscode.window.createWebviewPanel(RUN_VIEW_TYPE, `Run ${name}`, vscode.ViewColumn.Active, {enableScripts: true, localResourceRoots: [dist]});
    const webview = panel.webview;
    try {
      webview.html = shellHtml({
        cspSource: webview.cspSource,
        scriptUri: webview.asWebviewUri(vscode.Uri.joinPath(dist, 'runView.js')).toString(),
        styleUri: webview.asWebviewUri(vscode.Uri.joinPath(dist, 'runView.css')).toString(),
        nonce: makeNonce(),
      });
    } catch (error) {
      this.log.error(`cannot show run ${key}: ${message(error)}`);
      webview.options = {enableScripts: false, localResourceRoots: []};
      webview.html = FAILED_HTML;
      return;
    }
    this.panels.set(key, panel);
    const post = (sent: HostToRunView) => void webview.postMessage(sent);
    const answer = async (id: number, query: RunQuery) => {
      const params: RunParams = {path: key, stat: query.stat, threshold: query.threshold};
      if (query.tag !== null) params.tag = query.tag;
      if (query.component !== null) params.component = query.component;
      try {
        post({type: 'run', id, result: await this.daemon.request(Methods.run, params)});
      } catch (error) {
        post({type: 'runError', id, message: message(error)});
      }
    };
    const subscriptions = [
      webview.onDidReceiveMessage((received: unknown) => {
        if (!isRunViewToHost(received)) {
          this.log.warn('ignored a malformed message from the run view');
          return;
        }
        switch (received.type) {
          case 'ready':
            break; // its first query follows
          case 'query':
            void answer(received.id, received.query);
            break;
          case 'openTrace':
            void this.openTrace(folder, received.trace);
            break;
          case 'error':
            this.log.error(`run view (${name}): ${received.message}`);
            break;
        }
      }),
      panel.onDidChangeViewState(() => {
        if (panel.active && this.focused !== key) {
          this.focused = key;
          void this.syncActiveRun();
        }
      }),
    ];
    this.focused = key;
    void this.syncActiveRun();
    panel.onDidDispose(() => {
      this.panels.delete(key);
      if (this.focused === key) {
        this.focused = null;
        void this.syncActiveRun();
      }
      for (const s of subscriptions) s.dispose();
    });
  }

  /** Open one prompt's trace of the run beside the view, in lmscope's trace editor. */
  private async openTrace(folder: vscode.Uri, relative: string): Promise<void> {
    const segments = traceSegments(relative);
    if (segments === null) {
      this.log.warn(`run view: refused to open ${JSON.stringify(relative)}: not a .lmtrace file inside the run folder`);
      return;
    }
    const trace = vscode.Uri.joinPath(folder, ...segments);
    try {
      await vscode.workspace.fs.stat(trace);
    } catch {
      void vscode.window.showErrorMessage(`lmscope: ${relative} is missing from the run folder ${folder.fsPath}.`);
      return;
    }
    await vscode.commands.executeCommand('vscode.openWith', trace, TRACE_VIEW_TYPE, vscode.ViewColumn.Beside);
  }

  dispose(): void {
    for (const panel of this.panels.values()) panel.dispose();
    for (const d of this.disposables) d.dispose();
  }
}
