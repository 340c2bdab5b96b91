// Where Trace Selection's time goes: phases, the breakdown line, and the pending timings that
// end when the graph is painted (or cannot be).
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {PendingTimings, TraceTiming} from '../host/timing';

/** A clock the test moves by hand, and a log that keeps its lines. */
function fixture() {
  let now = 1000;
  const lines: string[] = [];
  const timing = new TraceTiming('"p"', {info: (line) => lines.push(line)}, () => now);
  return {timing, lines, advance: (ms: number) => (now += ms)};
}

test('each phase is logged with its own time and the time since the command', () => {
  const {timing, lines, advance} = fixture();
  advance(5);
  timing.mark('traces folder');
  advance(2500);
  timing.mark('result received', '(15 tokens)');
  assert.deepEqual(lines, ['timing "p": traces folder +5 ms (5 ms)', 'timing "p": result received +2500 ms (2505 ms) (15 tokens)']);
  assert.deepEqual(timing.breakdown, [
    {name: 'traces folder', ms: 5},
    {name: 'result received', ms: 2500},
  ]);
});

test('the summary gives the total and every phase on one line', () => {
  const {timing, advance} = fixture();
  advance(10);
  timing.mark('a');
  advance(300);
  timing.mark('b');
  assert.equal(timing.summary(), 'total 310 ms: a 10, b 300');
});

test('a pending timing ends when its graph is painted, with a breakdown in the log', async () => {
  const {timing, lines, advance} = fixture();
  const pending = new PendingTimings();
  const painted = pending.expect('/t/a.lmtrace', timing);
  advance(40);
  pending.mark('/t/a.lmtrace', 'webview ready');
  pending.mark('/t/other.lmtrace', 'not this one');
  advance(60);
  assert.equal(pending.finish('/t/a.lmtrace', 'painted')?.summary(), 'total 100 ms: webview ready 40, painted 60');
  assert.equal(await painted, true);
  assert.equal(lines.at(-1), 'timing "p": total 100 ms: webview ready 40, painted 60');
  assert.equal(pending.has('/t/a.lmtrace'), false);
  assert.equal(pending.finish('/t/a.lmtrace', 'painted'), undefined, 'a second paint is not timed again');
});

test('a graph that cannot open ends its timing without a breakdown', async () => {
  const {timing, lines} = fixture();
  const pending = new PendingTimings();
  const painted = pending.expect('/t/a.lmtrace', timing);
  pending.drop('/t/a.lmtrace');
  assert.equal(await painted, false);
  assert.deepEqual(lines, []);
});

test('a newer trace of the same file supersedes the timing still waiting', async () => {
  const first = fixture(), second = fixture();
  const pending = new PendingTimings();
  const older = pending.expect('/t/a.lmtrace', first.timing);
  const newer = pending.expect('/t/a.lmtrace', second.timing);
  assert.equal(await older, false);
  pending.finish('/t/a.lmtrace', 'painted');
  assert.equal(await newer, true);
  assert.deepEqual(first.lines, []);
  assert.match(second.lines.at(-1) ?? '', /total/);
});
