/**
 * Bytes in the form a webview message transfers without copying them through JSON. VS Code
 * (>= 1.57) moves typed arrays to a webview as binary data, but a Node `Buffer` (what
 * `workspace.fs.readFile` may return) has `toJSON`, which turns it into a JSON array of numbers
 * before the transfer sees it: many times larger and slow to build and parse. Pure (no `vscode`).
 */

/** `bytes` as a plain Uint8Array over an ArrayBuffer of exactly its length (copied only when
 * it is a Buffer or a view on a larger buffer, which would transfer the whole buffer). */
export function transferableBytes(bytes: Uint8Array): Uint8Array {
  const plain = Object.getPrototypeOf(bytes) === Uint8Array.prototype;
  if (plain && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength) return bytes;
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return copy;
}
