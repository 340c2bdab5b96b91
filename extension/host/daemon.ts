/**
 * The lmscope daemon's lifecycle: find the interpreter (interpreter.ts), check that it has
 * lmscope, start `python -m lmscope serve --stdio` under a vscode-languageclient LanguageClient,
 * restart it with backoff when it crashes (telling the user what was lost and reloading the
 * model: recovery.ts), and forward its notifications (model and trace state) to listeners.
 * Starts, stops and restarts are serialised through one promise chain.
 */

import * as vscode from 'vscode';
import {
  CloseAction,
  ErrorAction,
  LanguageClient,
  ResponseError,
  State,
  TransportKind,
  WorkDoneProgress,
  type LanguageClientOptions,
  type ServerOptions,
  type WorkDoneProgressBegin,
  type WorkDoneProgressEnd,
  type WorkDoneProgressReport,
} from 'vscode-languageclient/node';
import {
  DEFAULTS,
  Methods,
  PROTOCOL_VERSION,
  type InitializationOptions,
  type ModelChangedParams,
  type NotificationTypes,
  type RequestTypes,
  type TraceChangedParams,
} from '../shared/protocol/types';
import {configuredInterpreter, showInstallHelp} from './interpreter';
import {daemonArgs, probeLmscope} from './python';
import {Recovery, describeWork, lostRequestMessage} from './recovery';
import {adapterSetting, deviceMapSetting} from './settings';

export type DaemonState =
  | {readonly kind: 'untrusted'}
  | {readonly kind: 'stopped'}
  | {readonly kind: 'starting'}
  | {readonly kind: 'loading'; readonly percentage?: number; readonly model?: string}
  | {readonly kind: 'ready'; readonly model: string | null}
  | {readonly kind: 'tracing'; readonly model: string | null; readonly queued: number}
  | {readonly kind: 'error'; readonly message: string};

export type ProgressValue = WorkDoneProgressBegin | WorkDoneProgressReport | WorkDoneProgressEnd;

export class Daemon implements vscode.Disposable {
  private client: LanguageClient | null = null;
  private chain: Promise<unknown> = Promise.resolve();
  private stopping = false;
  private readonly recovery: Recovery;
  private restartTimer: NodeJS.Timeout | undefined;
  private progressSeq = 0;
  private modelName: string | null = null;
  /** The model spec the daemon was last asked to load. */
  modelSpec: string | null = null;
  private readonly stateEmitter = new vscode.EventEmitter<DaemonState>();
  readonly onDidChangeState = this.stateEmitter.event;
  private current: DaemonState = {kind: 'stopped'};

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly log: vscode.LogOutputChannel,
  ) {
    const onPick = (pick: string | undefined) => {
      if (pick === 'Restart Daemon') void this.restart();
      else if (pick === 'Show Log') this.log.show();
    };
    this.recovery = new Recovery({
      warn: (message) => void vscode.window.showWarningMessage(message, 'Show Log').then(onPick),
      error: (message) => void vscode.window.showErrorMessage(message, 'Restart Daemon', 'Show Log').then(onPick),
      info: (message) => void vscode.window.showInformationMessage(message),
      schedule: (task, ms) => {
        clearTimeout(this.restartTimer);
        this.restartTimer = setTimeout(task, ms);
      },
      restart: () => this.start(),
      now: () => Date.now(),
    });
  }

  get state(): DaemonState {
    return this.current;
  }

  get running(): boolean {
    return this.client !== null && this.client.state === State.Running;
  }

  private setState(state: DaemonState): void {
    this.current = state;
    this.stateEmitter.fire(state);
  }

  /** Start unless running (no-op when the workspace is untrusted). */
  start(): Promise<void> {
    return this.serialise(() => this.doStart());
  }

  stop(): Promise<void> {
    return this.serialise(() => this.doStop());
  }

  restart(): Promise<void> {
    this.recovery.reset();
    return this.serialise(async () => {
      await this.doStop();
      await this.doStart();
    });
  }

  /** The running client, started on demand; throws a user-facing Error when it cannot run. */
  async ready(): Promise<LanguageClient> {
    if (!vscode.workspace.isTrusted) {
      throw new Error('lmscope runs its Python daemon only in trusted workspaces (Manage Workspace Trust to enable it).');
    }
    if (!this.running) await this.start();
    if (this.client === null || !this.running) {
      throw new Error(this.current.kind === 'error' ? this.current.message : 'the lmscope daemon is not running (see Show Log)');
    }
    return this.client;
  }

  /**
   * Resolves once the daemon has a model loaded (waiting while it starts or loads); rejects with
   * the load's error, or with vscode.CancellationError when `token` is cancelled. Requests that
   * need the model wait here rather than race the load the daemon starts at `initialized`.
   */
  async modelReady(token?: vscode.CancellationToken): Promise<void> {
    await this.ready();
    for (;;) {
      const s = this.current;
      if ((s.kind === 'ready' || s.kind === 'tracing') && s.model !== null) return;
      if (s.kind === 'ready') throw new Error('no model is loaded: choose one with "lmscope: Select Model"');
      if (s.kind === 'error') throw new Error(s.message);
      if (s.kind === 'stopped' || s.kind === 'untrusted') throw new Error('the lmscope daemon is not running (see Show Log)');
      await this.nextState(token);
    }
  }

  private nextState(token?: vscode.CancellationToken): Promise<void> {
    return new Promise((resolve, reject) => {
      const listeners: vscode.Disposable[] = [];
      const settle = (then: () => void) => {
        for (const d of listeners) d.dispose();
        then();
      };
      listeners.push(this.onDidChangeState(() => settle(resolve)));
      if (token !== undefined) {
        if (token.isCancellationRequested) return settle(() => reject(new vscode.CancellationError()));
        listeners.push(token.onCancellationRequested(() => settle(() => reject(new vscode.CancellationError()))));
      }
    });
  }

  /** A typed lmscope request; `onProgress` receives `$/progress` for a fresh workDoneToken. */
  async request<M extends keyof RequestTypes>(
    method: M,
    params: RequestTypes[M]['params'],
    token?: vscode.CancellationToken,
    onProgress?: (value: ProgressValue) => void,
  ): Promise<RequestTypes[M]['result']> {
    const client = await this.ready();
    let listening: vscode.Disposable | undefined;
    const work = describeWork(method, params);
    const tracked = work === null ? null : this.recovery.inFlight.begin(work);
    let lost = false;
    let sent: RequestTypes[M]['params'] = params;
    if (onProgress !== undefined) {
      const workDoneToken = `lmscope-${process.pid}-${++this.progressSeq}`;
      listening = client.onProgress(WorkDoneProgress.type, workDoneToken, onProgress);
      sent = {...params, workDoneToken};
    }
    try {
      // An `undefined` token would travel as a second param (the params become an array).
      type Result = RequestTypes[M]['result'];
      return await (token === undefined ? client.sendRequest<Result>(method, sent) : client.sendRequest<Result>(method, sent, token));
    } catch (error) {
      // No answer from the daemon and its client gone: the daemon died with this request.
      lost = !(error instanceof ResponseError) && this.client !== client;
      if (lost && work !== null) throw new Error(lostRequestMessage(work));
      throw error;
    } finally {
      listening?.dispose();
      if (tracked !== null) this.recovery.inFlight.end(tracked, lost);
    }
  }

  dispose(): void {
    clearTimeout(this.restartTimer);
    void this.stop();
    this.stateEmitter.dispose();
  }

  private serialise<T>(work: () => Promise<T>): Promise<T> {
    const next = this.chain.then(work, work);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async doStart(): Promise<void> {
    clearTimeout(this.restartTimer);
    if (!vscode.workspace.isTrusted) {
      this.setState({kind: 'untrusted'});
      this.log.info('Workspace not trusted: the daemon will start once it is.');
      return;
    }
    if (this.running) return;
    this.setState({kind: 'starting'});
    const interpreter = await configuredInterpreter();
    const where = [interpreter.command, ...interpreter.args].join(' ');
    this.log.info(`Python interpreter (${interpreter.source}): ${where}`);
    const probe = await probeLmscope(interpreter);
    if (!probe.ok) {
      this.log.error(probe.detail);
      this.setState({kind: 'error', message: probe.message});
      void showInstallHelp(probe.message, interpreter, this.context);
      return;
    }
    this.log.info(`lmscope ${probe.version} found; starting the daemon`);

    const config = vscode.workspace.getConfiguration('lmscope');
    // After a crash or a restart, the model last asked for (Select Model included) comes back.
    const model = this.modelSpec ?? (config.get<string>('model', 'default').trim() || 'default');
    const initializationOptions: InitializationOptions = {protocolVersion: PROTOCOL_VERSION, model};
    const device = config.get<string>('device', DEFAULTS.DeviceRequest).trim();
    if (device) initializationOptions.device = device;
    const deviceMap = deviceMapSetting(config.get<string>('deviceMap', ''));
    if (deviceMap) initializationOptions.deviceMap = deviceMap;
    const adapter = adapterSetting(config.get<string>('adapter', ''));
    if (adapter) initializationOptions.adapter = adapter;
    const dtype = config.get<string>('dtype', '');
    if (dtype === 'float32' || dtype === 'float16' || dtype === 'bfloat16') initializationOptions.dtype = dtype;
    this.modelSpec = model;

    const serverOptions: ServerOptions = {
      command: interpreter.command,
      args: daemonArgs(interpreter),
      transport: TransportKind.stdio,
      options: {env: {...process.env, PYTHONUNBUFFERED: '1'}},
    };
    const clientOptions: LanguageClientOptions = {
      // Hover cards on component references in any file; CodeLens (the daemon answers it for
      // prompt files only) and document ranges for traces.
      documentSelector: [{scheme: 'file'}, {scheme: 'untitled'}],
      outputChannel: this.log,
      initializationOptions,
      initializationFailedHandler: (error) => {
        const text = error instanceof Error ? error.message : String(error);
        this.log.error(`initialize failed: ${text}`);
        this.setState({kind: 'error', message: `lmscope daemon refused to start: ${text}`});
        void vscode.window.showErrorMessage(`lmscope: the daemon refused to start: ${text}`, 'Show Log').then((pick) => {
          if (pick) this.log.show();
        });
        return false;
      },
      errorHandler: {
        error: () => ({action: ErrorAction.Continue, handled: true}),
        closed: () => {
          if (!this.stopping) this.crashed();
          return {action: CloseAction.DoNotRestart, handled: true};
        },
      },
      markdown: {isTrusted: {enabledCommands: ['lmscope.traceSelection', 'lmscope.tracePrompt', 'lmscope.openTrace']}},
    };
    const client = new LanguageClient('lmscope', 'lmscope daemon', serverOptions, clientOptions);
    this.client = client;
    client.onNotification(Methods.modelChanged, (params: NotificationTypes['lmscope/modelChanged']) => this.modelChanged(params));
    client.onNotification(Methods.traceChanged, (params: NotificationTypes['lmscope/traceChanged']) => this.traceChanged(params));
    try {
      await client.start();
    } catch (error) {
      this.client = null;
      const text = error instanceof Error ? error.message : String(error);
      this.log.error(`the daemon failed to start: ${text}`);
      if (this.current.kind !== 'error') this.setState({kind: 'error', message: `lmscope daemon failed to start: ${text}`});
      return;
    }
    this.log.info('daemon running');
    if (this.current.kind === 'starting') this.setState({kind: 'loading', model});
    try {
      // The model load starts at `initialized`; status says where it is (later changes arrive
      // as lmscope/modelChanged, after this answer).
      const status = await client.sendRequest<RequestTypes[typeof Methods.status]['result']>(Methods.status, {});
      this.log.info(`daemon ${status.version} (protocol ${status.protocolVersion}): ${status.state}, model ${status.model?.name ?? 'none'}`);
      if (this.current.kind === 'loading' && status.state !== 'loading' && status.model !== null) {
        this.modelName = status.model.name;
        this.setState({kind: 'ready', model: status.model.name});
      }
    } catch (error) {
      this.log.warn(`lmscope/status failed: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  private async doStop(): Promise<void> {
    clearTimeout(this.restartTimer);
    const client = this.client;
    this.client = null;
    if (client === null) return;
    this.stopping = true;
    try {
      if (client.state !== State.Stopped) await client.stop(5000);
    } catch (error) {
      this.log.warn(`stopping the daemon: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      this.stopping = false;
      await client.dispose().catch(() => undefined);
      this.setState(vscode.workspace.isTrusted ? {kind: 'stopped'} : {kind: 'untrusted'});
    }
  }

  private crashed(): void {
    // The crashed client stops itself (CloseAction.DoNotRestart); disposing it here would try to
    // send `shutdown` over the closed pipe. A fresh client is made on restart.
    this.client = null;
    const {delay, message} = this.recovery.crashed(this.modelSpec);
    if (delay === null) {
      this.log.error(message);
      this.setState({kind: 'error', message});
    } else {
      this.log.warn(message);
      this.setState({kind: 'error', message: `daemon crashed; restarting in ${Math.round(delay / 1000)} s`});
    }
  }

  private modelChanged(params: ModelChangedParams): void {
    this.modelName = params.model?.name ?? null;
    switch (params.state) {
      case 'loading': {
        const state: {kind: 'loading'; percentage?: number; model?: string} = {kind: 'loading'};
        if (params.percentage !== undefined) state.percentage = params.percentage;
        if (this.modelSpec !== null) state.model = this.modelSpec;
        this.setState(state);
        break;
      }
      case 'ready':
        this.log.info(`model ready: ${this.modelName ?? '?'}`);
        this.recovery.modelReady(this.modelName ?? this.modelSpec ?? 'the model');
        this.setState({kind: 'ready', model: this.modelName});
        break;
      case 'none':
        this.setState({kind: 'ready', model: null});
        break;
      case 'error': {
        const message = params.message ?? 'the model failed to load (see Show Log)';
        this.log.error(`model error: ${message}`);
        // A load the daemon refused before letting go of the loaded model leaves that model
        // loaded and working (the request that asked for the load reports the error itself).
        this.setState(params.model ? {kind: 'ready', model: this.modelName} : {kind: 'error', message});
        break;
      }
    }
  }

  private traceChanged(params: TraceChangedParams): void {
    this.log.debug(`trace ${params.state}${params.message ? `: ${params.message}` : ''} (${params.queuedTraces} queued)`);
    if (params.state === 'queued' || params.state === 'started') {
      this.setState({kind: 'tracing', model: this.modelName, queued: params.queuedTraces});
    } else if (this.current.kind === 'tracing') {
      this.setState(params.queuedTraces > 0 ? {kind: 'tracing', model: this.modelName, queued: params.queuedTraces} : {kind: 'ready', model: this.modelName});
    }
  }
}
