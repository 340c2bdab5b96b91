/** The status bar item: daemon and model state; a click opens the lmscope commands. */

import * as vscode from 'vscode';
import type {DaemonState} from './daemon';

export function statusText(state: DaemonState): {text: string; tooltip: string; error: boolean} {
  switch (state.kind) {
    case 'untrusted':
      return {
        text: '$(shield) lmscope: untrusted',
        tooltip: 'lmscope: the daemon (a Python process) starts only in a trusted workspace; saved traces still open. Manage Workspace Trust to enable it.',
        error: false,
      };
    case 'stopped':
      return {text: '$(circle-slash) lmscope', tooltip: 'lmscope: daemon stopped', error: false};
    case 'starting':
      return {text: '$(loading~spin) lmscope', tooltip: 'lmscope: starting the daemon', error: false};
    case 'loading': {
      const pct = state.percentage === undefined ? '' : ` ${Math.round(state.percentage)}%`;
      return {text: `$(loading~spin) lmscope${pct}`, tooltip: `lmscope: loading ${state.model ?? 'the model'}${pct}`, error: false};
    }
    case 'ready':
      return {text: `$(pulse) ${state.model ?? 'lmscope: no model'}`, tooltip: `lmscope: ready${state.model ? ` with ${state.model}` : ' (no model loaded)'}`, error: false};
    case 'tracing':
      return {
        text: `$(loading~spin) lmscope: tracing${state.queued > 0 ? ` (+${state.queued})` : ''}`,
        tooltip: `lmscope: tracing with ${state.model ?? 'the model'}`,
        error: false,
      };
    case 'error':
      return {text: '$(error) lmscope', tooltip: `lmscope: ${state.message}`, error: true};
  }
}

export function createStatusBar(onDidChangeState: vscode.Event<DaemonState>, initial: DaemonState): vscode.Disposable {
  const item = vscode.window.createStatusBarItem('lmscope.status', vscode.StatusBarAlignment.Right, 100);
  item.name = 'lmscope';
  item.command = 'lmscope.showCommands';
  const update = (state: DaemonState) => {
    const {text, tooltip, error} = statusText(state);
    item.text = text;
    item.tooltip = tooltip;
    item.backgroundColor = error ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
  };
  update(initial);
  item.show();
  return vscode.Disposable.from(item, onDidChangeState(update));
}
