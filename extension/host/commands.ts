/**
 * The lmscope commands: Trace Selection / Trace Prompt (CodeLens), Open Trace, Select Model,
 * and the status bar's quick pick. Restart Daemon and Show Log are one-liners in extension.ts.
 */

import os from 'node:os';
import path from 'node:path';
import * as vscode from 'vscode';
import {ResponseError} from 'vscode-languageclient/node';
import type {Daemon, ProgressValue} from './daemon';
import type {LiveTraces} from './liveTraces';
import {DEFAULTS, ErrorCodes, Methods, type ChatMessage, type LoadModelParams} from '../shared/protocol/types';
import {tracePath, tracesDir} from './paths';
import {adapterSetting, deviceMapSetting, generateTokensSetting, MAX_GENERATE, parseGenerateCount} from './settings';
import {TRACE_VIEW_TYPE, traceFileKey, type TraceEditorProvider} from './traceEditor';
import {TraceTiming, type PendingTimings} from './timing';
import {OPENING_MESSAGE, tracingMessage, waitingMessage} from './traceProgress';

/** The argument the daemon's "Trace" CodeLens passes; a `*.chat.jsonl` lens adds `messages`. */
export interface TracePromptArgs {
  readonly uri: string;
  readonly line: number;
  readonly prompt: string;
  readonly messages?: readonly [ChatMessage, ...ChatMessage[]];
}

function isTracePromptArgs(value: unknown): value is TracePromptArgs {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  const messages = v['messages'];
  // The daemon checks roles and contents again; here only the shape a request needs.
  const chat = messages === undefined || (Array.isArray(messages) && messages.length > 0 && messages.every((m) => typeof m === 'object' && m !== null && typeof (m as Record<string, unknown>)['role'] === 'string' && typeof (m as Record<string, unknown>)['content'] === 'string'));
  return typeof v['uri'] === 'string' && typeof v['line'] === 'number' && typeof v['prompt'] === 'string' && chat;
}

/** What a trace request traces: text, or a conversation through the model's chat template. */
type TraceSource = {readonly prompt: string} | {readonly messages: readonly [ChatMessage, ...ChatMessage[]]};

/** The text a source is shown and named by (a conversation: one `role: content` line each). */
function sourceText(source: TraceSource): string {
  return 'prompt' in source ? source.prompt : source.messages.map((m) => `${m.role}: ${m.content}`).join('\n');
}

/** The longest Trace Selection keeps its notification up for a graph to be painted. */
const GRAPH_WAIT_MS = 20_000;

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export class Commands {
  constructor(
    private readonly daemon: Daemon,
    private readonly log: vscode.LogOutputChannel,
    private readonly live: LiveTraces,
    private readonly timings: PendingTimings,
    private readonly editors: TraceEditorProvider,
  ) {}

  /** Trace the selection, or the current line when nothing is selected; `generate` tokens are
   * generated first (default: the lmscope.generateTokens setting). */
  async traceSelection(generate?: number): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (editor === undefined) {
      void vscode.window.showInformationMessage('lmscope: open a file and select the prompt to trace.');
      return;
    }
    const selection = editor.selection;
    const text = selection.isEmpty ? editor.document.lineAt(selection.active.line).text : editor.document.getText(selection);
    await this.trace({prompt: text}, editor.document.uri, editor.viewColumn, generate ?? this.generateSetting());
  }

  /** "Trace Selection and Generate…": ask how many tokens to generate, then trace. */
  async traceSelectionAndGenerate(): Promise<void> {
    const answer = await vscode.window.showInputBox({
      title: 'lmscope: Trace Selection and Generate',
      prompt: `Tokens to generate after the selection before tracing (1..${MAX_GENERATE}; greedy)`,
      value: String(Math.max(1, this.generateSetting())),
      validateInput: (text) => {
        const parsed = parseGenerateCount(text);
        return typeof parsed === 'string' ? parsed : parsed === 0 ? 'give at least 1 (or use Trace Selection)' : null;
      },
    });
    if (answer === undefined) return;
    const count = parseGenerateCount(answer);
    if (typeof count === 'number') await this.traceSelection(count);
  }

  private generateSetting(): number {
    return generateTokensSetting(vscode.workspace.getConfiguration('lmscope').get<number>('generateTokens'));
  }

  /** The CodeLens command: `{uri, line, prompt}` from the daemon. */
  async tracePrompt(args: unknown): Promise<void> {
    if (!isTracePromptArgs(args)) {
      await this.traceSelection();
      return;
    }
    const uri = vscode.Uri.parse(args.uri);
    const column = vscode.window.visibleTextEditors.find((e) => e.document.uri.toString() === uri.toString())?.viewColumn;
    const source: TraceSource = args.messages !== undefined ? {messages: args.messages} : {prompt: args.prompt};
    await this.trace(source, uri, column, this.generateSetting());
  }

  private async trace(what: TraceSource, source: vscode.Uri, column: vscode.ViewColumn | undefined, generate: number): Promise<void> {
    const prompt = sourceText(what);
    if (prompt.trim().length === 0) {
      void vscode.window.showInformationMessage('lmscope: nothing to trace: select a prompt or put the cursor on a line with text.');
      return;
    }
    const short = prompt.length > 40 ? `${prompt.slice(0, 39)}…` : prompt;
    const timing = new TraceTiming(JSON.stringify(short), this.log);
    let dir: string;
    try {
      dir = await this.tracesFolderFor(source);
    } catch (error) {
      void vscode.window.showErrorMessage(`lmscope: cannot create the traces folder: ${errorText(error)}`);
      return;
    }
    timing.mark('traces folder');
    try {
      const outcome = await vscode.window.withProgress(
        {location: vscode.ProgressLocation.Notification, title: `lmscope: tracing “${short.replace(/\s+/g, ' ')}”`, cancellable: true},
        async (progress, token) => {
          await this.waitForModel(progress, token);
          timing.mark('model ready');
          // The file is named after the model that traces it (paths.ts), known once it is loaded.
          // A generation is another trace of the same prompt: its count is part of the file's key.
          const savePath = tracePath(dir, generate > 0 ? `${prompt} +${generate}` : prompt, this.modelName());
          this.log.info(`tracing ${JSON.stringify(prompt)} -> ${savePath}`);
          progress.report({message: this.daemon.state.kind === 'tracing' ? 'waiting for the trace before this one…' : 'tracing…'});
          let last = 0;
          let first = true;
          const onProgress = (value: ProgressValue) => {
            if (first) {
              first = false;
              timing.mark('daemon started the trace');
            }
            if (value.kind === 'end') timing.mark('daemon done');
            const pct = value.kind === 'end' ? 100 : value.percentage;
            const report: {message?: string; increment?: number} = {
              message: value.kind === 'end' ? OPENING_MESSAGE : tracingMessage(value.message),
            };
            if (pct !== undefined && pct > last) {
              report.increment = pct - last;
              last = pct;
            }
            progress.report(report);
          };
          timing.mark('request sent');
          const params = {...('prompt' in what ? {prompt: what.prompt} : {messages: [...what.messages] as [ChatMessage, ...ChatMessage[]]}), savePath, ...(generate > 0 ? {generate} : {})};
          const result = await this.daemon.request(Methods.trace, params, token, onProgress);
          timing.mark('result received');
          const saved = result.saved ? (result.trace.path ?? savePath) : null;
          this.log.info(`trace ${result.trace.handle}: ${result.trace.tokens.length} tokens${saved ? `, saved to ${saved}` : ''}`);
          if (saved === null) return 'not saved';
          progress.report({message: OPENING_MESSAGE});
          await this.open(vscode.Uri.file(saved), result.trace.handle, timing, column, token);
          return 'shown';
        },
      );
      if (outcome === 'not saved') void vscode.window.showWarningMessage('lmscope: the trace finished but was not saved; nothing to show.');
    } catch (error) {
      if ((error instanceof ResponseError && error.code === ErrorCodes.RequestCancelled) || error instanceof vscode.CancellationError) {
        this.log.info('trace cancelled');
        return;
      }
      this.log.error(`trace failed: ${errorText(error)}`);
      const pick = await vscode.window.showErrorMessage(`lmscope: ${errorText(error)}`, 'Show Log', 'Select Model');
      if (pick === 'Show Log') this.log.show();
      else if (pick === 'Select Model') await this.selectModel();
    }
  }

  /** Wait until the daemon runs with a model, the notification saying what is in the way
   * (starting the daemon, loading the model, an earlier trace) as it changes. */
  private async waitForModel(progress: vscode.Progress<{message?: string}>, token: vscode.CancellationToken): Promise<void> {
    const say = () => {
      const message = waitingMessage(this.daemon.state, this.daemon.running);
      if (message !== null) progress.report({message});
    };
    say();
    const listening = this.daemon.onDidChangeState(say);
    try {
      await this.daemon.modelReady(token);
    } finally {
      listening.dispose();
    }
  }

  /** The loaded model's name (for the trace's file name). */
  private modelName(): string {
    const state = this.daemon.state;
    const name = state.kind === 'ready' || state.kind === 'tracing' ? state.model : null;
    return name ?? this.daemon.modelSpec ?? 'model';
  }

  /**
   * Show the saved trace `file` beside the prompt: a graph already showing it (the same prompt
   * traced again replaced the file) reloads at once, else its editor opens. Resolves once the
   * graph is painted, or cannot be, or after GRAPH_WAIT_MS, so the notification closes with
   * the graph on screen.
   */
  private async open(file: vscode.Uri, handle: string, timing: TraceTiming, column: vscode.ViewColumn | undefined, token: vscode.CancellationToken): Promise<void> {
    const key = traceFileKey(file);
    this.live.remember(key, handle);
    const painted = this.timings.expect(key, timing);
    if (this.editors.reload(key)) timing.mark('reload posted');
    await vscode.commands.executeCommand('vscode.openWith', file, TRACE_VIEW_TYPE, {
      viewColumn: column === undefined ? vscode.ViewColumn.Beside : column + 1,
      preserveFocus: true,
    });
    this.timings.mark(key, 'openWith');
    let timer: NodeJS.Timeout | undefined;
    let cancelled: vscode.Disposable | undefined;
    const giveUp = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), GRAPH_WAIT_MS);
      cancelled = token.onCancellationRequested(() => resolve(false));
    });
    try {
      if (!(await Promise.race([painted, giveUp]))) this.log.info(`the graph of ${key} was not painted: its timing is not logged`);
    } finally {
      clearTimeout(timer);
      cancelled?.dispose();
    }
  }

  /** `<folder of the file>/<lmscope.tracesFolder>`, created. */
  private async tracesFolderFor(source: vscode.Uri): Promise<string> {
    const setting = vscode.workspace.getConfiguration('lmscope', source).get<string>('tracesFolder', 'traces');
    let dir = tracesDir(source.scheme === 'file' ? source.fsPath : null, setting);
    if (dir === null) {
      const folder = vscode.workspace.workspaceFolders?.find((f) => f.uri.scheme === 'file');
      dir = folder ? tracesDir(path.join(folder.uri.fsPath, 'untitled'), setting) : path.join(os.tmpdir(), 'lmscope-traces');
    }
    const target = dir ?? path.join(os.tmpdir(), 'lmscope-traces');
    await vscode.workspace.fs.createDirectory(vscode.Uri.file(target));
    return target;
  }

  async openTrace(uri?: unknown): Promise<void> {
    let target = uri instanceof vscode.Uri ? uri : undefined;
    if (target === undefined) {
      const picked = await vscode.window.showOpenDialog({
        canSelectMany: false,
        filters: {'lmscope traces': ['lmtrace']},
        openLabel: 'Open Trace',
      });
      target = picked?.[0];
    }
    if (target === undefined) return;
    await vscode.commands.executeCommand('vscode.openWith', target, TRACE_VIEW_TYPE);
  }

  async selectModel(): Promise<void> {
    type Item = vscode.QuickPickItem & {readonly action: 'default' | 'hub' | 'folder' | 'gguf'};
    const items: Item[] = [
      {label: '$(package) default', description: 'the embedded model', action: 'default'},
      {label: '$(cloud-download) Hugging Face hub id…', description: 'e.g. gpt2', action: 'hub'},
      {label: '$(folder) Local folder…', description: 'a saved transformers model', action: 'folder'},
      {label: '$(file-binary) GGUF file…', description: 'a .gguf file', action: 'gguf'},
    ];
    const current = this.daemon.modelSpec;
    const pick = await vscode.window.showQuickPick(items, {
      title: 'lmscope: Select Model',
      placeHolder: current ? `Now: ${current}` : 'Model to load',
    });
    if (pick === undefined) return;
    let spec: string | undefined;
    switch (pick.action) {
      case 'default':
        spec = 'default';
        break;
      case 'hub':
        spec = (
          await vscode.window.showInputBox({
            title: 'Hugging Face hub id',
            placeHolder: 'owner/name',
            validateInput: (v) => (v.trim().length === 0 ? 'Enter a model id' : null),
          })
        )?.trim();
        break;
      case 'folder':
        spec = (await vscode.window.showOpenDialog({canSelectFolders: true, canSelectFiles: false, openLabel: 'Load Model'}))?.[0]?.fsPath;
        break;
      case 'gguf':
        spec = (await vscode.window.showOpenDialog({canSelectMany: false, filters: {GGUF: ['gguf']}, openLabel: 'Load Model'}))?.[0]?.fsPath;
        break;
    }
    if (!spec) return;
    await this.loadModel(spec);
  }

  async loadModel(spec: string): Promise<void> {
    const config = vscode.workspace.getConfiguration('lmscope');
    const device = config.get<string>('device', DEFAULTS.DeviceRequest).trim();
    const dtype = config.get<string>('dtype', '');
    const deviceMap = deviceMapSetting(config.get<string>('deviceMap', ''));
    const adapter = adapterSetting(config.get<string>('adapter', ''));
    this.daemon.modelSpec = spec;
    try {
      const result = await vscode.window.withProgress(
        {location: vscode.ProgressLocation.Notification, title: `lmscope: loading ${spec}`, cancellable: false},
        async (progress) => {
          let last = 0;
          const params: LoadModelParams = {spec};
          if (device) params.device = device;
          if (deviceMap) params.deviceMap = deviceMap;
          if (adapter) params.adapter = adapter;
          if (dtype === 'float32' || dtype === 'float16' || dtype === 'bfloat16') params.dtype = dtype;
          return this.daemon.request(Methods.loadModel, params, undefined, (value) => {
            const pct = value.kind === 'end' ? 100 : value.percentage;
            if (pct !== undefined && pct > last) {
              progress.report({increment: pct - last, ...(value.message ? {message: value.message} : {})});
              last = pct;
            }
          });
        },
      );
      this.log.info(`model loaded: ${result.model.name}`);
      void vscode.window.showInformationMessage(`lmscope: ${result.model.name} is loaded.`);
    } catch (error) {
      this.log.error(`loading ${spec} failed: ${errorText(error)}`);
      const pick = await vscode.window.showErrorMessage(`lmscope: ${errorText(error)}`, 'Show Log');
      if (pick) this.log.show();
    }
  }

  async showCommands(): Promise<void> {
    const items: (vscode.QuickPickItem & {command: string})[] = [
      {label: '$(debug-start) Trace Selection', command: 'lmscope.traceSelection'},
      {label: '$(go-to-file) Open Trace…', command: 'lmscope.openTrace'},
      {label: '$(package) Select Model…', command: 'lmscope.selectModel'},
      {label: '$(debug-restart) Restart Daemon', command: 'lmscope.restartDaemon'},
      {label: '$(output) Show Log', command: 'lmscope.showLog'},
    ];
    const pick = await vscode.window.showQuickPick(items, {title: 'lmscope'});
    if (pick) await vscode.commands.executeCommand(pick.command);
  }
}
