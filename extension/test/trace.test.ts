// TraceQueries (shared/traces/trace.ts) on the synthetic trace: the orders and defaults its
// answers share with the daemon's. Every answer is also compared with Python's on real traces in
// golden.test.ts; this file covers what those traces may not contain (ties). Negative heads
// cannot be read (shares lie in [0, 1]); byContribution's own test below orders them.
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {PARAM_DEFAULTS} from '../shared/protocol/types';
import {readTraceFile} from '../shared/traces/lmtrace';
import {byContribution, TraceQueries} from '../shared/traces/trace';
import {encodeWire, f32, syntheticWire} from './helpers';

test('edge heads come by contribution, largest first; equal contributions in head order', () => {
  const wire = syntheticWire();
  // Rows 0, 1, 2 are the layer-0 edges 0 -> 0, 0 -> 1 and 1 -> 1 (see helpers.ts); H = 2.
  const heads = readTraceFile(encodeWire(wire)).edges.headContributions;
  const values = [...heads];
  values.splice(0, 6, 0.1, 0.1, 0.05, 0.2, 0, 0.03);
  wire['edges'].headContributions = f32([12, 2], values);
  const q = new TraceQueries(readTraceFile(encodeWire(wire)));
  const order = (target: number, source: number) => q.edgeHeads(0, target, source).map((h) => h.head);
  assert.deepEqual(order(0, 0), [0, 1], 'a tie: head index order');
  assert.deepEqual(order(1, 0), [1, 0], 'the larger contribution first');
  assert.deepEqual(order(1, 1), [1, 0], 'the larger contribution first, whatever the head order');
  assert.deepEqual(q.edgeHeads(0, 1, 1), [
    {head: 1, contribution: Math.fround(0.03), attention: 0.5},
    {head: 0, contribution: 0, attention: 0.5},
  ]);
});

test('byContribution is the one order: a sorted copy, the input left as it was', () => {
  const heads = [{head: 0, contribution: 0.2}, {head: 1, contribution: 0.5}, {head: 2, contribution: 0.2}, {head: 3, contribution: -1}];
  assert.deepEqual(byContribution(heads).map((h) => h.head), [1, 0, 2, 3]);
  assert.deepEqual(heads.map((h) => h.head), [0, 1, 2, 3]);
});

test('optional arguments default to the protocol schema\'s defaults', () => {
  const q = new TraceQueries(readTraceFile(encodeWire(syntheticWire())));
  // A page of `limit` (50) neurons from `offset` (0): more than the 2 this file stores.
  const {offset, limit} = PARAM_DEFAULTS['lmscope/ffnNeurons'];
  assert.throws(() => q.ffnNeurons(0, 2), {message: `this file stores the top 2 neurons of each FFN node; neurons ${offset}..${limit} need the model (open the trace with the model loaded)`});
  assert.deepEqual(q.ffnNeurons(0, 2, offset, 2).neurons.map((n) => n.neuron), [3, 1]);
  assert.deepEqual(q.projection({kind: 'residual', layer: 1, position: 2}), q.projection({kind: 'residual', layer: 1, position: 2}, PARAM_DEFAULTS['lmscope/projection'].kind));
  assert.deepEqual(q.predictions(), q.predictions(PARAM_DEFAULTS['lmscope/route'].token));
  assert.deepEqual(q.route(-1, 0.04), q.route(-1, 0.04, PARAM_DEFAULTS['lmscope/route'].mode));
});

test('a trace records a final-logit soft-cap only as a positive finite number (twin of logit_softcap)', () => {
  const cap = (value: unknown) => {
    const wire = syntheticWire();
    if (value !== undefined) wire.extra['lmscope.logitSoftcap'] = value;
    return new TraceQueries(readTraceFile(encodeWire(wire))).logitSoftcap();
  };
  assert.equal(cap(30), 30);
  assert.equal(cap(0.5), 0.5);
  for (const ignored of [undefined, 0, -1, '30', true, null]) assert.equal(cap(ignored), null, String(ignored));
});
