/**
 * Which daemon trace backs a `.lmtrace` file shown in a graph webview, for the drill-downs a
 * file cannot answer (a head's attention and contribution maps, a neuron's tokens, projections
 * the file does not store). Trace Selection remembers the handle of the trace it saved; a file
 * opened otherwise is opened in the daemon (`lmscope/openTrace`) when the daemon runs with a
 * model, and used only when the daemon says it is `live` (its loaded model made it).
 * Nothing here starts the daemon: a graph never does.
 */

import * as vscode from 'vscode';
import {ResponseError} from 'vscode-languageclient/node';
import type {Daemon, DaemonState} from './daemon';
import {ErrorCodes, Methods, type RequestTypes} from '../shared/protocol/types';
import type {DaemonQueries, DaemonQueryMethod} from '../shared/webviewMessages';

export type LiveLink = {readonly live: true; readonly handle: string} | {readonly live: false; readonly reason: string};

/** A query that cannot run: no live daemon trace backs the file (the message says why). */
export class NotLiveError extends Error {}

function modelOf(state: DaemonState): string | null {
  return state.kind === 'ready' || state.kind === 'tracing' ? state.model : null;
}

export class LiveTraces implements vscode.Disposable {
  /** fsPath of a .lmtrace file -> the daemon handle of a live trace of it. */
  private readonly handles = new Map<string, string>();
  private model: string | null;
  private readonly changed = new vscode.EventEmitter<void>();
  /** Fires when the daemon's state changes (a link may have appeared or gone). */
  readonly onDidChange = this.changed.event;
  private readonly listening: vscode.Disposable;

  constructor(
    private readonly daemon: Daemon,
    private readonly log: vscode.LogOutputChannel,
  ) {
    this.model = modelOf(daemon.state);
    this.listening = daemon.onDidChangeState((state) => {
      const model = modelOf(state);
      // Another model (or none, or a restarted daemon): the handles no longer answer.
      if (state.kind === 'stopped' || state.kind === 'error' || state.kind === 'starting' || (model !== null && model !== this.model)) {
        this.handles.clear();
      }
      if (model !== null) this.model = model;
      this.changed.fire();
    });
  }

  /** Trace Selection saved `file` from the daemon's live trace `handle`. */
  remember(file: string, handle: string): void {
    this.handles.set(file, handle);
  }

  /** The live daemon trace of `uri`, or why there is none (for the user). */
  async link(uri: vscode.Uri): Promise<LiveLink> {
    if (!vscode.workspace.isTrusted) return {live: false, reason: 'the lmscope daemon does not run in an untrusted workspace'};
    if (uri.scheme !== 'file') return {live: false, reason: 'the daemon reads local files only'};
    if (!this.daemon.running || modelOf(this.daemon.state) === null) return {live: false, reason: 'the daemon has no model loaded'};
    const known = this.handles.get(uri.fsPath);
    if (known !== undefined) return {live: true, handle: known};
    try {
      const opened = (await this.daemon.request(Methods.openTrace, {path: uri.fsPath})).trace;
      if (opened.live) {
        this.handles.set(uri.fsPath, opened.handle);
        return {live: true, handle: opened.handle};
      }
      await this.daemon.request(Methods.closeTrace, {handle: opened.handle});
      return {live: false, reason: `the loaded model is not the one that made this trace (${opened.model.name}), or the trace was not made in this daemon`};
    } catch (error) {
      const text = error instanceof Error ? error.message : String(error);
      this.log.warn(`no live daemon trace for ${uri.fsPath}: ${text}`);
      return {live: false, reason: text};
    }
  }

  /** Ask the daemon `method` about the live trace of `uri` (NotLiveError when there is none). */
  async query<M extends DaemonQueryMethod>(uri: vscode.Uri, method: M, params: DaemonQueries[M]['params']): Promise<DaemonQueries[M]['result']> {
    for (let attempt = 0; ; attempt++) {
      const link = await this.link(uri);
      if (!link.live) throw new NotLiveError(link.reason);
      const sent = {...params, handle: link.handle} as RequestTypes[M]['params'];
      try {
        return await this.daemon.request(method, sent);
      } catch (error) {
        // The daemon dropped the handle (its cache is bounded, or it restarted): open it again.
        if (attempt === 0 && error instanceof ResponseError && error.code === ErrorCodes.UnknownHandle) {
          this.handles.delete(uri.fsPath);
          continue;
        }
        throw error;
      }
    }
  }

  dispose(): void {
    this.listening.dispose();
    this.changed.dispose();
  }
}
