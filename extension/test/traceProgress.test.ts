// What Trace Selection's notification says: only what is really happening.
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {tracingMessage, waitingMessage} from '../host/traceProgress';

test('a ready daemon with a model lets the trace start at once: no waiting message', () => {
  assert.equal(waitingMessage({kind: 'ready', model: 'SmolLM2-135M-Instruct'}, true), null);
});

test('the daemon starting is said only while it starts', () => {
  assert.equal(waitingMessage({kind: 'stopped'}, false), 'starting the daemon…');
  assert.equal(waitingMessage({kind: 'starting'}, false), 'starting the daemon…');
  assert.equal(waitingMessage({kind: 'ready', model: 'm'}, false), 'starting the daemon…');
});

test('a loading model is named, with its progress when known', () => {
  assert.equal(waitingMessage({kind: 'loading', model: 'default'}, true), 'loading the default model…');
  assert.equal(waitingMessage({kind: 'loading', model: 'Qwen/Qwen2-0.5B', percentage: 40}, true), 'loading Qwen2-0.5B… 40%');
  assert.equal(waitingMessage({kind: 'loading', model: '/home/me/ckpt/'}, true), 'loading ckpt…');
  assert.equal(waitingMessage({kind: 'loading'}, true), 'loading the default model…');
});

test('an earlier trace still running is said, not the model', () => {
  assert.equal(waitingMessage({kind: 'tracing', model: 'm', queued: 1}, true), 'waiting for the trace before this one…');
});

test('no state says the old "waiting for the daemon and the model"', () => {
  const states = [
    {kind: 'stopped'}, {kind: 'starting'}, {kind: 'loading'}, {kind: 'ready', model: 'm'}, {kind: 'ready', model: null},
    {kind: 'tracing', model: 'm', queued: 0}, {kind: 'error', message: 'x'}, {kind: 'untrusted'},
  ] as const;
  for (const state of states) {
    for (const running of [true, false]) assert.doesNotMatch(waitingMessage(state, running) ?? '', /daemon and the model/);
  }
});

test('the daemon\'s progress shows as what the trace is doing', () => {
  assert.equal(tracingMessage('layer 3/30'), 'tracing: layer 3/30');
  assert.equal(tracingMessage('vocabulary projections'), 'vocabulary projections…');
  assert.equal(tracingMessage(undefined), 'tracing…');
  assert.equal(tracingMessage('  '), 'tracing…');
});
