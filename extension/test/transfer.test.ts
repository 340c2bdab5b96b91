// Trace bytes posted to the webview travel as binary, never as a JSON array of numbers.
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {transferableBytes} from '../host/transfer';

test('a plain Uint8Array that owns its whole buffer is posted as it is', () => {
  const bytes = new Uint8Array([1, 2, 3]);
  assert.equal(transferableBytes(bytes), bytes);
});

test('a Node Buffer becomes a plain Uint8Array, which JSON cannot turn into a list of numbers', () => {
  const buffer = Buffer.from([0x89, 0x50, 0x4e]);
  const bytes = transferableBytes(buffer);
  assert.equal(Object.getPrototypeOf(bytes), Uint8Array.prototype);
  assert.deepEqual([...bytes], [0x89, 0x50, 0x4e]);
  assert.equal('toJSON' in bytes, false);
});

test('a view on a larger buffer is copied, so only its own bytes travel', () => {
  const whole = new Uint8Array([9, 9, 1, 2, 9]);
  const bytes = transferableBytes(whole.subarray(2, 4));
  assert.deepEqual([...bytes], [1, 2]);
  assert.equal(bytes.buffer.byteLength, 2);
});
