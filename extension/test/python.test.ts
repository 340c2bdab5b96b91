// Which Python runs the daemon, and how it is restarted after crashes.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {test} from 'node:test';
import {daemonArgs, probeArgs, probeLmscope, resolveInterpreter, restartDelay} from '../host/python';
import {ROOT} from './helpers';

// The project's Python (LMSCOPE_PYTHON, as the other tests), else the checkout's .venv.
const VENV_PYTHON = process.env['LMSCOPE_PYTHON'] ?? path.join(ROOT, '.venv', 'bin', 'python');

test('the lmscope.python setting wins over the Python extension', () => {
  const found = resolveInterpreter({setting: ' /opt/venv/bin/python ', pythonExtension: ['/usr/bin/python3.11'], platform: 'linux'});
  assert.deepEqual(found, {command: '/opt/venv/bin/python', args: [], source: 'setting'});
});

test('the setting expands ${workspaceFolder} and ~', () => {
  const base = {pythonExtension: undefined, platform: 'linux' as const, workspaceFolder: '/ws', home: '/home/u'};
  assert.equal(resolveInterpreter({...base, setting: '${workspaceFolder}/.venv/bin/python'}).command, '/ws/.venv/bin/python');
  assert.equal(resolveInterpreter({...base, setting: '~/venv/bin/python'}).command, '/home/u/venv/bin/python');
});

test("the Python extension's interpreter is used when the setting is empty, with its arguments", () => {
  const found = resolveInterpreter({setting: '', pythonExtension: ['conda', 'run', '-n', 'x', 'python'], platform: 'linux'});
  assert.deepEqual(found, {command: 'conda', args: ['run', '-n', 'x', 'python'], source: 'python-extension'});
  assert.deepEqual(daemonArgs(found), ['run', '-n', 'x', 'python', '-m', 'lmscope', 'serve']);
});

test('without a setting or the Python extension: python3, or python on Windows', () => {
  assert.deepEqual(resolveInterpreter({setting: undefined, pythonExtension: undefined, platform: 'linux'}), {command: 'python3', args: [], source: 'default'});
  assert.equal(resolveInterpreter({setting: '', pythonExtension: [], platform: 'win32'}).command, 'python');
});

test('the daemon runs as `-m lmscope serve` (the language client appends --stdio)', () => {
  const python = resolveInterpreter({setting: 'py', pythonExtension: undefined, platform: 'linux'});
  assert.deepEqual(daemonArgs(python), ['-m', 'lmscope', 'serve']);
  assert.equal(probeArgs(python)[0], '-c');
  assert.match(probeArgs(python)[1]!, /import lmscope/);
});

test('restarts back off 1, 2, 4 ... s, capped, then stop', () => {
  assert.deepEqual([1, 2, 3, 4, 5].map((n) => restartDelay(n)), [1000, 2000, 4000, 8000, 16000]);
  assert.equal(restartDelay(6), null);
  assert.equal(restartDelay(7, 10), 30000);
});

test('the probe finds lmscope in the project venv, and says what is wrong otherwise', {skip: !fs.existsSync(VENV_PYTHON) && `no ${VENV_PYTHON}`}, async () => {
  const ok = await probeLmscope({command: VENV_PYTHON, args: [], source: 'setting'});
  assert.equal(ok.ok, true);
  const missing = await probeLmscope({command: '/nonexistent/python3', args: [], source: 'setting'});
  assert.ok(!missing.ok && /was not found/.test(missing.message), JSON.stringify(missing));
  // -I: isolated mode ignores PYTHONPATH and user site; -S also drops site-packages.
  const bare = await probeLmscope({command: VENV_PYTHON, args: ['-I', '-S'], source: 'setting'});
  assert.ok(!bare.ok && /does not have the lmscope package installed/.test(bare.message), JSON.stringify(bare));
});
