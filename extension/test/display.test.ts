// One token display everywhere: shared/display.ts against the shared test vectors
// (tests/fixtures/token_display.json), which tests/test_token_display.py checks against the
// Python twin (lmscope.traces.text), and the trace reader's `extra["lmscope.tokenBytes"]`.
import assert from 'node:assert/strict';
import {readFileSync} from 'node:fs';
import path from 'node:path';
import {test} from 'node:test';
import {
  bytesFromHex, clip, cssColour, displayToken, edgeColour, isBytePiece, nodeColour, nodeName, nodeOpacity, nodeRadius,
  quotedToken, rowLabel, tokenHints,
} from '../shared/display';
import {nodeLabel} from '../shared/graph/routes';
import {COLOURS, EDGE_VOCABULARY, NODE_SIZES, NODE_VOCABULARY, TOKEN_DISPLAY, VOCABULARY} from '../shared/protocol/vocabulary';
import type {NodeKind} from '../shared/protocol/types';
import {readTraceFile, TraceFileError} from '../shared/traces/lmtrace';
import {checkTokenBytes} from '../shared/traces/wire';
import {encodeWire, ROOT, syntheticWire} from './helpers';

interface DisplayCase {
  note: string;
  text: string;
  repeat?: number;
  bytes?: string;
  max?: number;
  display: string;
  displayRepeat?: number;
  hints?: (keyof typeof TOKEN_DISPLAY.hints)[];
}
interface Vectors {
  display: DisplayCase[];
  clip: {text: string; max: number; clipped: string}[];
  tokenBytes: {note: string; extra: Record<string, unknown>; nTokens: number; nVocabulary: number; problem: string | null}[];
}
const VECTORS = JSON.parse(readFileSync(path.join(ROOT, 'tests', 'fixtures', 'token_display.json'), 'utf8')) as Vectors;

test('tokens display as the shared vectors say (the Python twin is held to the same)', () => {
  for (const c of VECTORS.display) {
    const text = c.text.repeat(c.repeat ?? 1);
    const bytes = c.bytes === undefined ? null : bytesFromHex(c.bytes) ?? new Uint8Array(0);
    const options = c.max === undefined ? {bytes} : {bytes, max: c.max};
    assert.equal(displayToken(text, options), c.display.repeat(c.displayRepeat ?? 1), c.note);
    if (c.hints !== undefined) {
      assert.deepEqual(tokenHints(text, bytes), c.hints.map(key => TOKEN_DISPLAY.hints[key]), c.note);
    }
  }
});

test('clip cuts displayed text as the shared vectors say', () => {
  for (const c of VECTORS.clip) assert.equal(clip(c.text, c.max), c.clipped, c.text);
});

test('stored token bytes are checked as the shared vectors say, with Python\'s messages', () => {
  for (const c of VECTORS.tokenBytes) assert.equal(checkTokenBytes(c.extra, c.nTokens, c.nVocabulary), c.problem, c.note);
});

test('a megabyte token costs what its shown part costs: max + 1 characters are looked at', () => {
  const characters = '\u200b'.repeat(1 << 20);
  let lookedAt = 0;
  // A string whose iteration is counted: displayToken walks a token by code points.
  const token = Object.assign(new String(characters), {
    *[Symbol.iterator]() {
      for (const ch of characters) {
        lookedAt++;
        yield ch;
      }
    },
  }) as unknown as string;
  assert.equal(displayToken(token, {max: 12}), '\\u200b…');
  assert.ok(lookedAt > 0 && lookedAt <= 13, `${lookedAt} characters looked at`);
});

test('a display holds no control, format or invisible character', () => {
  const hidden = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Zl}\p{Zp}]/u;
  for (const c of VECTORS.display) {
    const bytes = c.bytes === undefined ? null : bytesFromHex(c.bytes);
    assert.ok(!hidden.test(displayToken(c.text, {bytes, max: 200})), c.note);
  }
});

test('quoted tokens and byte pieces', () => {
  assert.equal(quotedToken(' Mary'), '“·Mary”');
  assert.ok(isBytePiece(bytesFromHex('e280')) && !isBytePiece(bytesFromHex('c3a9')) && !isBytePiece(null));
  assert.equal(bytesFromHex(''), null);
});

test('the trace reader gives the stored bytes of byte pieces, and refuses malformed ones', () => {
  const plain = readTraceFile(encodeWire(syntheticWire()));
  assert.deepEqual(plain.tokens.bytes, [null, null, null]);
  assert.equal(plain.vocabularyBytes.size, 0);
  const wire = syntheticWire();
  wire.extra['lmscope.tokenBytes'] = {tokens: ['', 'e280', ''], vocabulary: ['', '', '', '', '', '', '', '', '', 'ff']};
  const trace = readTraceFile(encodeWire(wire));
  assert.deepEqual(trace.tokens.bytes.map(b => (b === null ? null : [...b])), [null, [0xe2, 0x80], null]);
  assert.deepEqual([...trace.vocabularyBytes].map(([id, b]) => [id, [...b]]), [[9, [0xff]]]);
  assert.ok(Object.isFrozen(trace.tokens.bytes));
  assert.equal(displayToken(trace.tokens.strings[1]!, {bytes: trace.tokens.bytes[1]}), '⟨E2 80⟩');
  wire.extra['lmscope.tokenBytes'] = {tokens: ['', 'E280', ''], vocabulary: []};
  assert.throws(
    () => readTraceFile(encodeWire(wire), 'x.lmtrace'),
    (e: unknown) =>
      e instanceof TraceFileError &&
      e.message === 'corrupt trace file x.lmtrace: extra.lmscope.tokenBytes.tokens[1]: not a string of lowercase hex byte pairs',
  );
});

test('node names, row labels, colours and sizes come from the vocabulary', () => {
  const kinds: NodeKind[] = ['embedding', 'post_attention', 'ffn', 'residual'];
  for (const kind of kinds) {
    const node = {kind, layer: 23, position: 14};
    assert.equal(nodeName(node), nodeLabel(node)); // routes.ts writes the same labels
    assert.ok(NODE_VOCABULARY[kind].legend.startsWith(`${NODE_VOCABULARY[kind].letter}:`));
    assert.ok(nodeColour(kind) in COLOURS);
  }
  assert.equal(nodeName({kind: 'embedding', layer: 0, position: 3}), 'X3');
  assert.equal(nodeName({kind: 'ffn', layer: 29, position: 14}), 'M29.14');
  assert.equal(rowLabel(-1), VOCABULARY.embeddingRow);
  assert.equal(rowLabel(4), 'L4');
  assert.equal(edgeColour('attention'), EDGE_VOCABULARY.attention.colour);
  assert.equal(cssColour('attention'), `var(${COLOURS.attention.themeVar}, ${COLOURS.attention.hex})`);
  assert.equal(nodeRadius(1, 10), 10);
  assert.equal(nodeRadius(0, 10), 10 * NODE_SIZES.base);
  assert.equal(nodeRadius(Number.NaN, 10), 10 * NODE_SIZES.base);
  assert.equal(nodeOpacity(1), 1);
});

test('the vocabulary matches what Python reads (lmscope.protocol.vocabulary)', () => {
  const raw = JSON.parse(readFileSync(path.join(ROOT, 'protocol', 'vocabulary.json'), 'utf8')) as Record<string, unknown>;
  const strip = (value: unknown): unknown =>
    Array.isArray(value)
      ? value.map(strip)
      : value !== null && typeof value === 'object'
        ? Object.fromEntries(Object.entries(value).filter(([k]) => !k.startsWith('$')).map(([k, v]) => [k, strip(v)]))
        : value;
  assert.deepEqual(VOCABULARY, strip(raw));
});
