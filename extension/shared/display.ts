// How every view shows what the graph holds: tokens, node labels, colours, sizes, legends.
//
// The rules are protocol/vocabulary.json's (generated into ./protocol/vocabulary.ts); Python's
// twin is lmscope.traces.text (`display_token`, `clip`, `token_hints`) with
// lmscope.protocol.vocabulary, and the shared test vectors (tests/fixtures/token_display.json)
// hold both to the same output. Browser-safe: ES2022 only.
//
// A token's display is still untrusted text: set it with textContent, never as HTML.
import {
  COLOURS,
  EDGE_VOCABULARY,
  EMBEDDING_ROW,
  LAYER_ROW,
  NODE_SIZES,
  NODE_VOCABULARY,
  TOKEN_DISPLAY,
  type ColourName,
} from './protocol/vocabulary';
import type {EdgeKind, NodeId, NodeKind} from './protocol/types';

const category = (names: readonly string[]) => new RegExp(`^[${names.map(c => `\\p{${c}}`).join('')}]$`, 'u');
const CONTROL = category(TOKEN_DISPLAY.control);
const INVISIBLE = category(TOKEN_DISPLAY.invisible);
const INVISIBLE_CODE_POINTS: ReadonlySet<number> = new Set(TOKEN_DISPLAY.invisibleCodePoints);
const VISIBLE: Readonly<Record<string, string>> = TOKEN_DISPLAY.visible;

/** How one character (code point) is shown: the vocabulary's rules, in order. */
function unit(ch: string): string {
  const shown = VISIBLE[ch];
  if (shown !== undefined) return shown;
  const code = ch.codePointAt(0)!;
  if (CONTROL.test(ch)) return `\\x${code.toString(16).padStart(2, '0')}`;
  if (INVISIBLE.test(ch) || INVISIBLE_CODE_POINTS.has(code)) {
    return code < 0x10000 ? `\\u${code.toString(16).padStart(4, '0')}` : `\\u{${code.toString(16)}}`;
  }
  return ch;
}

/**
 * The length of the well-formed UTF-8 sequence starting at `bytes[i]` (Unicode's table 3-7: no
 * overlong forms, no surrogates, nothing past U+10FFFF), 0 if there is none.
 */
function utf8Length(bytes: Uint8Array, i: number): number {
  const lead = bytes[i]!;
  if (lead < 0x80) return 1;
  let n: number, low: number, high: number;
  if (lead >= 0xc2 && lead <= 0xdf) [n, low, high] = [2, 0x80, 0xbf];
  else if (lead === 0xe0) [n, low, high] = [3, 0xa0, 0xbf];
  else if (lead === 0xed) [n, low, high] = [3, 0x80, 0x9f];
  else if (lead >= 0xe1 && lead <= 0xef) [n, low, high] = [3, 0x80, 0xbf];
  else if (lead === 0xf0) [n, low, high] = [4, 0x90, 0xbf];
  else if (lead >= 0xf1 && lead <= 0xf3) [n, low, high] = [4, 0x80, 0xbf];
  else if (lead === 0xf4) [n, low, high] = [4, 0x80, 0x8f];
  else return 0;
  if (i + n > bytes.length || bytes[i + 1]! < low || bytes[i + 1]! > high) return 0;
  for (let k = i + 2; k < i + n; k++) if (bytes[k]! < 0x80 || bytes[k]! > 0xbf) return 0;
  return n;
}

/** The character a well-formed UTF-8 sequence of `n` bytes at `i` encodes. */
function decodeAt(bytes: Uint8Array, i: number, n: number): string {
  const lead = bytes[i]!;
  let code = n === 1 ? lead : lead & (0xff >> (n + 1));
  for (let k = 1; k < n; k++) code = (code << 6) | (bytes[i + k]! & 0x3f);
  return String.fromCodePoint(code);
}

/** Whether a token's bytes are not valid UTF-8 alone: part of a multi-byte character. */
export function isBytePiece(bytes: Uint8Array | null | undefined): boolean {
  if (bytes === null || bytes === undefined) return false;
  for (let i = 0; i < bytes.length; ) {
    const n = utf8Length(bytes, i);
    if (n === 0) return true;
    i += n;
  }
  return false;
}

/** The display units of a byte piece: its characters, and each run of bytes that are not a
 * whole character as ⟨E2 80⟩. */
function* byteUnits(bytes: Uint8Array): Generator<string> {
  let run: string[] = [];
  const flush = () => TOKEN_DISPLAY.bytesOpen + run.join(TOKEN_DISPLAY.bytesSeparator) + TOKEN_DISPLAY.bytesClose;
  for (let i = 0; i < bytes.length; ) {
    const n = utf8Length(bytes, i);
    if (n === 0) {
      run.push(bytes[i]!.toString(16).toUpperCase().padStart(2, '0'));
      i += 1;
      continue;
    }
    if (run.length > 0) {
      yield flush();
      run = [];
    }
    yield unit(decodeAt(bytes, i, n));
    i += n;
  }
  if (run.length > 0) yield flush();
}

/** The display units of `text`, looking at its first `most` code points at most. */
function* textUnits(text: string, most: number): Generator<string> {
  let seen = 0;
  for (const ch of text) {
    if (seen++ >= most) return;
    yield unit(ch);
  }
}

/** Code points, as Python's len (a display unit is short: at most one escape or byte run). */
const length = (text: string) => Array.from(text).length;
const head = (text: string, n: number) => Array.from(text).slice(0, Math.max(0, n)).join('');

/** How a token is shown. */
export interface DisplayOptions {
  /** The token's bytes when the trace stores them (a byte piece: shown instead of its text,
   * whose U+FFFD hides them); see `tokenBytes`. */
  readonly bytes?: Uint8Array | null;
  /** At most this many characters (code points): whole display units and an ellipsis. */
  readonly max?: number;
}

/**
 * A token as every lmscope view shows it: spaces `·`, newline `⏎`, tab `→`, CR `↵`, other
 * control characters `\xNN`, invisible and format characters (bidi overrides and isolates,
 * zero-width characters, other spaces, separators, lone surrogates, private-use and unassigned
 * code points) `\uNNNN`, empty `∅`; a byte piece as its bytes, `⟨E2 80⟩`. With `max`, whole
 * display units and an ellipsis (an escape or a run of bytes is cut only when not even the first
 * unit fits), at a cost of O(max) however long the token. Still untrusted text: use textContent.
 */
export function displayToken(text: string, options: DisplayOptions = {}): string {
  const {bytes, max} = options;
  const units = isBytePiece(bytes) ? byteUnits(bytes!) : textUnits(text, max === undefined ? Infinity : max + 1);
  if (max === undefined) {
    let out = '';
    for (const u of units) out += u;
    return out === '' ? TOKEN_DISPLAY.empty : out;
  }
  const limit = Math.max(1, max);
  const kept: string[] = [];
  let used = 0;
  for (const u of units) {
    const n = length(u);
    if (used + n > limit) {
      // It does not fit whole: keep the whole units that fit before an ellipsis.
      const fitting: string[] = [];
      let room = 0;
      for (const piece of kept) {
        const m = length(piece);
        if (room + m > limit - 1) break;
        fitting.push(piece);
        room += m;
      }
      if (fitting.length === 0) return head(kept[0] ?? u, limit - 1) + TOKEN_DISPLAY.ellipsis;
      return fitting.join('') + TOKEN_DISPLAY.ellipsis;
    }
    kept.push(u);
    used += n;
  }
  return kept.length === 0 ? TOKEN_DISPLAY.empty : kept.join('');
}

/** At most `max` characters (code points) of already displayed text, with an ellipsis. */
export function clip(text: string, max: number): string {
  const chars = Array.from(text);
  return chars.length <= max ? text : chars.slice(0, Math.max(1, max - 1)).join('') + TOKEN_DISPLAY.ellipsis;
}

/** `“·Mary”`: a displayed token in quotes, as summaries and cards write it in running text. */
export function quotedToken(text: string, options: DisplayOptions = {}): string {
  return `“${displayToken(text, options)}”`;
}

/**
 * What a tooltip says about how a token is shown, in the vocabulary's words: a byte piece; a
 * U+FFFD that probably hides one (no bytes stored); an empty token; escaped control or invisible
 * characters. Empty when the display needs no explanation.
 */
export function tokenHints(text: string, bytes?: Uint8Array | null): string[] {
  const hints = TOKEN_DISPLAY.hints;
  const found: string[] = [];
  let chars = text;
  if (isBytePiece(bytes)) {
    found.push(hints.bytePiece);
    chars = '';
    for (let i = 0; i < bytes!.length; ) {
      const n = utf8Length(bytes!, i);
      if (n > 0) chars += decodeAt(bytes!, i, n);
      i += Math.max(1, n);
    }
  } else if ((bytes === null || bytes === undefined) && chars.includes('\ufffd')) {
    found.push(hints.maybeBytePiece);
  }
  if (found.length === 0 && chars === '') found.push(hints.empty);
  for (const ch of new Set(chars)) {
    if (VISIBLE[ch] === undefined && unit(ch) !== ch) {
      found.push(hints.escaped);
      break;
    }
  }
  return found;
}

/** Bytes from lowercase hex pairs (as `extra["lmscope.tokenBytes"]` stores them); null for "". */
export {bytesFromHex} from './traces/wire';

// ---- names, colours, sizes --------------------------------------------------------------------

/** A node's short label: X3 (embeddings have no layer), A23.14, M29.14, R22.2. */
export function nodeName(node: NodeId): string {
  const letter = NODE_VOCABULARY[node.kind].letter;
  return node.kind === 'embedding' ? `${letter}${node.position}` : `${letter}${node.layer}.${node.position}`;
}

/** The label of a layer's row (L0, L1, ...); layer -1 is the embeddings' row. */
export function rowLabel(layer: number): string {
  return layer < 0 ? EMBEDDING_ROW : `${LAYER_ROW}${layer}`;
}

/** The CSS value of a named colour in the webview: the theme's, the fixed hex as fallback. */
export function cssColour(name: ColourName): string {
  const colour = COLOURS[name];
  return `var(${colour.themeVar}, ${colour.hex})`;
}

/** The colour of a node kind and of an edge kind. */
export const nodeColour = (kind: NodeKind): ColourName => NODE_VOCABULARY[kind].colour;
export const edgeColour = (kind: EdgeKind): ColourName => EDGE_VOCABULARY[kind].colour;

/** Radius of a node carrying `share` of the prediction, when a share of 1 has radius `largest`. */
export function nodeRadius(share: number, largest: number): number {
  const s = Math.min(1, Math.abs(Number.isFinite(share) ? share : 0));
  return Math.max(NODE_SIZES.minRadius, largest * (NODE_SIZES.base + (1 - NODE_SIZES.base) * Math.sqrt(s)));
}

/** Fill opacity of a node carrying `share` of the prediction. */
export function nodeOpacity(share: number): number {
  const s = Math.min(1, Math.abs(Number.isFinite(share) ? share : 0));
  return NODE_SIZES.opacityBase + (1 - NODE_SIZES.opacityBase) * Math.sqrt(s);
}
