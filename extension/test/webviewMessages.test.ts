// Host <-> webview messages: type guards refuse malformed messages; base64 round-trips.
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {decodeBase64, encodeBase64, isGraphSettings, isHostToWebview, isWebviewToHost} from '../shared/webviewMessages';
import {seededRandom} from './helpers';

test('well-formed messages pass their guards', () => {
  const settings = {threshold: 0.04, mode: 'renormalize'};
  assert.ok(isHostToWebview({type: 'load', name: 'a.lmtrace', bytes: 'AAEC', settings}));
  assert.ok(isHostToWebview({type: 'loadError', name: 'a.lmtrace', message: 'missing'}));
  assert.ok(isWebviewToHost({type: 'ready'}));
  assert.ok(isWebviewToHost({type: 'settingsChanged', settings: {threshold: 0.1, mode: 'raw'}}));
  assert.ok(isWebviewToHost({type: 'error', message: 'x'}));
  assert.ok(isHostToWebview({type: 'daemon', live: false, reason: 'no daemon'}));
  assert.ok(isHostToWebview({type: 'queryResult', id: 3, result: {top: [], bottom: []}}));
  assert.ok(isHostToWebview({type: 'queryResult', id: 4, error: {message: 'needs the model', needsModel: true}}));
  assert.ok(isWebviewToHost({type: 'query', id: 1, method: 'lmscope/headMaps', params: {layer: 0, head: 1, position: 2}}));
  assert.ok(isWebviewToHost({type: 'query', id: 2, method: 'lmscope/projection', params: {node: {kind: 'ffn', layer: 0, position: 1}, kind: 'ffn_update'}}));
  assert.ok(isWebviewToHost({type: 'query', id: 3, method: 'lmscope/ablate', params: {targets: ['L1H0:2<-1'], kind: 'mean', token: 2}}));
  assert.ok(isWebviewToHost({type: 'query', id: 4, method: 'lmscope/verifyRoute', params: {token: 2, threshold: 0.04, mode: 'raw', kind: 'zero'}}));
});

test('malformed messages fail their guards', () => {
  for (const bad of [null, 1, 'load', [], {}, {type: 'load'}, {type: 'load', name: 'a', bytes: 1, settings: {threshold: 0.04, mode: 'raw'}},
    {type: 'load', name: 'a', bytes: '', settings: {threshold: NaN, mode: 'raw'}}, {type: 'load', name: 'a', bytes: '', settings: {threshold: 0.1, mode: 'other'}},
    {type: 'ready'}, {type: 'loadError', name: 'a'}]) {
    assert.equal(isHostToWebview(bad), false, JSON.stringify(bad));
  }
  for (const bad of [{type: 'daemon', live: 'yes', reason: ''}, {type: 'queryResult', id: 1.5}, {type: 'queryResult', id: 1, error: 'x'}]) {
    assert.equal(isHostToWebview(bad), false, JSON.stringify(bad));
  }
  // Only the drill-down methods, and never a handle of the webview's choosing.
  for (const bad of [null, {type: 'load'}, {type: 'settingsChanged'}, {type: 'error', message: 3},
    {type: 'query', id: 1, method: 'lmscope/trace', params: {prompt: 'x'}}, {type: 'query', id: 1, method: 'lmscope/headMaps', params: {handle: 't1', layer: 0, head: 0}},
    {type: 'query', method: 'lmscope/headMaps', params: {layer: 0, head: 0}},
    // The host owns the progress of a causal check: no workDoneToken from the webview.
    {type: 'query', id: 1, method: 'lmscope/verifyRoute', params: {threshold: 0.04, workDoneToken: 'x'}}]) {
    assert.equal(isWebviewToHost(bad), false, JSON.stringify(bad));
  }
  assert.equal(isGraphSettings({threshold: Infinity, mode: 'raw'}), false);
});

test('base64 matches Node and round-trips every length', () => {
  const random = seededRandom(7);
  for (let n = 0; n < 70; n++) {
    const bytes = Uint8Array.from({length: n}, () => Math.floor(random() * 256));
    const text = encodeBase64(bytes);
    assert.equal(text, Buffer.from(bytes).toString('base64'));
    assert.deepEqual(decodeBase64(text), bytes);
  }
  const big = Uint8Array.from({length: 100_000}, (_, i) => (i * 31) & 255);
  assert.deepEqual(decodeBase64(encodeBase64(big)), big);
});

test('base64 with a foreign character is refused', () => {
  assert.throws(() => decodeBase64('AA*A'), /invalid base64/);
  assert.throws(() => decodeBase64('A'), /invalid base64/);
});
