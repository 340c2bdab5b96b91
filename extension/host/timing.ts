/**
 * Where the time of one Trace Selection goes, from the command to the drawn graph: each phase is
 * logged with its time since the command started and since the previous phase, and the last one
 * (the webview's `painted`) with a one-line breakdown. Pure (no `vscode`): the host passes the
 * clock and the log.
 *
 * Trace Selection starts a timing and keeps it under the file it saves to (`expect`); the trace
 * editor marks the phases of the graph that shows that file (`mark`) and ends it once the graph
 * is painted (`finish`).
 */

export type Clock = () => number;

export interface TimingLog {
  info(message: string): void;
}

export class TraceTiming {
  private readonly start: number;
  private last: number;
  private readonly phases: {readonly name: string; readonly ms: number}[] = [];

  constructor(
    readonly label: string,
    private readonly log: TimingLog,
    private readonly clock: Clock = () => performance.now(),
  ) {
    this.start = clock();
    this.last = this.start;
  }

  /** Milliseconds since the command started. */
  get elapsed(): number {
    return this.clock() - this.start;
  }

  /** Record and log a phase that has just ended; `detail` is appended to the log line. */
  mark(name: string, detail = ''): void {
    const now = this.clock();
    const ms = now - this.last;
    this.last = now;
    this.phases.push({name, ms});
    this.log.info(`timing ${this.label}: ${name} +${Math.round(ms)} ms (${Math.round(now - this.start)} ms)${detail ? ` ${detail}` : ''}`);
  }

  /** The phases so far, each with the milliseconds it took (since the previous mark). */
  get breakdown(): readonly {readonly name: string; readonly ms: number}[] {
    return this.phases;
  }

  /** Log the whole breakdown on one line. */
  logSummary(): void {
    this.log.info(`timing ${this.label}: ${this.summary()}`);
  }

  /** "total 1234 ms: a 5, b 1000, c 229" */
  summary(): string {
    const total = Math.round(this.last - this.start);
    return `total ${total} ms: ${this.phases.map((p) => `${p.name} ${Math.round(p.ms)}`).join(', ')}`;
  }
}

/**
 * Timings of traces whose graph is about to open, by the file they were saved to. Each one ends
 * when that graph is painted (`finish`) or cannot be (`drop`: the file could not be read, the
 * editor closed); `expect` returns a promise of that end, so the command can keep its progress
 * notification up until the graph is on screen.
 */
export class PendingTimings {
  private readonly byFile = new Map<string, {readonly timing: TraceTiming; readonly settle: (painted: boolean) => void}>();

  /** Keep `timing` under `file`; resolves true once its graph is painted, false if it is not. */
  expect(file: string, timing: TraceTiming): Promise<boolean> {
    // A newer trace of the same file supersedes one still waiting (the graph shows the newest).
    this.byFile.get(file)?.settle(false);
    return new Promise((resolve) => this.byFile.set(file, {timing, settle: resolve}));
  }

  /** Mark a phase of the timing kept for `file`, if any. */
  mark(file: string, name: string, detail = ''): void {
    this.byFile.get(file)?.timing.mark(name, detail);
  }

  has(file: string): boolean {
    return this.byFile.has(file);
  }

  /** Mark the last phase of `file`'s timing, log its breakdown and forget it. */
  finish(file: string, name: string, detail = ''): TraceTiming | undefined {
    const pending = this.byFile.get(file);
    if (pending === undefined) return undefined;
    this.byFile.delete(file);
    pending.timing.mark(name, detail);
    pending.timing.logSummary();
    pending.settle(true);
    return pending.timing;
  }

  /** Forget `file`'s timing without logging (its graph did not open). */
  drop(file: string): void {
    this.byFile.get(file)?.settle(false);
    this.byFile.delete(file);
  }
}
