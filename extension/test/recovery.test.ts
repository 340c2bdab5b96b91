// When the daemon dies: what the user is told (what was lost, that saved traces are intact),
// the restart with backoff, the model reloaded, and the "back" message — with a fake host in
// place of VS Code and the language client.
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {InFlight, Recovery, crashMessage, describeWork, lostRequestMessage, type RecoveryHost} from '../host/recovery';

class FakeHost implements RecoveryHost {
  warnings: string[] = [];
  errors: string[] = [];
  infos: string[] = [];
  scheduled: {task: () => void; ms: number}[] = [];
  restarts = 0;
  clock = 1_000_000;
  warn(message: string): void {
    this.warnings.push(message);
  }
  error(message: string): void {
    this.errors.push(message);
  }
  info(message: string): void {
    this.infos.push(message);
  }
  schedule(task: () => void, ms: number): void {
    this.scheduled.push({task, ms});
  }
  restart(): Promise<void> {
    this.restarts++;
    return Promise.resolve();
  }
  now(): number {
    return this.clock;
  }
}

test('a crash during a trace names the lost trace, says saved traces are intact, and restarts with the model', () => {
  const host = new FakeHost();
  const recovery = new Recovery(host);
  const trace = recovery.inFlight.begin(describeWork('lmscope/trace', {prompt: 'When Mary and John went to the store', savePath: '/w/t.lmtrace'})!);
  assert.equal(describeWork('lmscope/route', {handle: 't1', threshold: 0.04}), null); // quick queries are not named
  const {delay} = recovery.crashed('default');
  assert.equal(delay, 1000);
  assert.equal(host.warnings.length, 1);
  const message = host.warnings[0]!;
  assert.match(message, /the daemon stopped unexpectedly while working/);
  assert.match(message, /The trace of “When Mary and John went to the store” was lost\./);
  assert.match(message, /Saved traces \(\.lmtrace files\) are intact\./);
  assert.match(message, /Restarting it in 1 s and reloading default\./);
  // The request itself settles later (its promise rejects after the close): nothing is counted twice.
  recovery.inFlight.end(trace, true);
  assert.deepEqual(recovery.inFlight.takeLost(), []);

  assert.equal(host.scheduled.length, 1);
  assert.equal(host.scheduled[0]!.ms, 1000);
  host.scheduled[0]!.task();
  assert.equal(host.restarts, 1);
  recovery.modelReady('SmolLM2-135M-Instruct');
  assert.deepEqual(host.infos, ['lmscope: the daemon is back and SmolLM2-135M-Instruct is loaded again.']);
  recovery.modelReady('SmolLM2-135M-Instruct'); // a later, ordinary load says nothing more
  assert.equal(host.infos.length, 1);
});

test('a request that failed because the connection closed is reported as lost when the crash is handled', () => {
  const host = new FakeHost();
  const recovery = new Recovery(host);
  const id = recovery.inFlight.begin({kind: 'trace', what: 'a b c'});
  recovery.inFlight.end(id, true); // its rejection arrived before the close handler ran
  recovery.crashed('/models/mine');
  assert.match(host.warnings[0]!, /The trace of “a b c” was lost\..*reloading \/models\/mine/);
});

test('an idle crash says nothing was lost but still that saved traces are intact', () => {
  const host = new FakeHost();
  new Recovery(host).crashed(null);
  assert.equal(host.warnings[0], 'lmscope: the daemon stopped unexpectedly. Saved traces (.lmtrace files) are intact. Restarting it in 1 s.');
});

test('repeated crashes back off, then stop restarting with an error; a manual restart resets', () => {
  const host = new FakeHost();
  const recovery = new Recovery(host);
  const delays: (number | null)[] = [];
  for (let i = 0; i < 7; i++) {
    host.clock += 1000;
    delays.push(recovery.crashed('default').delay);
  }
  assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, null, null]);
  assert.equal(host.errors.length, 2);
  assert.match(host.errors[0]!, /crashed 6 times in a few minutes, so it is not restarted: use "lmscope: Restart Daemon"/);
  assert.equal(host.scheduled.length, 5);
  recovery.reset();
  assert.equal(recovery.crashed('default').delay, 1000);
  host.clock += 10 * 60_000; // crashes long ago no longer count
  assert.equal(recovery.crashed('default').delay, 1000);
});

test('several lost traces and an interrupted load are all named', () => {
  const message = crashMessage(
    [
      {kind: 'trace', what: 'first prompt'},
      {kind: 'trace', what: 'x'.repeat(100)},
      {kind: 'load', what: 'gpt2'},
    ],
    2,
    'gpt2',
    2,
  );
  assert.match(message, /2 traces were lost \(“first prompt”, “x{39}…”\) and loading gpt2 was interrupted\./);
  assert.match(message, /Restarting it in 2 s and reloading gpt2\./);
});

test('the error a lost request gets says what was lost and what was not', () => {
  assert.equal(
    lostRequestMessage({kind: 'trace', what: 'When Mary\nand John'}),
    'the lmscope daemon stopped before finishing the trace of “When Mary and John”, which was lost; saved traces (.lmtrace files) are intact. It restarts by itself: try again once it is ready.',
  );
  const inFlight = new InFlight();
  const answered = inFlight.begin({kind: 'load', what: 'default'});
  inFlight.end(answered, false);
  assert.deepEqual(inFlight.takeLost(), []);
});
