// The experts of a mixture-of-experts trace in the TypeScript reader (shared/traces/experts.ts)
// and its queries (TraceQueries.ffnExperts, neuronLabel, ffnWidth), on the synthetic MoE trace
// of moeWire.ts. Every check and message is also compared with Python's on tiny MoE traces the
// engine writes (golden.test.ts: ffnExperts, neuron labels, and damaged experts tables).
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {readTraceFile, TraceFileError} from '../shared/traces/lmtrace';
import {ExpertLayout, readExperts} from '../shared/traces/experts';
import {NeedsModelError, TraceQueries} from '../shared/traces/trace';
import {LmscopeError} from '../shared/errors';
import {encodeWire, syntheticWire} from './helpers';
import {moeExperts, syntheticMoeWire} from './moeWire';

const open = (wire: Record<string, unknown>) => new TraceQueries(readTraceFile(encodeWire(wire), 'moe.lmtrace'));

test('the reader keeps the experts table of an MoE trace, with its layout and rows', () => {
  const {experts} = readTraceFile(encodeWire(syntheticMoeWire()));
  assert.ok(experts !== null);
  assert.deepEqual([experts.layout.nExperts, experts.layout.topK, experts.layout.nShared, experts.layout.flatWidth], [2, 1, 1, 4]);
  assert.deepEqual([...experts.table.expert], [2, 1]);
  assert.deepEqual([...experts.table.gate], [0.75, 0.625]);
  assert.deepEqual([...experts.table.rest], [0.25]);
  assert.equal(readTraceFile(encodeWire(syntheticWire())).experts, null, 'a dense trace has none');
});

test('expert neurons are labelled by expert (L0.E1.N0, L0.S0.N1); a dense trace keeps L0.N3', () => {
  const q = open(syntheticMoeWire());
  assert.deepEqual([0, 1, 2, 3].map((k) => q.neuronLabel(0, k)), ['L0.E0.N0', 'L0.E1.N0', 'L0.S0.N0', 'L0.S0.N1']);
  assert.equal(q.ffnWidth(0), 3, 'one chosen expert of 1 neuron and the shared expert of 2');
  assert.deepEqual(q.ffnNeurons(0, 2, 0, 2), {total: 3, offset: 0, rest: Math.fround(0.3), neurons: [
    {neuron: 3, contribution: 0.5, activation: 1.5},
    {neuron: 1, contribution: Math.fround(0.2), activation: -0.25},
  ]});
  const dense = open(syntheticWire());
  assert.equal(dense.neuronLabel(0, 3), 'L0.N3');
  assert.equal(dense.ffnWidth(0), 4);
  assert.equal(dense.expertLayout, null);
  const layout = new ExpertLayout(8, 2, 16, 1, 32, [1, 3], 64);
  assert.equal(layout.neuronLabel(0, 70), 'L0.N70', 'a dense layer of a mixture model');
  assert.equal(layout.neuronLabel(1, 70), 'L1.E4.N6');
  assert.equal(layout.neuronLabel(3, 8 * 16 + 5), 'L3.S0.N5');
  assert.throws(() => layout.neuronLabel(1, 8 * 16 + 32), /neuron 160 is outside the 160 of a sparse layer/);
});

test('ffnExperts answers stored nodes from the file; others need the model; dense layers have no experts', () => {
  const q = open(syntheticMoeWire());
  assert.deepEqual(q.ffnExperts(0, -1), {total: 2, rest: 0.25, stored: true, experts: [
    {expert: 2, label: 'S0', gate: 0.75, contribution: 0.5},
    {expert: 1, label: 'E1', gate: 0.625, contribution: 0.25},
  ]});
  assert.throws(() => q.ffnExperts(1, 2), (e: unknown) => e instanceof NeedsModelError && /FFN node L1 at token 2: this file stores the experts of .*; the others need the model/.test(e.message));
  assert.throws(() => q.ffnExperts(0, 3), /token position 3 is out of range/);
  assert.throws(() => open(syntheticWire()).ffnExperts(0, 2), (e: unknown) => e instanceof LmscopeError && !(e instanceof NeedsModelError) && e.message === 'layer 0 has a dense FFN: it has no experts');
});

test('a damaged experts table is refused with its path', () => {
  const damaged = (change: (experts: Record<string, any>) => void) => { // eslint-disable-line @typescript-eslint/no-explicit-any
    const wire = syntheticMoeWire();
    change(wire['extra']['lmscope.experts']);
    return () => readTraceFile(encodeWire(wire), 'moe.lmtrace');
  };
  const refused = (message: string) => (e: unknown) => e instanceof TraceFileError && e.message === `corrupt trace file moe.lmtrace: ${message}`;
  assert.throws(damaged((v) => (v['nodes']['expert'][0][0] = 9)), refused('extra.lmscope.experts.nodes.expert: a slot outside 0..2'));
  assert.throws(damaged((v) => (v['nodes']['expert'][0] = [0, 1])), refused('extra.lmscope.experts.nodes.expert: each row needs topK distinct experts and every shared slot'));
  assert.throws(damaged((v) => (v['nodes']['gate'][0][1] = 1.25)), refused('extra.lmscope.experts.nodes.gate: a gate outside [0, 1]'));
  assert.throws(damaged((v) => (v['nodes']['rest'][0] = 0.5)), refused("extra.lmscope.experts.nodes: a row's contributions sum to more than 1"));
  assert.throws(damaged((v) => (v['nodes']['position'] = [3])), refused('extra.lmscope.experts.nodes.position: outside the token positions'));
  assert.throws(damaged((v) => (v['nodes']['layer'] = [0, 0])), refused('extra.lmscope.experts.nodes.position: not a list of 2 rows'));
  assert.throws(damaged((v) => (v['layout']['sparseLayers'] = [1, 0])), refused('extra.lmscope.experts.layout.sparseLayers: not increasing layers below model.nLayers'));
  assert.throws(damaged((v) => (v['layout']['dExpert'] = 2)), refused('extra.lmscope.experts.layout: wider than model.dFfn'));
  assert.throws(damaged((v) => delete v['layout']['topK']), refused('extra.lmscope.experts.layout: not a map of dDense, dExpert, dShared, nExperts, nShared, sparseLayers, topK'));
  // Checked as Python checks it; what the reader says of the value itself.
  assert.equal(readExperts({}, 2, 3), null, 'absent: a dense model or an older file');
  assert.equal(readExperts({'lmscope.experts': 'x'}, 2, 3), 'extra.lmscope.experts: not a map of `layout` and `nodes`');
  assert.ok(typeof readExperts({'lmscope.experts': moeExperts()}, 2, 3) === 'object');
});
