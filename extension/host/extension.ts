/**
 * lmscope's VS Code extension: activate() wires the log, the daemon client, the status bar,
 * the commands and the `.lmtrace` custom editor. Everything it creates is pushed into
 * context.subscriptions. The daemon never starts in an untrusted workspace; saved traces open
 * anywhere, with no daemon.
 */

import * as vscode from 'vscode';
import {Commands} from './commands';
import {compareWith} from './compare';
import {Daemon} from './daemon';
import {LiveTraces} from './liveTraces';
import {RunViews} from './runView';
import {createStatusBar} from './statusBar';
import {PendingTimings} from './timing';
import {TraceEditorProvider} from './traceEditor';

let running: Daemon | undefined;

export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel('lmscope', {log: true});
  context.subscriptions.push(log);
  const manifest = context.extension.packageJSON as {version?: unknown};
  log.info(`lmscope ${String(manifest.version)} activating (VS Code ${vscode.version})`);

  const daemon = new Daemon(context, log);
  running = daemon;
  context.subscriptions.push(daemon);
  context.subscriptions.push(createStatusBar(daemon.onDidChangeState, daemon.state));
  const live = new LiveTraces(daemon, log);
  context.subscriptions.push(live);
  const timings = new PendingTimings();
  const editors = new TraceEditorProvider(context, log, live, timings);
  context.subscriptions.push(TraceEditorProvider.register(editors));

  const commands = new Commands(daemon, log, live, timings, editors);
  const register = (id: string, run: (...args: unknown[]) => unknown) => context.subscriptions.push(vscode.commands.registerCommand(id, run));
  register('lmscope.traceSelection', () => commands.traceSelection());
  register('lmscope.tracePrompt', (args) => commands.tracePrompt(args));
  register('lmscope.traceSelectionAndGenerate', () => commands.traceSelectionAndGenerate());
  register('lmscope.openTrace', (uri) => commands.openTrace(uri));
  register('lmscope.selectModel', () => commands.selectModel());
  register('lmscope.restartDaemon', () => daemon.restart());
  register('lmscope.showLog', () => log.show());
  register('lmscope.showCommands', () => commands.showCommands());
  register('lmscope.compareWith', (clicked, selected) => compareWith(context, log, clicked, selected));
  const runs = new RunViews(context, daemon, log);
  context.subscriptions.push(runs);
  register('lmscope.openRun', (clicked) => runs.open(clicked));

  context.subscriptions.push(
    vscode.workspace.onDidGrantWorkspaceTrust(() => {
      log.info('workspace trusted: starting the daemon');
      void daemon.start();
    }),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration('lmscope.python')) {
        log.info('lmscope.python changed: restarting the daemon');
        void daemon.restart();
      } else if (event.affectsConfiguration('lmscope.model') || event.affectsConfiguration('lmscope.adapter') || event.affectsConfiguration('lmscope.device') || event.affectsConfiguration('lmscope.deviceMap') || event.affectsConfiguration('lmscope.dtype')) {
        const spec = vscode.workspace.getConfiguration('lmscope').get<string>('model', 'default').trim() || 'default';
        if (daemon.running) void commands.loadModel(spec);
      }
    }),
  );

  if (!vscode.workspace.isTrusted) log.info('workspace not trusted: the daemon stays stopped (saved traces still open)');
  // In an untrusted workspace this only sets the 'untrusted' state (the status bar says why).
  void daemon.start();
}

/** Stop the daemon cleanly (shutdown + exit) before the subscriptions are disposed. */
export function deactivate(): Promise<void> | undefined {
  const daemon = running;
  running = undefined;
  return daemon?.stop();
}
