// The TypeScript trace library answers exactly what the Python implementation answers.
//
// tests/fixtures/export_route_golden.py traces a prompt on every tiny model family, saves each
// .lmtrace and writes Python's answers from the saved file (routes for every output token x
// threshold x mode, predictions, edge heads, FFN neuron pages, projections, and the error
// cases). Here each file is read with shared/traces/lmtrace.ts and every answer compared
// exactly: edges and nodes in the same order, edge and head weights bit for bit (routes.ts
// copies NumPy's arithmetic), stored numbers and error messages as they are. Only node shares
// get a tolerance (see SHARE_TOLERANCE). LMSCOPE_PYTHON overrides the interpreter.
//
// LMSCOPE_BENCH_TRACE=<a .lmtrace> (optional; e.g. 200 tokens of the default model) adds that
// file as one more case (routes for a few output tokens), compared the same way.
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import {mkdtempSync, readFileSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import type {NodeId, ThresholdMode} from '../shared/protocol/types';
import {readTraceFile, TraceFileError} from '../shared/traces/lmtrace';
import {TraceQueries} from '../shared/traces/trace';
import {ROOT} from './helpers';

type Answer = {args: any[]; result?: any; error?: {type: string; message: string}}; // eslint-disable-line @typescript-eslint/no-explicit-any
interface GoldenCase {
  file: string;
  family: string;
  nTokens: number;
  routes: Answer[];
  predictions: Answer[];
  edgeHeads: Answer[];
  ffnNeurons: Answer[];
  projections: Answer[];
  /** Python's `ffn_experts` (MoE cases: every stored row and the error cases; dense: an error). */
  ffnExperts: Answer[];
  /** [layer, neuron, Python's `neuron_label`] of the stored neurons (`L1.E2.N6` when sparse). */
  neuronLabels: [number, number, string][];
}

/**
 * Node shares (flow) are the one number computed in another order: Python adds the shares of
 * the nodes at one depth in set order, routes.ts in slot order, so a share may differ by a few
 * ulps (relative), never more.
 */
const SHARE_TOLERANCE = 1e-12;
let folder = '';
let cases: [string, GoldenCase][] = [];
/** Damaged copies of some golden files (bit flips or a cut) and what Python's reader said. */
interface Damaged {
  case: string;
  flips?: [position: number, bit: number][];
  cut?: number;
  message: string | null; // null: Python read the file
}
let damaged: Damaged[] = [];
/** Files at and past the format's bounds (tests/reliability/bounds.py) and what Python said. */
interface Bound {
  case: string;
  file: string;
  message: string | null; // null: Python read the file
}
let bounds: Bound[] = [];

interface Golden {
  cases: Record<string, GoldenCase>;
  damaged?: Damaged[];
  bounds?: Bound[];
}

function runPython(outDir: string, ...extra: string[]): Golden {
  const python = process.env['LMSCOPE_PYTHON'] ?? path.join(ROOT, '.venv', 'bin', 'python');
  try {
    execFileSync(python, [path.join(ROOT, 'tests', 'fixtures', 'export_route_golden.py'), outDir, ...extra], {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'inherit'],
      timeout: 600_000,
      env: {...process.env, HF_HUB_OFFLINE: '1', TRANSFORMERS_VERBOSITY: 'error'},
    });
  } catch (e) {
    throw new Error(`the Python side (${python}) failed; run \`make setup\` or set LMSCOPE_PYTHON: ${String(e)}`);
  }
  return JSON.parse(readFileSync(path.join(outDir, 'golden.json'), 'utf8')) as Golden;
}

const BENCH_TRACE = process.env['LMSCOPE_BENCH_TRACE'];

before(() => {
  folder = mkdtempSync(path.join(tmpdir(), 'lmscope-golden-'));
  const golden = runPython(folder);
  cases = Object.entries(golden.cases);
  damaged = golden.damaged ?? [];
  bounds = golden.bounds ?? [];
  if (BENCH_TRACE) {
    const benchDir = path.join(folder, 'bench');
    cases.push(...Object.entries(runPython(benchDir, '--trace', path.resolve(BENCH_TRACE)).cases));
  }
});

after(() => {
  if (folder) rmSync(folder, {recursive: true, force: true});
});

function open(c: GoldenCase): TraceQueries {
  return new TraceQueries(readTraceFile(readFileSync(path.resolve(folder, c.file)), c.file));
}

/** Call `ask` and check it answers like Python: the same error, or `compare(result)`. */
function expectSame(answer: Answer, ask: () => unknown, compare: (ours: any) => void, what: string): void { // eslint-disable-line @typescript-eslint/no-explicit-any
  let ours: unknown;
  try {
    ours = ask();
  } catch (e) {
    if (answer.error === undefined) throw new Error(`${what}: Python answered, we threw ${String(e)}`);
    assert.ok(e instanceof Error);
    assert.equal(e.name, answer.error.type, `${what}: error type`);
    assert.equal(e.message, answer.error.message, `${what}: error message`);
    return;
  }
  assert.ok(answer.error === undefined, `${what}: Python raised ${answer.error?.type}: ${answer.error?.message}`);
  compare(ours);
}

test('routes and flows equal Python\'s for every family, output token, threshold and mode', () => {
  assert.ok(cases.length >= 6, 'a golden case per tiny family');
  let edges = 0, attentionHeads = 0, shares = 0;
  for (const [name, c] of cases) {
    const queries = open(c);
    assert.ok(c.routes.some(a => a.result !== undefined && a.result.edges.length > 0), `${name}: some route has edges`);
    for (const answer of c.routes) {
      const [token, threshold, mode] = answer.args as [number, number, ThresholdMode];
      const what = `${name} route(${token}, ${threshold}, ${mode})`;
      expectSame(answer, () => queries.route(token, threshold, mode), ours => {
        const theirs = answer.result;
        assert.deepEqual([ours.token, ours.threshold, ours.mode], [theirs.token, theirs.threshold, theirs.mode], what);
        // Edges: kinds, nodes, weights and per-head parts, bit for bit, in Python's order.
        assert.deepEqual(ours.edges, theirs.edges, `${what}: edges`);
        edges += ours.edges.length;
        attentionHeads += ours.edges.reduce((n: number, e: {heads: number[]}) => n + e.heads.length, 0);
        assert.deepEqual(ours.nodes.map((n: {id: NodeId}) => n.id), theirs.nodes.map((n: {id: NodeId}) => n.id), `${what}: nodes`);
        ours.nodes.forEach((n: {share: number}, i: number) => {
          const expected: number = theirs.nodes[i].share;
          assert.ok(Math.abs(n.share - expected) <= SHARE_TOLERANCE * Math.max(1, Math.abs(expected)), `${what}: share of node ${i}: ${n.share} vs ${expected}`);
          shares++;
        });
      }, what);
    }
  }
  // Not vacuous: attention edges with their heads, and node shares, were compared.
  assert.ok(edges > 0 && attentionHeads > 0 && shares > 0, `${edges} edges, ${attentionHeads} head parts, ${shares} shares compared`);
});

test('predictions, edge heads, FFN neuron pages and projections equal Python\'s, errors included', () => {
  // Per kind of question: how many answers were results and how many errors, both must occur.
  const seen: Record<string, {results: number; errors: number}> = {};
  const count = (kind: string, answer: Answer) => {
    const tally = (seen[kind] ??= {results: 0, errors: 0});
    if (answer.error === undefined) tally.results++;
    else tally.errors++;
  };
  for (const [name, c] of cases) {
    const queries = open(c);
    const tokens = [...Array(c.nTokens).keys(), -1, c.nTokens];
    c.predictions.forEach((answer, i) => {
      const token = tokens[i]!;
      expectSame(answer, () => queries.predictions(token), ours => {
        assert.deepEqual(ours.map((p: {token: string; prob: number}) => [p.token, p.prob]), answer.result, `${name} predictions(${token})`);
      }, `${name} predictions(${token})`);
      count('predictions', answer);
    });
    for (const answer of c.edgeHeads) {
      const [layer, target, source] = answer.args as [number, number, number];
      const what = `${name} edgeHeads(${answer.args.join(', ')})`;
      expectSame(answer, () => queries.edgeHeads(layer, target, source), ours => assert.deepEqual(ours, answer.result, what), what);
      count('edgeHeads', answer);
    }
    for (const answer of c.ffnNeurons) {
      const [layer, position, offset, limit] = answer.args as [number, number, number, number];
      const what = `${name} ffnNeurons(${answer.args.join(', ')})`;
      expectSame(answer, () => queries.ffnNeurons(layer, position, offset, limit), ours => assert.deepEqual(ours, answer.result, what), what);
      count('ffnNeurons', answer);
    }
    for (const answer of c.projections) {
      const [node, kind] = answer.args;
      const what = `${name} projection(${JSON.stringify(node)}, ${kind})`;
      expectSame(answer, () => queries.projection(node, kind), ours => assert.deepEqual(ours, answer.result, what), what);
      count('projections', answer);
    }
    for (const answer of c.ffnExperts) {
      const [layer, position] = answer.args as [number, number];
      const what = `${name} ffnExperts(${answer.args.join(', ')})`;
      expectSame(answer, () => queries.ffnExperts(layer, position), ours => assert.deepEqual(ours, answer.result, what), what);
      count('ffnExperts', answer);
    }
  }
  for (const kind of ['predictions', 'edgeHeads', 'ffnNeurons', 'projections', 'ffnExperts']) {
    const tally = seen[kind] ?? {results: 0, errors: 0};
    assert.ok(tally.results > 0 && tally.errors > 0, `${kind}: ${tally.results} results and ${tally.errors} errors compared (both must occur)`);
  }
});

test('MoE traces: the experts layout and stored neurons\' labels (L1.E2.N6) equal Python\'s; dense traces keep L1.N70', () => {
  const moe = cases.filter(([, c]) => ['mixtral', 'qwen2_moe', 'qwen3_moe', 'olmoe'].includes(c.family));
  assert.ok(moe.length >= 4, 'a golden case per MoE family');
  let expertLabels = 0;
  for (const [name, c] of cases) {
    const queries = open(c);
    assert.equal(queries.expertLayout === null, !moe.some(([n]) => n === name), `${name}: an experts layout exactly for MoE families`);
    for (const [layer, neuron, label] of c.neuronLabels) {
      assert.equal(queries.neuronLabel(layer, neuron), label, `${name}: neuron ${neuron} of layer ${layer}`);
      if (/^L\d+\.[ES]\d+\.N\d+$/.test(label)) expertLabels++;
    }
    const layout = queries.expertLayout;
    if (layout === null) continue;
    // Stored experts: one row per stored FFN node of a sparse layer, none elsewhere.
    const {neurons} = queries.trace;
    const sparseNodes = [...neurons.layer].filter((layer) => layout.isSparse(layer)).length;
    assert.equal(queries.trace.experts!.table.layer.length, sparseNodes, `${name}: an experts row per detailed sparse FFN node`);
    for (let layer = 0; layer < queries.nLayers; layer++) {
      assert.equal(queries.ffnWidth(layer), layout.isSparse(layer) ? layout.topK * layout.dExpert + layout.nShared * layout.dShared : layout.dDense);
    }
  }
  assert.ok(expertLabels > 0, 'expert neuron labels were compared');
});

test('damaged files are refused, or read, exactly as the Python reader does', () => {
  // Python's jsonschema names, among several schema errors, the one its heuristic ranks first
  // (shallowest, then greatest path); we name the first in file order. Only then may the two
  // messages name different fields.
  const schemaError = /: .* (is not one of|is not of type|is a required property|Additional properties)/;
  const otherField: string[] = [];
  for (const d of damaged) {
    const bytes = new Uint8Array(readFileSync(path.join(folder, `${d.case}.lmtrace`)));
    for (const [position, bit] of d.flips ?? []) bytes[position]! ^= 1 << bit;
    let ours: string | null = null;
    try {
      readTraceFile(d.cut === undefined ? bytes : bytes.subarray(0, d.cut), '{file}');
    } catch (e) {
      assert.ok(e instanceof TraceFileError, `${JSON.stringify(d)}: ${String(e)}`);
      ours = e.message;
    }
    const what = `${d.case} ${JSON.stringify(d.flips ?? {cut: d.cut})}`;
    assert.equal(ours === null, d.message === null, `${what}: Python says ${d.message}, we say ${ours}`);
    if (ours === d.message) continue;
    if (schemaError.test(ours!) && schemaError.test(d.message!)) otherField.push(`${what}: ${d.message} / ${ours}`);
    else assert.equal(ours, d.message, what);
  }
  // Both outcomes occur: damage the readers refuse, and damage (in float data) they both read.
  assert.ok(damaged.some(d => d.message === null) && damaged.some(d => d.message !== null), 'refused and read files');
  assert.ok(otherField.length <= damaged.length / 50, `multi-error files are rare, here:\n${otherField.join('\n')}`);
});

test('files at and past the format\'s bounds are refused, or read, exactly as the Python reader does', () => {
  // Values out of range, steps whose shares sum past 1, sizes, texts and lists past their
  // maximum, nesting below, at and above the limit (and past msgpack-python's own stack): each
  // bound of protocol/lmtrace.schema.json, the same message word for word.
  assert.ok(bounds.length > 100, `${bounds.length} bound cases`);
  for (const b of bounds) {
    let ours: string | null = null;
    try {
      readTraceFile(new Uint8Array(readFileSync(path.join(folder, b.file))), '{file}');
    } catch (e) {
      assert.ok(e instanceof TraceFileError, `${b.case}: ${String(e)}`);
      ours = e.message;
    }
    assert.equal(ours, b.message, b.case);
  }
  assert.ok(bounds.some(b => b.message === null) && bounds.some(b => b.message !== null), 'refused and read files');
});
