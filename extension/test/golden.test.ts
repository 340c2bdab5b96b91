// The TypeScript trace library answers exactly what the Python implementation answers.
//
// tests/fixtures/export_route_golden.py traces a prompt on every tiny model family, saves each
// .lmtrace and writes Python's answers from the saved file (routes for every output token x
// threshold x mode, predictions, edge heads, FFN neuron pages, projections, and the error
// cases). Here each file is read with lmtrace.ts and every answer compared: edges and nodes in
// the same order, weights and shares within 1e-6 (the worst differences are reported), stored
// numbers and error messages exactly. LMSCOPE_PYTHON overrides the interpreter.
//
// LMSCOPE_BENCH_TRACE=<a .lmtrace> (optional; e.g. 200 tokens of the default model) adds that
// file as one more case (routes for a few output tokens) and prints how long routes take on it.
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
}

const TOLERANCE = 1e-6;
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

function runPython(outDir: string, ...extra: string[]): {cases: Record<string, GoldenCase>; damaged?: Damaged[]} {
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
  return JSON.parse(readFileSync(path.join(outDir, 'golden.json'), 'utf8')) as {cases: Record<string, GoldenCase>; damaged?: Damaged[]};
}

const BENCH_TRACE = process.env['LMSCOPE_BENCH_TRACE'];

before(() => {
  folder = mkdtempSync(path.join(tmpdir(), 'lmscope-golden-'));
  const golden = runPython(folder);
  cases = Object.entries(golden.cases);
  damaged = golden.damaged ?? [];
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

test('routes and flows equal Python\'s for every family, output token, threshold and mode', t => {
  assert.ok(cases.length >= 6, 'a golden case per tiny family');
  let routes = 0, edges = 0, nodes = 0, worstWeight = 0, worstHead = 0, worstShare = 0, exactWeights = 0;
  for (const [name, c] of cases) {
    const queries = open(c);
    for (const answer of c.routes) {
      const [token, threshold, mode] = answer.args as [number, number, ThresholdMode];
      const what = `${name} route(${token}, ${threshold}, ${mode})`;
      expectSame(answer, () => queries.route(token, threshold, mode), ours => {
        const theirs = answer.result;
        routes++;
        assert.equal(ours.token, theirs.token, what);
        assert.equal(ours.threshold, theirs.threshold, what);
        assert.equal(ours.mode, theirs.mode, what);
        assert.equal(ours.edges.length, theirs.edges.length, `${what}: edge count`);
        ours.edges.forEach((e: any, i: number) => { // eslint-disable-line @typescript-eslint/no-explicit-any
          const p = theirs.edges[i];
          const where = `${what} edge ${i}`;
          assert.deepEqual([e.kind, e.source, e.target], [p.kind, p.source, p.target], where);
          const d = Math.abs(e.weight - p.weight);
          assert.ok(d <= TOLERANCE, `${where}: weight ${e.weight} vs ${p.weight}`);
          worstWeight = Math.max(worstWeight, d);
          if (d === 0) exactWeights++;
          assert.equal(e.heads.length, p.heads.length, where);
          e.heads.forEach((h: number, k: number) => {
            worstHead = Math.max(worstHead, Math.abs(h - p.heads[k]));
            assert.ok(Math.abs(h - p.heads[k]) <= TOLERANCE, `${where}: head ${k}`);
          });
          edges++;
        });
        assert.deepEqual(ours.nodes.map((n: {id: NodeId}) => n.id), theirs.nodes.map((n: {id: NodeId}) => n.id), `${what}: nodes`);
        ours.nodes.forEach((n: {share: number}, i: number) => {
          const d = Math.abs(n.share - theirs.nodes[i].share);
          worstShare = Math.max(worstShare, d);
          assert.ok(d <= TOLERANCE, `${what}: share of node ${i}`);
          nodes++;
        });
      }, what);
    }
  }
  t.diagnostic(`${routes} routes, ${edges} edges (${exactWeights} weights bit-identical), ${nodes} node shares compared`);
  t.diagnostic(`largest differences: weight ${worstWeight}, head ${worstHead}, share ${worstShare}`);
});

test('predictions, edge heads, FFN neuron pages and projections equal Python\'s, errors included', t => {
  let compared = 0;
  for (const [name, c] of cases) {
    const queries = open(c);
    const tokens = [...Array(c.nTokens).keys(), -1, c.nTokens];
    c.predictions.forEach((answer, i) => {
      const token = tokens[i]!;
      expectSame(answer, () => queries.predictions(token), ours => {
        assert.deepEqual(ours.map((p: {token: string; prob: number}) => [p.token, p.prob]), answer.result, `${name} predictions(${token})`);
      }, `${name} predictions(${token})`);
      compared++;
    });
    for (const answer of c.edgeHeads) {
      const [layer, target, source] = answer.args as [number, number, number];
      const what = `${name} edgeHeads(${answer.args.join(', ')})`;
      expectSame(answer, () => queries.edgeHeads(layer, target, source), ours => assert.deepEqual(ours, answer.result, what), what);
      compared++;
    }
    for (const answer of c.ffnNeurons) {
      const [layer, position, offset, limit] = answer.args as [number, number, number, number];
      const what = `${name} ffnNeurons(${answer.args.join(', ')})`;
      expectSame(answer, () => queries.ffnNeurons(layer, position, offset, limit), ours => assert.deepEqual(ours, answer.result, what), what);
      compared++;
    }
    for (const answer of c.projections) {
      const [node, kind] = answer.args;
      const what = `${name} projection(${JSON.stringify(node)}, ${kind})`;
      expectSame(answer, () => queries.projection(node, kind), ours => assert.deepEqual(ours, answer.result, what), what);
      compared++;
    }
  }
  t.diagnostic(`${compared} drill-down answers compared`);
});

test('damaged files are refused, or read, exactly as the Python reader does', t => {
  assert.ok(damaged.length > 0);
  // Python's jsonschema names, among several schema errors, the one its heuristic ranks first
  // (shallowest, then greatest path); we name the first in file order. Only then may the two
  // messages name different fields.
  const schemaError = /: .* (is not one of|is not of type|is a required property|Additional properties)/;
  let identical = 0;
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
    if (ours === d.message) identical++;
    else if (schemaError.test(ours!) && schemaError.test(d.message!)) otherField.push(`${what}: ${d.message} / ${ours}`);
    else assert.equal(ours, d.message, what);
  }
  t.diagnostic(`${damaged.length} damaged files: ${damaged.filter(d => d.message === null).length} read by both, ${identical} identical answers`);
  for (const line of otherField) t.diagnostic(`two schema errors, each names one: ${line}`);
  assert.ok(otherField.length <= damaged.length / 50, 'multi-error files are rare');
});

test('routes of the golden traces are fast enough for a slider', t => {
  for (const [name, c] of cases) {
    const queries = open(c);
    const start = performance.now();
    let count = 0;
    for (let token = 0; token < c.nTokens; token++) {
      for (const tau of [0.02, 0.04, 0.1]) {
        queries.route(token, tau, 'renormalize');
        count++;
      }
    }
    t.diagnostic(`${name}: ${((performance.now() - start) / count).toFixed(3)} ms per route`);
  }
});

test('a realistic trace (LMSCOPE_BENCH_TRACE) opens and re-routes quickly', {skip: BENCH_TRACE ? false : 'LMSCOPE_BENCH_TRACE is not set'}, t => {
  const bytes = readFileSync(BENCH_TRACE!);
  let start = performance.now();
  const trace = readTraceFile(bytes, BENCH_TRACE);
  const read = performance.now() - start;
  start = performance.now();
  const queries = new TraceQueries(trace);
  const index = performance.now() - start;
  const {nTokens, nLayers, nHeads, nEdges} = trace.dims;
  t.diagnostic(`${BENCH_TRACE}: ${(bytes.length / 1e6).toFixed(1)} MB, n=${nTokens}, L=${nLayers}, H=${nHeads}, E=${nEdges}`);
  t.diagnostic(`read + validate ${read.toFixed(1)} ms, index ${index.toFixed(1)} ms`);
  for (const mode of ['renormalize', 'raw'] as const) {
    for (const tau of [0.01, 0.02, 0.04, 0.06, 0.1]) {
      const times: number[] = [];
      let edges = 0;
      for (let rep = 0; rep < 5; rep++) {
        start = performance.now();
        edges = queries.route(-1, tau, mode).edges.length;
        times.push(performance.now() - start);
      }
      times.sort((a, b) => a - b);
      t.diagnostic(`${mode} τ=${tau}: ${edges} edges, first ${times[0]!.toFixed(2)}..median ${times[2]!.toFixed(2)} ms (route + flow + nodes)`);
    }
  }
});
