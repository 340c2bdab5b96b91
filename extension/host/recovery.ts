/**
 * What the extension does when the daemon dies under it: remember what was running, tell the
 * user what was lost (the running trace or model load) and what was not (saved `.lmtrace`
 * files are written atomically, so they are intact), restart with backoff, reload the model
 * that was loaded, and say so once it is back. Pure logic (no `vscode`): `daemon.ts` gives it
 * a host that shows messages and starts the daemon, and the tests give it a fake.
 */

import {restartDelay} from './python';

/** A request worth naming when it is lost. */
export interface Work {
  readonly kind: 'trace' | 'load';
  /** The prompt, or the model spec. */
  readonly what: string;
}

/** The work a request stands for, or null for quick queries nobody needs to hear about. */
export function describeWork(method: string, params: unknown): Work | null {
  const p = (typeof params === 'object' && params !== null ? params : {}) as Record<string, unknown>;
  if (method === 'lmscope/trace') {
    const prompt = typeof p['prompt'] === 'string' ? p['prompt'] : 'a document range';
    return {kind: 'trace', what: prompt};
  }
  if (method === 'lmscope/loadModel' && typeof p['spec'] === 'string') return {kind: 'load', what: p['spec']};
  return null;
}

/** Requests in flight, and those that failed because the daemon went away. */
export class InFlight {
  private seq = 0;
  private readonly running = new Map<number, Work>();
  private lost: Work[] = [];

  begin(work: Work): number {
    this.running.set(++this.seq, work);
    return this.seq;
  }

  /** `lost`: it failed without an answer from the daemon (the connection closed). */
  end(id: number, lost: boolean): void {
    const work = this.running.get(id);
    this.running.delete(id);
    if (work !== undefined && lost) this.lost.push(work);
  }

  /** Everything running or lost since the last call (the daemon just died with it). */
  takeLost(): Work[] {
    const all = [...this.lost, ...this.running.values()];
    this.lost = [];
    this.running.clear();
    return all;
  }
}

const SAVED_INTACT = 'Saved traces (.lmtrace files) are intact.';

function quote(text: string): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return `“${line.length > 40 ? `${line.slice(0, 39)}…` : line}”`;
}

/** What was lost, as one sentence (empty when nothing was running). */
export function lostSentence(lost: readonly Work[]): string {
  const traces = lost.filter((w) => w.kind === 'trace');
  const loads = lost.filter((w) => w.kind === 'load');
  const parts: string[] = [];
  if (traces.length === 1) parts.push(`the trace of ${quote(traces[0]!.what)} was lost`);
  else if (traces.length > 1) parts.push(`${traces.length} traces were lost (${traces.map((w) => quote(w.what)).join(', ')})`);
  if (loads.length > 0) parts.push(`loading ${loads[loads.length - 1]!.what} was interrupted`);
  if (parts.length === 0) return '';
  const sentence = parts.join(' and ');
  return `${sentence[0]!.toUpperCase()}${sentence.slice(1)}.`;
}

/** The user's message when the daemon stopped; `seconds` null: it will not be restarted. */
export function crashMessage(lost: readonly Work[], seconds: number | null, model: string | null, crashes: number): string {
  const what = lostSentence(lost);
  const head = `lmscope: the daemon stopped unexpectedly${lost.length > 0 ? ' while working' : ''}.`;
  const tail =
    seconds === null
      ? `It crashed ${crashes} times in a few minutes, so it is not restarted: use "lmscope: Restart Daemon".`
      : `Restarting it in ${seconds} s${model ? ` and reloading ${model}` : ''}.`;
  return [head, what, SAVED_INTACT, tail].filter((s) => s !== '').join(' ');
}

/** The error a request gets when the daemon died before answering it. */
export function lostRequestMessage(work: Work): string {
  const what = work.kind === 'trace' ? `the trace of ${quote(work.what)}` : `loading ${work.what}`;
  return `the lmscope daemon stopped before finishing ${what}, which was lost; saved traces (.lmtrace files) are intact. It restarts by itself: try again once it is ready.`;
}

export interface RecoveryHost {
  warn(message: string): void;
  error(message: string): void;
  info(message: string): void;
  /** Run `task` after `ms` milliseconds. */
  schedule(task: () => void, ms: number): void;
  /** Start a fresh daemon (which loads the model the extension last asked for). */
  restart(): Promise<void>;
  now(): number;
}

/** Crashes within this window count towards the backoff. */
export const CRASH_WINDOW_MS = 3 * 60_000;

export class Recovery {
  readonly inFlight = new InFlight();
  private crashes: number[] = [];
  /** The model to announce once a restarted daemon has it loaded again. */
  private reloading: string | null = null;

  constructor(private readonly host: RecoveryHost) {}

  /** A manual restart starts the backoff afresh. */
  reset(): void {
    this.crashes = [];
    this.reloading = null;
  }

  /** The daemon's connection closed unexpectedly; `model` is the one it had (or was loading). */
  crashed(model: string | null): {delay: number | null; message: string} {
    const now = this.host.now();
    this.crashes = this.crashes.filter((t) => now - t < CRASH_WINDOW_MS).concat(now);
    const delay = restartDelay(this.crashes.length);
    const lost = this.inFlight.takeLost();
    const message = crashMessage(lost, delay === null ? null : Math.round(delay / 1000), model, this.crashes.length);
    if (delay === null) {
      this.host.error(message);
      return {delay, message};
    }
    this.host.warn(message);
    this.reloading = model;
    this.host.schedule(() => void this.host.restart(), delay);
    return {delay, message};
  }

  /** A model finished loading: after a crash, tell the user the daemon is back with it. */
  modelReady(name: string): void {
    if (this.reloading === null) return;
    this.reloading = null;
    this.host.info(`lmscope: the daemon is back and ${name} is loaded again.`);
  }
}
