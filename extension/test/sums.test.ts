// NumPy's summation orders (shared/traces/sums.ts), compared with NumPy itself, bit for bit:
// routes match Python's exactly only if these do. The golden traces have few heads (short
// sums); here every code path is covered: under 8, the unrolled blocks up to 128, the pairwise
// split above, and the 8192-item buffers of a float64 sum of float32 data.
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import path from 'node:path';
import {test} from 'node:test';
import {numpySum64, pairwiseSum32, pySum} from '../shared/traces/sums';
import {ROOT, seededRandom} from './helpers';

const PYTHON = process.env['LMSCOPE_PYTHON'] ?? path.join(ROOT, '.venv', 'bin', 'python');
const LENGTHS = [1, 5, 7, 8, 9, 16, 37, 127, 128, 129, 255, 1000, 8191, 8192, 8193, 20000, 50000];
const NUMPY_SUMS = `
import json, sys
import numpy as np
out = []
for values in json.load(sys.stdin):
    a = np.array(values, dtype=np.float32)
    out.append([float(a.sum()), float(a.sum(dtype=np.float64)), sum(float(v) for v in a)])
print(json.dumps(out))
`;

test('float32 and float64 sums equal NumPy\'s (and Python\'s sum), bit for bit', () => {
  const random = seededRandom(20250101);
  // Mixed signs and magnitudes, so any other order rounds differently.
  const arrays = LENGTHS.map((n) => Float32Array.from({length: n}, () => (random() - 0.3) * 10 ** Math.floor(random() * 6 - 3)));
  let numpy: [number, number, number][];
  try {
    const input = JSON.stringify(arrays.map((a) => Array.from(a)));
    numpy = JSON.parse(execFileSync(PYTHON, ['-c', NUMPY_SUMS], {input, encoding: 'utf8', maxBuffer: 64 << 20}));
  } catch (e) {
    throw new Error(`the Python side (${PYTHON}) failed; run \`make setup\` or set LMSCOPE_PYTHON: ${String(e)}`);
  }
  arrays.forEach((a, k) => {
    const [sum32, sum64, builtin] = numpy[k]!;
    assert.equal(pairwiseSum32(a, 0, a.length), sum32, `float32 sum of ${a.length}`);
    assert.equal(numpySum64(Float64Array.from(a), a.length), sum64, `float64 sum of ${a.length}`);
    assert.equal(pySum(Array.from(a)), builtin, `Python's sum of ${a.length}`);
  });
  // An offset run, as routes.ts sums one edge's heads inside the whole [E, H] array.
  const whole = arrays[10]!;
  assert.equal(pairwiseSum32(whole, 300, 37), pairwiseSum32(whole.slice(300, 337), 0, 37));
});
