/**
 * The `.lmtrace` document, one field at a time: the checks JSON Schema makes in Python
 * (`protocol/lmtrace.schema.json`: types, enums, closed objects) and the decoding of ndarray
 * objects (either form), which checks the declared shape against the bytes actually present
 * before allocating anything. Each failure is an {@link Invalid} naming the field's path.
 * The schema's bounds (limits.ts) are checked with the Python reader's messages: text lengths,
 * string-list sizes, the value range of each float array, the nesting depth.
 * Python twin: `lmscope.traces.wire`.
 */

import {pyFloat} from '../errors';
import {LIMITS, type ValueRange} from './limits';

/** What is wrong with the document, before saying which file it came from. */
export class Invalid extends Error {}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

export type WireMap = Record<string, unknown>;

export function isMap(value: unknown): value is WireMap {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}

/** The message for a document whose maps and arrays nest deeper than the schema allows. */
export const TOO_DEEP = `values are nested more than ${LIMITS.nesting} deep`;

/**
 * Whether maps and arrays nest deeper than the schema's `x-maxNesting` (the top level is 1), as
 * Python's `nested_too_deeply` counts: checked without recursion, containers only.
 */
export function nestedTooDeeply(value: unknown): boolean {
  const container = (v: unknown) => Array.isArray(v) || isMap(v);
  const stack: [unknown, number][] = container(value) ? [[value, 1]] : [];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (depth > LIMITS.nesting) return true;
    for (const item of Array.isArray(v) ? v : Object.values(v as WireMap)) if (container(item)) stack.push([item, depth + 1]);
  }
  return false;
}

/** Characters of `text` as Python counts them (code points; a surrogate pair is one). */
function codePoints(text: string, atLeast: number): number {
  if (text.length <= atLeast) return text.length; // never more code points than UTF-16 units
  let count = 0;
  for (let i = 0; i < text.length; i++, count++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
  }
  return count;
}

function tooLong(path: string, count: number, limit: number): Invalid {
  return new Invalid(`${path}: ${count} characters, more than the ${limit} allowed`);
}

/**
 * `value` as Python's `repr` writes it, for messages worded like the Python reader's (its
 * jsonschema errors): 'text', 3, 0.5, True, None, [1, 2], {'k': 1}; bins as `<binary, N bytes>`.
 */
export function pyRepr(value: unknown, depth = 0): string {
  if (depth > 8) return '...'; // messages are cut at 160 characters anyway; no deep recursion
  if (value === null || value === undefined) return 'None';
  if (typeof value === 'boolean') return value ? 'True' : 'False';
  if (typeof value === 'number') return Number.isInteger(value) && Math.abs(value) < 1e16 ? String(value) : pyFloat(value);
  if (typeof value === 'string') return pyStr(value);
  if (value instanceof Uint8Array) return `<binary, ${value.length} bytes>`;
  if (Array.isArray(value)) return `[${value.slice(0, 20).map(v => pyRepr(v, depth + 1)).join(', ')}${value.length > 20 ? ', ...' : ''}]`;
  if (isMap(value)) return `{${Object.entries(value).slice(0, 20).map(([k, v]) => `${pyStr(k)}: ${pyRepr(v, depth + 1)}`).join(', ')}}`;
  // What is left: bigints (msgpack int64), symbols, functions, other objects (never from msgpack).
  return typeof value === 'bigint' ? value.toString() : Object.prototype.toString.call(value);
}

function pyStr(text: string): string {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  // eslint-disable-next-line no-control-regex -- control characters are what it escapes
  const escaped = text.replace(/[\\\x00-\x1f\x7f]/g, c =>
    c === '\\' ? '\\\\' : c === '\n' ? '\\n' : c === '\r' ? '\\r' : c === '\t' ? '\\t' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
  return quote + (quote === "'" ? escaped.replace(/'/g, "\\'") : escaped) + quote;
}

/** A schema error at `path`, one line of at most 160 characters after the path (as Python). */
function schemaError(path: string, message: string): Invalid {
  return new Invalid(`${path}: ${message.length <= 160 ? message : `${message.slice(0, 157)}...`}`);
}

function typeError(path: string, value: unknown, type: string): Invalid {
  return schemaError(path, `${pyRepr(value)} is not of type '${type}'`);
}

/**
 * The map at `path`: every key of `keys`, maybe some of `optional`, nothing else (the schema's
 * `required` and `additionalProperties: false`). When a key is both missing and replaced by an
 * unknown one (a misspelling), Python's jsonschema names the keyword the schema lists first:
 * `required` for the top level and ndarrays, `additionalProperties` for the sections.
 */
export function section(value: unknown, path: string, keys: readonly string[], options: {optional?: readonly string[]; requiredFirst?: boolean} = {}): WireMap {
  if (!isMap(value)) throw typeError(path, value, 'object');
  const optional = options.optional ?? [];
  const missing = keys.find(key => !Object.hasOwn(value, key));
  const unexpected = Object.keys(value).filter(key => !keys.includes(key) && !optional.includes(key));
  const missingError = () => schemaError(path, `${pyStr(missing!)} is a required property`);
  if (missing !== undefined && options.requiredFirst) throw missingError();
  if (unexpected.length > 0) {
    const which = `${unexpected.map(pyStr).join(', ')} ${unexpected.length === 1 ? 'was' : 'were'}`;
    throw schemaError(path, `Additional properties are not allowed (${which} unexpected)`);
  }
  if (missing !== undefined) throw missingError();
  return value;
}

/** A string of at most `maxLength` characters (the schema's `maxLength`). */
export function str(map: WireMap, path: string, key: string, maxLength: number = LIMITS.text): string {
  const v = map[key];
  if (typeof v !== 'string') throw typeError(`${path}.${key}`, v, 'string');
  const count = codePoints(v, maxLength);
  if (count > maxLength) throw tooLong(`${path}.${key}`, count, maxLength);
  return v;
}

export function bool(map: WireMap, path: string, key: string): boolean {
  const v = map[key];
  if (typeof v !== 'boolean') throw typeError(`${path}.${key}`, v, 'boolean');
  return v;
}

/** An integer in [min, max] (the schema accepts 3.0 as an integer, as Python does). */
export function int(map: WireMap, path: string, key: string, min: number, max = Infinity): number {
  const v = map[key];
  if (typeof v !== 'number' || !Number.isInteger(v)) throw typeError(`${path}.${key}`, v, 'integer');
  return inRange(`${path}.${key}`, v, min, max);
}

/** A number in [min, max]. */
export function num(map: WireMap, path: string, key: string, min: number, max: number): number {
  const v = map[key];
  if (typeof v !== 'number') throw typeError(`${path}.${key}`, v, 'number');
  return inRange(`${path}.${key}`, v, min, max);
}

function inRange(path: string, v: number, min: number, max: number): number {
  if (v < min) throw schemaError(path, `${pyRepr(v)} is less than the minimum of ${min}`);
  if (v > max) throw schemaError(path, `${pyRepr(v)} is greater than the maximum of ${max}`);
  return v;
}

function isOneOf<T extends string>(path: string, v: unknown, values: readonly T[]): T {
  if (typeof v !== 'string' || !(values as readonly string[]).includes(v)) {
    throw schemaError(path, `${pyRepr(v)} is not one of [${values.map(pyStr).join(', ')}]`);
  }
  return v as T;
}

export function oneOf<T extends string>(map: WireMap, path: string, key: string, values: readonly T[]): T {
  return isOneOf(`${path}.${key}`, map[key], values);
}

/**
 * A list of strings; with `bounds`, of at most `maxItems` strings of at most `maxLength`
 * characters each (tokens.strings, vocabulary.strings: Python's `check_string_lists`).
 */
export function stringList(map: WireMap, path: string, key: string, bounds?: {maxItems: number; maxLength: number}): string[] {
  const v = map[key];
  if (!Array.isArray(v)) throw typeError(`${path}.${key}`, v, 'array');
  if (bounds !== undefined && v.length > bounds.maxItems) {
    throw new Invalid(`${path}.${key}: ${v.length} items, more than the ${bounds.maxItems} allowed`);
  }
  // Python names the bad item with the greatest index (as jsonschema's "best match" does).
  for (let i = v.length - 1; i >= 0; i--) if (typeof v[i] !== 'string') throw typeError(`${path}.${key}[${i}]`, v[i], 'string');
  if (bounds !== undefined) {
    for (let i = v.length - 1; i >= 0; i--) {
      const count = codePoints(v[i] as string, bounds.maxLength);
      if (count > bounds.maxLength) throw tooLong(`${path}.${key}[${i}]`, count, bounds.maxLength);
    }
  }
  return v as string[];
}

export function enumList<T extends string>(map: WireMap, path: string, key: string, values: readonly T[]): T[] {
  const list = stringList(map, path, key);
  for (let i = list.length - 1; i >= 0; i--) isOneOf(`${path}.${key}[${i}]`, list[i], values); // last first, as above
  return list as T[];
}

/** Whether the nullable ndarray at `key` is null (the schema's `oneOf: [null, ndarray]`). */
export function isNull(map: WireMap, path: string, key: string): boolean {
  const v = map[key];
  if (v === null || isMap(v)) return v === null;
  const type = typeof v === 'number' ? (Number.isInteger(v) ? 'int' : 'float')
    : typeof v === 'string' ? 'str' : typeof v === 'boolean' ? 'bool' : Array.isArray(v) ? 'list' : '_Bin';
  throw schemaError(`${path}.${key}`, `a value of type ${type} is not allowed here`);
}

// ---- ndarrays ---------------------------------------------------------------------------------

export type ArrayDtype = 'int32' | 'float32';
export interface Arr<T extends Int32Array | Float32Array> {
  readonly shape: readonly number[];
  /** Empty until `ArrayQueue.decodeAll` has run. */
  readonly data: T;
}

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * The document's ndarrays, as Python reads them: every array object is schema-checked when the
 * field is met (with the rest of the document), and decoded later, all in document order, by
 * `decodeAll` (byte lengths against shapes, then values). So a file with a bad field and a bad
 * byte count is named for the field, as Python names it.
 */
export class ArrayQueue {
  private readonly pending: (() => void)[] = [];

  int32(map: WireMap, path: string, key: string): Arr<Int32Array> {
    return this.add(map, path, key, 'int32', new Int32Array(0));
  }

  /** A float32 array whose values must lie in `range` (the schema's shareArray, magnitudeArray). */
  float32(map: WireMap, path: string, key: string, range: ValueRange): Arr<Float32Array> {
    return this.add(map, path, key, 'float32', new Float32Array(0), range);
  }

  decodeAll(): void {
    for (const decode of this.pending.splice(0)) decode();
  }

  private add<T extends Int32Array | Float32Array>(map: WireMap, parent: string, key: string, dtype: ArrayDtype, empty: T, range?: ValueRange): Arr<T> {
    const path = `${parent}.${key}`;
    const {obj, shape} = checkNdarray(map[key], path, dtype);
    const arr = {shape, data: empty};
    this.pending.push(() => {
      arr.data = decodeNdarray(obj, path, shape, dtype, range) as T;
    });
    return arr;
  }
}

/** The schema's part: keys, dtype, shape, and exactly one of `data` (a bin) and `values`. */
function checkNdarray(value: unknown, path: string, dtype: ArrayDtype): {obj: WireMap; shape: number[]} {
  const obj = section(value, path, ['dtype', 'shape'], {optional: ['data', 'values'], requiredFirst: true});
  const declared = oneOf(obj, path, 'dtype', ['int32', 'float32'] as const);
  if (declared !== dtype) throw schemaError(`${path}.dtype`, `'${dtype}' was expected`);
  const rawShape = obj['shape'];
  if (!Array.isArray(rawShape)) throw typeError(`${path}.shape`, rawShape, 'array');
  if (rawShape.length > 4) throw schemaError(`${path}.shape`, `${pyRepr(rawShape)} is too long`);
  const shape = rawShape.map((s: unknown, i) => {
    if (typeof s !== 'number' || !Number.isInteger(s)) throw typeError(`${path}.shape[${i}]`, s, 'integer');
    return inRange(`${path}.shape[${i}]`, s, 0, INT32_MAX);
  });
  const data = obj['data'];
  // Python's schema sees a bin as its byte length: anything but a bin or a count is a type error.
  if (data !== undefined && !(data instanceof Uint8Array)) {
    if (typeof data !== 'number' || !Number.isInteger(data)) throw typeError(`${path}.data`, data, 'integer');
    inRange(`${path}.data`, data, 0, Infinity);
  }
  if (obj['values'] !== undefined && !Array.isArray(obj['values'])) throw typeError(`${path}.values`, obj['values'], 'array');
  if (Object.hasOwn(obj, 'data') === Object.hasOwn(obj, 'values')) {
    throw new Invalid(`${path}: an ndarray needs exactly one of \`data\` and \`values\``);
  }
  return {obj, shape};
}

/** Decode one checked ndarray (either form), checking its size before allocating anything. */
function decodeNdarray(obj: WireMap, path: string, shape: number[], dtype: ArrayDtype, range?: ValueRange): Int32Array | Float32Array {
  // Exact, as Python's ints: a hostile shape can neither overflow into a small count nor be
  // misprinted; a count this large never matches the bytes present, so nothing is allocated.
  const count = shape.reduce((a, b) => a * BigInt(b), 1n);
  const out = Object.hasOwn(obj, 'data') ? fromBytes(obj['data'], path, shape, count, dtype) : fromValues(obj['values'], path, shape, count, dtype);
  if (out instanceof Float32Array) {
    for (let i = 0; i < out.length; i++) {
      if (!Number.isFinite(out[i]!)) throw new Invalid(`${path} contains non-finite values (NaN or infinity)`);
    }
    if (range !== undefined) {
      for (const v of out) {
        if (v < range.min || v > range.max) {
          throw new Invalid(`${path} holds ${pyFloat(v)}, outside [${pyFloat(range.min)}, ${pyFloat(range.max)}]`);
        }
      }
    }
  }
  return out;
}

function fromBytes(buf: unknown, path: string, shape: number[], count: bigint, dtype: ArrayDtype): Int32Array | Float32Array {
  if (!(buf instanceof Uint8Array)) throw new Invalid(`${path}.data is not binary (JSON traces use \`values\`)`);
  if (BigInt(buf.length) !== count * 4n) {
    throw new Invalid(`${path} declares shape [${shape.join(', ')}] (${count * 4n} bytes) but holds ${buf.length} bytes`);
  }
  if (LITTLE_ENDIAN_HOST) {
    // A fresh, exact-size, 4-byte aligned copy. Not buf.slice(): on a Node Buffer that is a view
    // into a shared pool.
    const copy = new Uint8Array(buf).buffer;
    return dtype === 'int32' ? new Int32Array(copy) : new Float32Array(copy);
  }
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = buf.length / 4;
  const out = dtype === 'int32' ? new Int32Array(n) : new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = dtype === 'int32' ? view.getInt32(4 * i, true) : view.getFloat32(4 * i, true);
  return out;
}

function fromValues(values: unknown, path: string, shape: number[], count: bigint, dtype: ArrayDtype): Int32Array | Float32Array {
  if (!Array.isArray(values)) throw typeError(`${path}.values`, values, 'array'); // checked before
  if (BigInt(values.length) !== count) {
    throw new Invalid(`${path} declares shape [${shape.join(', ')}] (${count} values) but holds ${values.length} values`);
  }
  if (!values.every(v => typeof v === 'number')) throw new Invalid(`${path}.values holds something other than numbers`);
  const numbers = values;
  if (dtype === 'int32') {
    if (!numbers.every(v => Number.isInteger(v) && v >= INT32_MIN && v <= INT32_MAX)) {
      throw new Invalid(`${path}.values holds numbers that are not int32 integers`);
    }
    return Int32Array.from(numbers);
  }
  return Float32Array.from(numbers); // rounds to float32; 1e300 -> Infinity, refused by the caller
}

// ---- extra["lmscope.tokenBytes"] ----------------------------------------------------------------

/** The key of `extra` holding the bytes of byte pieces (Python: lmscope.traces.pieces). */
export const TOKEN_BYTES_KEY = 'lmscope.tokenBytes';
/** Characters of one hex string: 1024 bytes, 4x the longest token of real vocabularies. */
export const MAX_TOKEN_BYTES_HEX = 2048;
const HEX_PAIRS = /^(?:[0-9a-f]{2})*$/;

/**
 * What is wrong with `extra["lmscope.tokenBytes"]` (`{tokens: hex[], vocabulary: hex[]}`, one
 * per prompt token and per vocabulary entry), or null (also when it is absent). Python's
 * `lmscope.traces.pieces.check`, with the same messages.
 */
export function checkTokenBytes(extra: WireMap, nTokens: number, nVocabulary: number): string | null {
  if (!Object.prototype.hasOwnProperty.call(extra, TOKEN_BYTES_KEY)) return null;
  const where = `extra.${TOKEN_BYTES_KEY}`;
  const value = extra[TOKEN_BYTES_KEY];
  const keys = isMap(value) ? Object.keys(value).sort() : [];
  if (!isMap(value) || keys.length !== 2 || keys[0] !== 'tokens' || keys[1] !== 'vocabulary' || !Array.isArray(value['tokens']) || !Array.isArray(value['vocabulary'])) {
    return `${where}: not a map of the lists \`tokens\` and \`vocabulary\``;
  }
  for (const [key, expected, of] of [['tokens', nTokens, 'tokens.strings'], ['vocabulary', nVocabulary, 'vocabulary.strings']] as const) {
    const items = value[key] as unknown[];
    if (items.length !== expected) return `${where}.${key}: ${items.length} items, but ${of} has ${expected}`;
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      if (typeof item !== 'string' || !HEX_PAIRS.test(item)) return `${where}.${key}[${i}]: not a string of lowercase hex byte pairs`;
      if (item.length > MAX_TOKEN_BYTES_HEX) return `${where}.${key}[${i}]: ${item.length} characters, more than the ${MAX_TOKEN_BYTES_HEX} allowed`;
    }
  }
  return null;
}

/** Bytes from hex pairs checked by `checkTokenBytes`; null for "" (not a byte piece). */
export function bytesFromHex(hex: string): Uint8Array | null {
  if (hex === '') return null;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
