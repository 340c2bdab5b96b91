/**
 * A pass over the raw msgpack bytes for the three things `@msgpack/msgpack` lets through but the
 * Python reader (msgpack-python, `raw=False`, `strict_map_key=True`) refuses: text that is not
 * UTF-8, map keys that are not strings, and containers nested past msgpack-python's stack (a
 * map or array deeper than 1024 levels). It reads items in file order, as Python does, so the
 * first problem found is the one Python names.
 *
 * It only reports those problems: anything structurally wrong (truncation, reserved bytes,
 * lengths past the end) ends the scan without a verdict, and the decoder reports it.
 */

/** The WHATWG TextDecoder, a global of Node and of browsers alike. Shared code is compiled
 * without either runtime's library (shared/tsconfig.json), so it names the one use it makes. */
interface Utf8Decoder {
  decode(input: Uint8Array): string;
}
type Utf8DecoderClass = new (label: 'utf-8', options: {fatal: true}) => Utf8Decoder;
const strict = new (globalThis as unknown as {TextDecoder: Utf8DecoderClass}).TextDecoder('utf-8', {fatal: true});

/** Python's name for the type of a map key that is not a string (msgpack-python's message). */
const KEY_TYPES: Record<string, string> = {int: 'int', float: 'float', bool: 'bool', nil: 'NoneType', array: 'list', map: 'dict'};

/** msgpack-python's unpacker stack: a map or array at a deeper level is refused (StackError). */
const MSGPACK_MAX_DEPTH = 1024;
/** Returned for that case: the reader reports it as nesting past the format's own limit. */
export const NESTED_PAST_MSGPACK = 'nested past msgpack-python\'s stack';

function notAKey(kind: string): string {
  return `${KEY_TYPES[kind] ?? kind} is not allowed for map key when strict_map_key=True`;
}

/** What msgpack-python would refuse first in `bytes`, as its message; null if nothing. */
export function strictMsgpackProblem(bytes: Uint8Array, maxItems: number): string | null {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const end = bytes.length;
  // Open containers: items still to read, and whether the next item is a map key.
  const stack: {left: number; map: boolean; key: boolean; asKey: string | null}[] = [];
  let pos = 0;
  let items = 1; // the top-level value
  while (items > 0 || stack.length > 0) {
    const top = stack[stack.length - 1];
    if (top !== undefined && top.left === 0) {
      stack.pop();
      if (top.asKey !== null) return notAKey(top.asKey); // a container key, now read whole
      continue;
    }
    const isKey = top?.map === true && top.key;
    if (top !== undefined) {
      top.left--;
      if (top.map) top.key = !top.key;
    } else {
      items--;
    }
    if (pos >= end) return null;
    const b = bytes[pos]!;
    // [kind, header bytes, payload length, items it opens]
    let kind: string;
    let header = 1;
    let payload = 0;
    let opens = 0;
    const len = (n: 1 | 2 | 4): number | null => {
      if (pos + 1 + n > end) return null;
      return n === 1 ? view.getUint8(pos + 1) : n === 2 ? view.getUint16(pos + 1) : view.getUint32(pos + 1);
    };
    if (b <= 0x7f || b >= 0xe0) kind = 'int';
    else if (b <= 0x8f) [kind, opens] = ['map', (b & 0x0f) * 2];
    else if (b <= 0x9f) [kind, opens] = ['array', b & 0x0f];
    else if (b <= 0xbf) [kind, payload] = ['str', b & 0x1f];
    else if (b === 0xc0) kind = 'nil';
    else if (b === 0xc2 || b === 0xc3) kind = 'bool';
    else if (b >= 0xc4 && b <= 0xc6) {
      const n = ([1, 2, 4] as const)[b - 0xc4]!;
      const l = len(n);
      if (l === null) return null;
      [kind, header, payload] = ['bin', 1 + n, l];
    } else if (b >= 0xc7 && b <= 0xc9) {
      const n = ([1, 2, 4] as const)[b - 0xc7]!;
      const l = len(n);
      if (l === null) return null;
      [kind, header, payload] = ['ext', 2 + n, l];
    } else if (b === 0xca || b === 0xcb) [kind, payload] = ['float', b === 0xca ? 4 : 8];
    else if (b >= 0xcc && b <= 0xd3) [kind, payload] = ['int', 1 << ((b - 0xcc) % 4)];
    else if (b >= 0xd4 && b <= 0xd8) [kind, header, payload] = ['ext', 2, 1 << (b - 0xd4)];
    else if (b >= 0xd9 && b <= 0xdb) {
      const n = ([1, 2, 4] as const)[b - 0xd9]!;
      const l = len(n);
      if (l === null) return null;
      [kind, header, payload] = ['str', 1 + n, l];
    } else if (b >= 0xdc && b <= 0xdf) {
      const l = len(b === 0xdc || b === 0xde ? 2 : 4);
      if (l === null) return null;
      kind = b <= 0xdd ? 'array' : 'map';
      [header, opens] = [b === 0xdc || b === 0xde ? 3 : 5, kind === 'map' ? 2 * l : l];
    } else return null; // 0xc1: never used; the decoder says so
    // Past the end, over the decoder's limits, or an extension value: the decoder reports it.
    if (pos + header + payload > end || (kind === 'map' ? opens / 2 : opens) > maxItems || kind === 'ext') return null;
    // An empty one counts too: msgpack-python opens every container on its stack.
    if ((kind === 'map' || kind === 'array') && stack.length + 1 > MSGPACK_MAX_DEPTH) return NESTED_PAST_MSGPACK;
    if (kind === 'str') {
      try {
        strict.decode(bytes.subarray(pos + header, pos + header + payload));
      } catch {
        return 'text that is not UTF-8';
      }
    }
    // Python checks a key once it is read: a container key after its contents.
    const badKey = isKey && kind !== 'str' && kind !== 'bin' ? kind : null;
    if (badKey !== null && opens === 0) return notAKey(badKey);
    pos += header + payload;
    if (opens > 0) stack.push({left: opens, map: kind === 'map', key: kind === 'map', asKey: badKey});
  }
  return null;
}
