// Reading .lmtrace files: a valid file decodes to the documented TraceFile; every damaged,
// foreign or hostile file is one TraceFileError naming the problem, never another exception.
import assert from 'node:assert/strict';
import {readFileSync} from 'node:fs';
import path from 'node:path';
import {test} from 'node:test';
import {ErrorCodes} from '../shared/protocol/types';
import {LIMITS} from '../shared/traces/limits';
import {readTraceFile, TraceFileError, type TraceFile} from '../shared/traces/lmtrace';
import {TraceQueries} from '../shared/traces/trace';
import {encodeWire, f32, i32, ROOT, seededRandom, syntheticWire} from './helpers';

/** The TraceFileError message of reading `bytes`; fails the test on success or another error. */
function failure(bytes: Uint8Array, name = 'x.lmtrace'): string {
  try {
    readTraceFile(bytes, name);
  } catch (e) {
    assert.ok(e instanceof TraceFileError, `expected a TraceFileError, got ${String(e)}`);
    assert.equal(e.code, ErrorCodes.TraceFileError);
    assert.ok(!e.message.includes('\n'), 'one line');
    return e.message;
  }
  assert.fail('the file was accepted');
}

/** The model families the trace-file schema allows (the reader must accept exactly these). */
const SCHEMA_FAMILIES: string[] = JSON.parse(
  readFileSync(path.join(ROOT, 'protocol', 'lmtrace.schema.json'), 'utf8'),
).$defs.model.properties.family.enum;

/** A schema message as both readers print it: cut to 160 characters (as Python's reader does). */
function schemaMessage(message: string): string {
  return message.length <= 160 ? message : `${message.slice(0, 157)}...`;
}

function broken(edit: (wire: ReturnType<typeof syntheticWire>) => void): string {
  const wire = syntheticWire();
  edit(wire);
  return failure(encodeWire(wire));
}

test('a valid trace decodes to typed, frozen sections with the documented shapes', () => {
  const trace = readTraceFile(encodeWire(syntheticWire()), 'x.lmtrace');
  assert.deepEqual(trace.dims, {
    nLayers: 2, nTokens: 3, nHeads: 2, nEdges: 12, nFfnNodes: 1, nNeurons: 2, nProjections: 2, projectionTopK: 2, predictionTopK: 2,
  });
  assert.ok(trace.tokens.ids instanceof Int32Array);
  assert.deepEqual([...trace.tokens.ids], [0, 4, 5]);
  assert.ok(trace.edges.headContributions instanceof Float32Array);
  assert.equal(trace.edges.headContributions.length, 12 * 2); // [E, H]
  assert.equal(trace.blocks.residualFfn?.length, 2 * 3); // [L, n]
  assert.equal(trace.predictions.probs[0], Math.fround(0.6));
  assert.deepEqual(trace.projections.kind, ['lens', 'ffn_update']);
  assert.equal(trace.vocabulary.get(7), 'g');
  assert.equal(trace.model.parallelBlocks, false);
  for (const part of [trace, trace.model, trace.settings, trace.tokens, trace.edges, trace.projections, trace.projections.kind]) {
    assert.ok(Object.isFrozen(part));
  }
});

test('arrays are copies: changing the input bytes afterwards changes nothing', () => {
  const bytes = encodeWire(syntheticWire());
  const trace = readTraceFile(bytes);
  const before = [...trace.edges.headContributions];
  bytes.fill(0);
  assert.deepEqual([...trace.edges.headContributions], before);
});

test('a Node Buffer from a pooled read decodes to its own arrays', () => {
  const bytes = encodeWire(syntheticWire());
  const pooled = Buffer.concat([Buffer.from([1, 2, 3]), Buffer.from(bytes)]).subarray(3);
  const trace = readTraceFile(pooled);
  assert.deepEqual(trace, readTraceFile(bytes));
  assert.equal(trace.edges.headContributions.buffer.byteLength, 12 * 2 * 4);
});

test('the JSON-export array form (`values`) reads the same as the binary form', () => {
  const wire = syntheticWire();
  wire.edges.headContributions = {dtype: 'float32', shape: [12, 2], values: [...readTraceFile(encodeWire(wire)).edges.headContributions]};
  wire.tokens.ids = {dtype: 'int32', shape: [3], values: [0, 4, 5]};
  const a: TraceFile = readTraceFile(encodeWire(syntheticWire()));
  const b: TraceFile = readTraceFile(encodeWire(wire));
  assert.deepEqual(b.edges.headContributions, a.edges.headContributions);
  assert.deepEqual(b.tokens.ids, a.tokens.ids);
  wire.tokens.ids = {dtype: 'int32', shape: [3], values: [0, 4.5, 5]};
  assert.match(failure(encodeWire(wire)), /tokens\.ids\.values holds numbers that are not int32 integers/);
});

test('an empty file, a JSON file and a foreign file are named as such', () => {
  assert.equal(failure(new Uint8Array(0)), 'trace file x.lmtrace is empty');
  const json = new TextEncoder().encode('  \n{"magic": "lmscope-trace", "formatVersion": 1}');
  assert.equal(failure(json), 'trace file x.lmtrace holds JSON (a JSON export?), not a .lmtrace file');
  assert.equal(failure(new TextEncoder().encode('PK\u0003\u0004 a zip')), 'trace file x.lmtrace is not an lmscope trace (not a msgpack map)');
  assert.equal(failure(encodeWire({magic: 'something-else'})), "trace file x.lmtrace is not an lmscope trace (no 'lmscope-trace' magic)");
});

test('a newer format version asks to update the extension, before any other check', () => {
  const message = failure(encodeWire({magic: 'lmscope-trace', formatVersion: 2, somethingNew: true}));
  assert.equal(
    message,
    'trace file x.lmtrace was written by a newer lmscope (format 2); this extension reads format 1 — update the extension',
  );
});

test('truncated files are reported as truncated, at every length', () => {
  const bytes = encodeWire(syntheticWire());
  for (let cut = 1; cut < bytes.length; cut++) {
    const message = failure(bytes.subarray(0, cut));
    // A container cut early may also declare more items than the bytes left could hold.
    const expected = /^corrupt trace file x\.lmtrace: (truncated \(the data ends early\)|not valid msgpack \(\d+ exceeds max_(map|array)_len\(\d+\)\))$/;
    assert.match(message, expected, `cut at ${cut}: ${message}`);
  }
  assert.match(failure(new Uint8Array([...bytes, 0xc0])), /extra bytes after the data/);
});

test('bit flips give a TraceFileError or a valid trace that answers routes, never another error', () => {
  const original = encodeWire(syntheticWire());
  const random = seededRandom(20240611);
  let accepted = 0;
  for (let trial = 0; trial < 3000; trial++) {
    const bytes = original.slice();
    for (let flips = 1 + Math.floor(random() * 3); flips > 0; flips--) {
      bytes[Math.floor(random() * bytes.length)]! ^= 1 << Math.floor(random() * 8);
    }
    let trace: TraceFile;
    try {
      trace = readTraceFile(bytes);
    } catch (e) {
      assert.ok(e instanceof TraceFileError, `trial ${trial}: ${String(e)}`);
      continue;
    }
    accepted++;
    const queries = new TraceQueries(trace);
    for (let t = 0; t < trace.dims.nTokens; t++) {
      for (const mode of ['renormalize', 'raw'] as const) queries.route(t, Math.max(trace.settings.minThreshold, 0.04), mode);
    }
  }
  assert.ok(accepted > 0, 'some flips land in float data and decode');
});

test('a huge declared shape with tiny data is refused before anything is allocated', () => {
  const message = broken(w => (w.edges.headContributions = {dtype: 'float32', shape: [2147483647, 2147483647, 2147483647, 2147483647], data: new Uint8Array(8)}));
  assert.equal(
    message,
    'corrupt trace file x.lmtrace: edges.headContributions declares shape [2147483647, 2147483647, 2147483647, 2147483647] ' +
      '(85070591571778290947995441078751723524 bytes) but holds 8 bytes', // the exact count, as Python prints it
  );
  assert.match(broken(w => (w.tokens.ids = {dtype: 'int32', shape: [1e9], values: [1, 2]})), /tokens\.ids declares shape \[1000000000\] \(1000000000 values\) but holds 2 values/);
  assert.equal(broken(w => (w.tokens.ids.shape = [3, 1, 1, 1, 1])), 'corrupt trace file x.lmtrace: tokens.ids.shape: [3, 1, 1, 1, 1] is too long');
  assert.equal(broken(w => (w.tokens.ids.shape = [-3])), 'corrupt trace file x.lmtrace: tokens.ids.shape[0]: -3 is less than the minimum of 0');
});

test('dtypes, array forms and field types are checked, naming the field as Python does', () => {
  // Each message is the one lmscope.traces.lmtrace gives for the same damage.
  const cases: [(w: ReturnType<typeof syntheticWire>) => void, string][] = [
    [w => (w.edges.layer = f32([12], Array(12).fill(0))), "edges.layer.dtype: 'int32' was expected"],
    [w => (w.blocks.ffn.dtype = 'float64'), "blocks.ffn.dtype: 'float64' is not one of ['int32', 'float32']"],
    [w => (w.blocks.ffn.data = 'abc'), "blocks.ffn.data: 'abc' is not of type 'integer'"],
    [w => (w.blocks.ffn.data = 24), 'blocks.ffn.data is not binary (JSON traces use `values`)'],
    [w => (w.blocks.ffn.values = [1]), 'blocks.ffn: an ndarray needs exactly one of `data` and `values`'],
    [w => (w.model.nLayers = '2'), "model.nLayers: '2' is not of type 'integer'"],
    [w => (w.model.nHeads = 0), 'model.nHeads: 0 is less than the minimum of 1'],
    [w => (w.model.family = 'bert'), `model.family: ${schemaMessage(`'bert' is not one of [${SCHEMA_FAMILIES.map(f => `'${f}'`).join(', ')}]`)}`],
    [w => (w.model.parallelBlocks = 1), "model.parallelBlocks: 1 is not of type 'boolean'"],
    [w => (w.settings.minThreshold = 2), 'settings.minThreshold: 2 is greater than the maximum of 1'],
    [w => (w.projections.kind = ['lens', "it's"]), `projections.kind[1]: "it's" is not one of ['lens', 'attention_update', 'ffn_update']`],
    [w => delete w.edges, "top level: 'edges' is a required property"],
    [w => ((w.model.x = 0), (w.model.y = 0)), "model: Additional properties are not allowed ('x', 'y' were unexpected)"],
    [w => ((w.model.nLayer = w.model.nLayers), delete w.model.nLayers), "model: Additional properties are not allowed ('nLayer' was unexpected)"],
    [w => ((w.edgez = w.edges), delete w.edges), "top level: 'edges' is a required property"],
    [w => (w.extra = []), "extra: [] is not of type 'object'"],
    [w => (w.tokens.strings = ['a', 2, 'b']), "tokens.strings[1]: 2 is not of type 'string'"],
    [w => (w.blocks.residualFfn = -32), 'blocks.residualFfn: a value of type int is not allowed here'],
    [w => (w.formatVersion = 0), 'formatVersion is 0, expected a positive integer'],
    [w => delete w.formatVersion, 'formatVersion is missing, expected a positive integer'],
  ];
  for (const [edit, message] of cases) assert.equal(broken(edit), `corrupt trace file x.lmtrace: ${message}`);
});

test('non-finite floats are refused', () => {
  assert.match(broken(w => (w.blocks.ffn = f32([2, 3], [0, 0, NaN, 0, 0, 0]))), /blocks\.ffn contains non-finite values/);
  assert.match(broken(w => (w.predictions.probs = {dtype: 'float32', shape: [3, 2], values: [1e300, 0, 0, 0, 0, 0]})), /predictions\.probs contains non-finite/);
});

test('shapes must agree with nLayers, nTokens and nHeads', () => {
  assert.match(broken(w => (w.blocks.ffn = f32([3, 2], Array(6).fill(0)))), /blocks\.ffn has shape \[3, 2\], expected \[2, 3\] \[L, n\]/);
  assert.match(broken(w => (w.edges.headAttention = f32([12, 3], Array(36).fill(0)))), /edges\.headAttention has shape \[12, 3\], expected \[12, 2\] \[E, H\]/);
  assert.match(broken(w => (w.tokens.strings = ['a'])), /tokens\.strings has 1 items, expected 3 \[n\]/);
  assert.match(broken(w => (w.blocks.residualFfn = null)), /blocks\.residualFfn must be null exactly when model\.parallelBlocks/);
  assert.match(broken(w => (w.model.nKvHeads = 3)), /model\.nHeads 2 is not a multiple of nKvHeads 3/);
  assert.match(broken(w => (w.tokens.ids = i32([0], []))), /tokens\.ids is empty/);
});

test('index ranges, edge order and vocabulary coverage are checked', () => {
  const edges = (edit: (e: {layer: number[]; target: number[]; source: number[]}) => void) =>
    broken(w => {
      const e = {layer: [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1], target: [0, 1, 1, 2, 2, 2, 0, 1, 1, 2, 2, 2], source: [0, 0, 1, 0, 1, 2, 0, 0, 1, 0, 1, 2]};
      edit(e);
      for (const key of ['layer', 'target', 'source'] as const) w.edges[key] = i32([12], e[key]);
    });
  assert.match(edges(e => (e.layer[11] = 2)), /edges\.layer holds 2, outside \[0, 2\) \(model\.nLayers\)/);
  assert.match(edges(e => (e.target[11] = 3)), /edges\.target holds 3, outside \[0, 3\) \(token positions\)/);
  assert.match(edges(e => (e.source[1] = 2)), /edges row 1: source > target/);
  assert.match(edges(e => ([e.source[4], e.source[5]] = [2, 1])), /edges row 5 is out of \(layer, target, source\) order or repeated/);
  assert.match(broken(w => (w.neurons.position = i32([1], [3]))), /neurons\.position holds 3, outside \[0, 3\)/);
  assert.match(broken(w => (w.neurons.index = i32([1, 2], [4, 0]))), /neurons\.index holds 4, outside \[0, 4\) \(model\.dFfn\)/);
  assert.match(broken(w => (w.tokens.ids = i32([3], [0, 4, 10]))), /tokens\.ids holds 10, outside \[0, 10\) \(model\.vocabSize\)/);
  assert.match(broken(w => (w.projections.topPrevRank = i32([2, 2], [0, 3, 0, -1]))), /projections row 1: topPrevRank must be -1/);
  assert.match(broken(w => (w.projections.nodeKind = ['ffn', 'ffn'])), /projections row 0: a lens projection of a ffn node/);
  assert.match(
    broken(w => (w.vocabulary = {ids: i32([3], [0, 4, 6]), strings: ['a', 'b', 'c']})),
    /vocabulary lacks token id 5 used in tokens\.ids/,
  );
  assert.match(broken(w => (w.vocabulary = {ids: i32([2], [4, 0]), strings: ['a', 'b']})), /vocabulary\.ids are not strictly increasing/);
});

test('msgpack extension types are refused', () => {
  const bytes = encodeWire(syntheticWire());
  // Replace the `extra` map ({} = 0x80, the last byte) by a zero-length ext and by fixext1.
  assert.equal(bytes[bytes.length - 1], 0x80);
  const ext0 = new Uint8Array([...bytes.subarray(0, -1), 0xc7, 0x00, 0x05]);
  const ext1 = new Uint8Array([...bytes.subarray(0, -1), 0xd4, 0x05, 0x00]);
  // Python refuses the second the same way; it lets the first (empty) one through into `extra`.
  assert.equal(failure(ext0), 'corrupt trace file x.lmtrace: msgpack extension values are not allowed');
  assert.equal(failure(ext1), 'corrupt trace file x.lmtrace: not valid msgpack (2 exceeds max_ext_len(0))');
});

test('text that is not UTF-8 and map keys that are not strings are refused, as Python refuses them', () => {
  const wire = syntheticWire();
  wire.tokens.prompt = 'ZZZZ';
  const bytes = encodeWire(wire);
  const at = Buffer.from(bytes).indexOf('ZZZZ');
  bytes.set([0xff, 0xfe, 0xfd, 0xfc], at);
  assert.equal(failure(bytes), 'corrupt trace file x.lmtrace: not valid msgpack (text that is not UTF-8)');
  const plain = encodeWire(syntheticWire());
  const intKey = new Uint8Array([...plain.subarray(0, -1), 0x81, 0x01, 0x02]); // extra = {1: 2}
  assert.equal(failure(intKey), 'corrupt trace file x.lmtrace: not valid msgpack (int is not allowed for map key when strict_map_key=True)');
  const listKey = new Uint8Array([...plain.subarray(0, -1), 0x81, 0x91, 0x01, 0x02]); // extra = {[1]: 2}
  assert.equal(failure(listKey), 'corrupt trace file x.lmtrace: not valid msgpack (list is not allowed for map key when strict_map_key=True)');
});

test('deeply nested values in `extra` are refused', () => {
  const bytes = encodeWire(syntheticWire());
  // extra = {"x": [[[...]]]} nested 100000 deep (one byte per level).
  const nested = new Uint8Array([...bytes.subarray(0, -1), 0x81, 0xa1, 0x78, ...new Uint8Array(100_000).fill(0x91), 0xc0]);
  assert.equal(failure(nested), 'corrupt trace file x.lmtrace: values are nested more than 100 deep');
});

test('a parallel-block trace has no residualFfn', () => {
  const trace = readTraceFile(encodeWire(syntheticWire({parallel: true})));
  assert.equal(trace.blocks.residualFfn, null);
  assert.equal(trace.model.parallelBlocks, true);
});

test('the reader\'s limits are the schema\'s, number for number', () => {
  const schema = JSON.parse(readFileSync(path.join(ROOT, 'protocol', 'lmtrace.schema.json'), 'utf8'));
  const defs = schema.$defs;
  for (const key of ['nLayers', 'nHeads', 'nKvHeads', 'dModel', 'dHead', 'dFfn', 'vocabSize', 'contextLength'] as const) {
    assert.equal(LIMITS[key], defs.model.properties[key].maximum, `model.${key}`);
  }
  for (const key of ['topNeurons', 'projectionTopK', 'predictionTopK'] as const) {
    assert.equal(LIMITS[key], defs.settings.properties[key].maximum, `settings.${key}`);
  }
  assert.equal(LIMITS.text, defs.text.maxLength);
  assert.equal(LIMITS.tokenText, defs.tokenText.maxLength);
  assert.equal(LIMITS.prompt, defs.tokens.properties.prompt.maxLength);
  assert.equal(LIMITS.tokens, defs.tokens.properties.strings.maxItems);
  assert.equal(LIMITS.vocabulary, defs.vocabulary.properties.strings.maxItems);
  for (const [name, range] of [['shareArray', LIMITS.share], ['magnitudeArray', LIMITS.magnitude]] as const) {
    const items = defs[name].properties.values.items;
    assert.deepEqual([range.min, range.max], [items.minimum, items.maximum], name);
  }
  assert.equal(LIMITS.nesting, schema['x-maxNesting']);
  assert.equal(LIMITS.adapterRank, defs.adapter.properties.rank.maximum, 'model.adapter.rank');
  assert.equal(LIMITS.adapterTargets, defs.adapter.properties.targetModules.maxItems, 'model.adapter.targetModules');
  assert.deepEqual([LIMITS.magnitude.min, LIMITS.magnitude.max], [defs.adapter.properties.alpha.minimum, defs.adapter.properties.alpha.maximum], 'model.adapter.alpha');
  // Every float array of the format has a range: none refers to the unbounded float32Array.
  assert.equal(JSON.stringify(schema).split('"#/$defs/float32Array"').length - 1, 2, 'only shareArray and magnitudeArray');
});

test('nesting is refused anywhere past the limit, with one message, below msgpack\'s own limit and past it', () => {
  const bytes = encodeWire(syntheticWire());
  // extra = {"x": [[...nil]]}: the top-level map is level 1, extra level 2, then the arrays.
  const withExtra = (levels: number) => new Uint8Array([...bytes.subarray(0, -1), 0x81, 0xa1, 0x78, ...new Uint8Array(levels).fill(0x91), 0xc0]);
  assert.equal(readTraceFile(withExtra(LIMITS.nesting - 2)).extra['x'] !== undefined, true, 'at the limit');
  for (const levels of [LIMITS.nesting - 1, 498, 1022, 1023, 5000]) {
    assert.equal(failure(withExtra(levels)), `corrupt trace file x.lmtrace: values are nested more than ${LIMITS.nesting} deep`, `${levels + 2} deep`);
  }
});
