// The protocol's defaults, written once in its schemas: the generated DEFAULTS and
// PARAM_DEFAULTS (protocol/generate-ts.mjs) are exactly what the daemon reads from the same
// schemas (lmscope.protocol.defaults), and the bounds the editor puts on a threshold are the
// schema's. (The manifest's setting defaults are checked in manifest.test.ts.)
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import {readFileSync} from 'node:fs';
import path from 'node:path';
import {test} from 'node:test';
import {DEFAULTS, PARAM_DEFAULTS} from '../shared/protocol/types';
import {graphThreshold, THRESHOLD_RANGE} from '../shared/webviewMessages';
import {ROOT} from './helpers';

const PYTHON = process.env['LMSCOPE_PYTHON'] ?? path.join(ROOT, '.venv', 'bin', 'python');
const PYTHON_DEFAULTS = `
import json
from lmscope.protocol.defaults import param_defaults, shared_default
from lmscope.protocol.files import METHODS, SCHEMAS
common = SCHEMAS["common.schema.json"]["$defs"]
print(json.dumps({
    "shared": {name: shared_default(name) for name, d in common.items() if "default" in d},
    "params": {name: param_defaults(name) for name, m in METHODS.items() if m.kind == "request"},
}))
`;

test('DEFAULTS and PARAM_DEFAULTS are what the daemon reads from the schemas', () => {
  let python: {shared: Record<string, unknown>; params: Record<string, unknown>};
  try {
    python = JSON.parse(execFileSync(PYTHON, ['-c', PYTHON_DEFAULTS], {cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit']}));
  } catch (e) {
    throw new Error(`the Python side (${PYTHON}) failed; run \`make setup\` or set LMSCOPE_PYTHON: ${String(e)}`);
  }
  assert.deepEqual(DEFAULTS, python.shared);
  assert.deepEqual(PARAM_DEFAULTS, python.params);
  // The ones the editor relies on, spelled out (a schema change shows up here first).
  assert.deepEqual(DEFAULTS, {ThresholdMode: 'renormalize', Threshold: 0.04, MinThreshold: 0.01, DetailScope: 'route', TokenPosition: -1, DeviceRequest: 'cpu'});
  assert.deepEqual(PARAM_DEFAULTS['lmscope/route'], {token: -1, mode: 'renormalize'}, 'threshold is required: no default');
  assert.deepEqual(PARAM_DEFAULTS['lmscope/ffnNeurons'], {offset: 0, limit: 50});
});

test('a graph threshold is clamped to the bounds of a trace\'s minThreshold in the schema', () => {
  const common = JSON.parse(readFileSync(path.join(ROOT, 'protocol', 'schemas', 'common.schema.json'), 'utf8'));
  const {minimum, maximum} = common.$defs.MinThreshold;
  assert.deepEqual(THRESHOLD_RANGE, {min: minimum, max: maximum});
  assert.equal(graphThreshold(0.07), 0.07);
  assert.equal(graphThreshold(0), THRESHOLD_RANGE.min);
  assert.equal(graphThreshold(3), THRESHOLD_RANGE.max);
  for (const bad of [NaN, Infinity, '0.1', undefined, null]) assert.equal(graphThreshold(bad), DEFAULTS.Threshold, String(bad));
});
