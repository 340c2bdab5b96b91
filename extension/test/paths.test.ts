// Where Trace Selection saves traces: slugs, the traces folder, never overwriting.
import assert from 'node:assert/strict';
import path from 'node:path';
import {test} from 'node:test';
import {slugify, tracePath, tracesDir} from '../host/paths';

test('a prompt becomes a lower-case, dash-separated, ASCII slug', () => {
  assert.equal(slugify('When Mary and John went to the store, John gave a drink to'), 'when-mary-and-john-went-to-the-store-john-gave-a');
  assert.equal(slugify('  Héllo,   wörld!  '), 'hello-world');
  assert.equal(slugify('<img src=x onerror=alert(1)>'), 'img-src-x-onerror-alert-1');
});

test('a prompt with nothing slug-worthy becomes "trace"', () => {
  assert.equal(slugify(''), 'trace');
  assert.equal(slugify('日本語 ✓ …'), 'trace');
  assert.equal(slugify('../../etc/passwd'), 'etc-passwd');
});

test('slugs are at most 48 characters and never end with a dash', () => {
  for (const prompt of ['a'.repeat(200), 'word '.repeat(40), 'x'.repeat(47) + ' yz']) {
    const slug = slugify(prompt);
    assert.ok(slug.length <= 48, slug);
    assert.ok(!slug.endsWith('-'), slug);
  }
});

test('the traces folder is relative to the traced file, or absolute as given', () => {
  assert.equal(tracesDir('/work/exp/prompts.md', 'traces', path.posix), '/work/exp/traces');
  assert.equal(tracesDir('/work/exp/prompts.md', '', path.posix), '/work/exp/traces');
  assert.equal(tracesDir('/work/exp/prompts.md', '/tmp/all-traces', path.posix), '/tmp/all-traces');
  assert.equal(tracesDir('C:\\exp\\p.py', 'traces', path.win32), 'C:\\exp\\traces');
});

test('an untitled editor has no folder for a relative traces setting', () => {
  assert.equal(tracesDir(null, 'traces', path.posix), null);
  assert.equal(tracesDir(null, '/abs', path.posix), '/abs');
});

test('a trace path never overwrites an earlier trace of the same prompt', () => {
  const taken = new Set(['/t/hello.lmtrace', '/t/hello-2.lmtrace']);
  assert.equal(tracePath('/t', 'Hello', (p) => taken.has(p), path.posix), '/t/hello-3.lmtrace');
  assert.equal(tracePath('/t', 'Other', (p) => taken.has(p), path.posix), '/t/other.lmtrace');
});

test('a relative traces setting that climbs out of the file\'s folder is refused', () => {
  for (const setting of ['..', '../out/t', '../../etc', 'traces/../../x', '  ../x  ']) {
    assert.throws(() => tracesDir('/work/exp/prompts.md', setting, path.posix), /leads outside the traced file's folder/, setting);
    assert.throws(() => tracesDir(null, setting, path.posix), /leads outside/, setting);
  }
  assert.throws(() => tracesDir('C:\\exp\\p.py', '..\\..\\x', path.win32), /leads outside/);
  assert.equal(tracesDir('/work/exp/prompts.md', 'traces/../t', path.posix), '/work/exp/t');
  assert.equal(tracesDir('/work/exp/prompts.md', './a/b', path.posix), '/work/exp/a/b');
});

test('a trace path always lies in its folder, whatever the prompt says', () => {
  for (const prompt of ['../../etc/passwd', '..', '/abs/olute', 'a/../../b', '..\\..\\win']) {
    const file = tracePath('/work/exp/traces', prompt, () => false, path.posix);
    assert.equal(path.posix.dirname(file), '/work/exp/traces', prompt);
    assert.ok(!file.includes('..'), file);
  }
});
