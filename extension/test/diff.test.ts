// shared/diff/diff.ts against Python's `Trace.diff` on the same files: tests/fixtures/
// export_diff_golden.py traces three prompts on a tiny random-init Llama, saves them and writes
// the diff of several pairs (equal counts, raw mode, a trace with itself, another output token,
// align-last, explicit pairs, and the refusal of different counts). Each answer is compared row
// for row: same order, same memberships and ids, numbers within float rounding (node shares are
// sums whose order differs between the languages, as in golden.test.ts). LMSCOPE_PYTHON
// overrides the interpreter.
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import {mkdtempSync, readFileSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {align, diffTraces, type DiffOptions} from '../shared/diff/diff';
import {LmscopeError} from '../shared/errors';
import {readTraceFile} from '../shared/traces/lmtrace';
import {TraceQueries} from '../shared/traces/trace';
import {ROOT} from './helpers';

interface PythonCase {
  a: string;
  b: string;
  options: {threshold?: number; renormalize?: boolean; token_a?: number; token_b?: number; align_last?: number; pairs?: [number, number][]};
  result?: unknown;
  error?: string;
}

let folder = '';
let cases: PythonCase[] = [];

before(() => {
  folder = mkdtempSync(path.join(tmpdir(), 'lmscope-diff-'));
  const python = process.env['LMSCOPE_PYTHON'] ?? path.join(ROOT, '.venv', 'bin', 'python');
  execFileSync(python, [path.join(ROOT, 'tests', 'fixtures', 'export_diff_golden.py'), folder], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'inherit'],
    timeout: 300_000,
    env: {...process.env, HF_HUB_OFFLINE: '1', TRANSFORMERS_VERBOSITY: 'error'},
  });
  cases = JSON.parse(readFileSync(path.join(folder, 'diff.json'), 'utf8')) as PythonCase[];
});

after(() => {
  if (folder) rmSync(folder, {recursive: true, force: true});
});

function open(name: string): TraceQueries {
  return new TraceQueries(readTraceFile(readFileSync(path.join(folder, `${name}.lmtrace`)), name));
}

function close(found: unknown, expected: unknown, where: string): void {
  if (typeof expected === 'number') {
    assert.equal(typeof found, 'number', where);
    assert.ok(Math.abs((found as number) - expected) <= 1e-12 + 1e-9 * Math.abs(expected), `${where}: ${String(found)} != ${expected}`);
  } else if (Array.isArray(expected)) {
    assert.ok(Array.isArray(found) && found.length === expected.length, `${where}: length`);
    expected.forEach((e, k) => close((found as unknown[])[k], e, `${where}[${k}]`));
  } else if (expected !== null && typeof expected === 'object') {
    assert.deepEqual(Object.keys(found as object).sort(), Object.keys(expected).sort(), where);
    for (const [key, e] of Object.entries(expected)) close((found as Record<string, unknown>)[key], e, `${where}.${key}`);
  } else {
    assert.equal(found, expected, where);
  }
}

test('the TypeScript diff equals Python’s on the same files, row for row', () => {
  assert.ok(cases.length >= 7);
  for (const c of cases) {
    const o = c.options;
    const options: DiffOptions = {
      threshold: o.threshold,
      mode: o.renormalize === false ? 'raw' : 'renormalize',
      tokenA: o.token_a,
      tokenB: o.token_b,
      alignLast: o.align_last,
      pairs: o.pairs,
    };
    const where = `${c.a} vs ${c.b} ${JSON.stringify(o)}`;
    if (c.error !== undefined) {
      assert.throws(() => diffTraces(open(c.a), open(c.b), options), (e: unknown) => e instanceof LmscopeError && e.message.startsWith(c.error!.split(';')[0]!), where);
      continue;
    }
    close(diffTraces(open(c.a), open(c.b), options), c.result, where);
  }
});

test('a diff of a trace with itself is all zero and on both routes', () => {
  const a = open('a');
  const diff = diffTraces(a, a, {threshold: 0.01});
  assert.ok(diff.edges.length > 0);
  for (const row of [...diff.edges, ...diff.nodes]) {
    assert.equal(row.delta, 0);
    assert.equal(row.membership, 'both');
  }
});

test('alignments are checked as Python checks them', () => {
  assert.deepEqual(align(3, 3).pairs, [[0, 0], [1, 1], [2, 2]]);
  assert.deepEqual(align(5, 3, 2).pairs, [[3, 1], [4, 2]]);
  assert.throws(() => align(5, 3), /different token counts \(A 5, B 3\).*--align-last K/);
  assert.throws(() => align(5, 3, undefined, [[1, 1], [0, 2]]), /must increase/);
  assert.throws(() => align(5, 3, undefined, [[5, 0]]), /not in A/);
});
