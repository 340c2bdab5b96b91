// Where Trace Selection saves traces and what it calls them: slugs, keys, model tags, the
// traces folder; the same prompt and model replace their trace, nothing else does.
import assert from 'node:assert/strict';
import path from 'node:path';
import {test} from 'node:test';
import {MAX_MODEL_TAG, MAX_SLUG, modelTag, slugify, traceFileName, tracePath, tracesDir} from '../host/paths';

const SMOL = 'SmolLM2-135M-Instruct';
const IOI = 'When Mary and John went to the store, John gave a drink to';

test('a prompt becomes a lower-case, dash-separated, ASCII slug', () => {
  assert.equal(slugify('The capital of France is'), 'the-capital-of-france-is');
  assert.equal(slugify('  Héllo,   wörld!  '), 'hello-world');
  assert.equal(slugify('<img src=x onerror=alert(1)>'), 'img-src-x-onerror-alert-1');
});

test('a prompt with nothing slug-worthy becomes "trace"', () => {
  assert.equal(slugify(''), 'trace');
  assert.equal(slugify('日本語 ✓ …'), 'trace');
  assert.equal(slugify('../../etc/passwd'), 'etc-passwd');
});

test('a long prompt keeps its first and its last words in the slug', () => {
  assert.equal(slugify(IOI), 'when-mary-and-john--a-drink-to');
  assert.equal(slugify(IOI.replace('drink', 'book')), 'when-mary-and-john--a-book-to');
});

test('slugs are short and never start or end with a dash', () => {
  for (const prompt of ['a'.repeat(200), 'word '.repeat(40), 'x'.repeat(47) + ' yz', `${'y'.repeat(40)} end`, `start ${'z'.repeat(40)}`, IOI]) {
    const slug = slugify(prompt);
    assert.ok(slug.length <= MAX_SLUG, slug);
    assert.match(slug, /^[a-z0-9]+(-{1,2}[a-z0-9]+)*$/, slug);
  }
});

test('a model name becomes a short tag', () => {
  assert.equal(modelTag(SMOL), 'smollm2-135m');
  assert.equal(modelTag('gpt2'), 'gpt2');
  assert.equal(modelTag('Qwen/Qwen2.5-0.5B-Instruct'), 'qwen2-5-0-5b');
  assert.equal(modelTag('/home/me/runs/checkpoint-200/'), 'checkpoint-200');
  assert.equal(modelTag('…'), 'model');
  for (const name of ['a'.repeat(100), 'Meta-Llama-3.1-8B-Instruct-GGUF-Q4_K_M']) assert.ok(modelTag(name).length <= MAX_MODEL_TAG, name);
});

test('a base with a merged adapter gets its own model tag, never the base\'s', () => {
  assert.equal(modelTag(`${SMOL} + poems`), 'smollm2+poems');
  assert.equal(modelTag('Qwen/Qwen2.5-0.5B + /home/me/loras/sql-lora-r16'), 'qwen2-5+sql-lor');
  assert.notEqual(modelTag(`${SMOL} + poems`), modelTag(SMOL));
  for (const name of [`${'a'.repeat(40)} + ${'b'.repeat(40)}`, ' + ', `${SMOL} + …`]) {
    assert.ok(modelTag(name).length <= MAX_MODEL_TAG, name);
    assert.match(modelTag(name), /^[a-z0-9-]+\+[a-z0-9-]+$/, name);
  }
  assert.notEqual(traceFileName(IOI, `${SMOL} + poems`), traceFileName(IOI, SMOL));
});

test('a trace file is named slug, key, model tag, with the slug and the key first', () => {
  const name = traceFileName(IOI, SMOL);
  assert.match(name, /^when-mary-and-john--a-drink-to-[0-9a-f]{4}\.smollm2-135m\.lmtrace$/);
  assert.match(traceFileName('The capital of France is', 'gpt2'), /^the-capital-of-france-is-[0-9a-f]{4}\.gpt2\.lmtrace$/);
});

test('tracing the same prompt with the same model again names the same file (it replaces the old trace)', () => {
  assert.equal(tracePath('/t', IOI, SMOL, path.posix), tracePath('/t', IOI, SMOL, path.posix));
});

test('prompts that share a slug get names that differ within the first 40 characters', () => {
  const variants = [
    IOI,
    IOI.toLowerCase(),
    IOI.replace(',', ''),
    IOI.replace('the store', 'the big store'), // the elided middle differs
    `${IOI}.`,
  ];
  const names = variants.map((p) => traceFileName(p, SMOL));
  assert.equal(new Set(names).size, variants.length, names.join('\n'));
  assert.equal(new Set(names.map((n) => n.slice(0, 40))).size, variants.length, names.join('\n'));
});

test('the same prompt traced by another model never replaces the first model\'s trace', () => {
  assert.notEqual(traceFileName(IOI, SMOL), traceFileName(IOI, 'gpt2'));
  // Names whose tags are cut to the same 16 characters still differ, in the key.
  const a = 'Meta-Llama-3.1-8B-Instruct', b = 'Meta-Llama-3.1-8B';
  assert.equal(modelTag(a), modelTag(b));
  assert.notEqual(traceFileName(IOI, a), traceFileName(IOI, b));
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
    const file = tracePath('/work/exp/traces', prompt, '../../m', path.posix);
    assert.equal(path.posix.dirname(file), '/work/exp/traces', prompt);
    assert.ok(!file.includes('..'), file);
  }
});
