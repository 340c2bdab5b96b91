// What the host saves when the graph exports its route: SVG and PNG checked strictly, and the
// file name the save dialog proposes.
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {ExportError, exportBytes, exportFileName, MAX_EXPORT_BYTES} from '../host/exportFile';
import {encodeBase64} from '../shared/webviewMessages';

const PNG = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52]);

test('an SVG document is saved as its UTF-8 text', () => {
  const svg = '<svg xmlns="http://www.w3.org/2000/svg"><text>·Mary → é</text></svg>';
  assert.equal(new TextDecoder().decode(exportBytes('svg', svg)), svg);
  const withProlog = '<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>';
  assert.equal(new TextDecoder().decode(exportBytes('svg', withProlog)), withProlog);
});

test('text that is not an SVG document is refused', () => {
  for (const data of ['', 'hello', '<html><svg></svg></html>', ' <svg/>', '<?xml version="1.0"?><html/>', '<svgfoo']) {
    assert.throws(() => exportBytes('svg', data), (e) => e instanceof ExportError && /not an SVG document/.test(e.message), JSON.stringify(data));
  }
});

test('an SVG over the size limit is refused', () => {
  const big = `<svg>${'x'.repeat(MAX_EXPORT_BYTES)}</svg>`;
  assert.throws(() => exportBytes('svg', big), /larger than 50 MB/);
  // Under the limit in UTF-16 units, over it in UTF-8 bytes.
  const wide = `<svg>${'é'.repeat(MAX_EXPORT_BYTES / 2)}</svg>`;
  assert.throws(() => exportBytes('svg', wide), /larger than 50 MB/);
});

test('a PNG arrives as base64 or a PNG data URL and is saved as its bytes', () => {
  const base64 = encodeBase64(PNG);
  assert.deepEqual(exportBytes('png', base64), PNG);
  assert.deepEqual(exportBytes('png', `data:image/png;base64,${base64}`), PNG);
});

test('a PNG that is not base64, not a PNG or another kind of data URL is refused', () => {
  const cases: [string, RegExp][] = [
    ['!!!not base64', /not valid base64/],
    [encodeBase64(new TextEncoder().encode('GIF89a....')), /not a PNG image/],
    [encodeBase64(PNG.subarray(0, 4)), /not a PNG image/],
    ['', /not a PNG image/],
    [`data:image/svg+xml;base64,${encodeBase64(PNG)}`, /not a base64 PNG/],
    [`data:image/png,${encodeBase64(PNG)}`, /not a base64 PNG/],
  ];
  for (const [data, message] of cases) {
    assert.throws(() => exportBytes('png', data), (e) => e instanceof ExportError && message.test(e.message), data.slice(0, 40));
  }
});

test('a PNG over the size limit is refused before it is decoded', () => {
  assert.throws(() => exportBytes('png', 'A'.repeat(Math.ceil(MAX_EXPORT_BYTES / 3) * 4 + 4)), /larger than 50 MB/);
});

test('the save dialog proposes the graph\'s file name when it is a plain name of the right kind', () => {
  assert.equal(exportFileName('ioi-d3c0.smollm2-135m.token-14.svg', 'ioi-d3c0.smollm2-135m.lmtrace', 'svg'), 'ioi-d3c0.smollm2-135m.token-14.svg');
  assert.equal(exportFileName('route.PNG', 'a.lmtrace', 'png'), 'route.PNG');
});

test('otherwise it proposes the trace\'s name with the format\'s extension', () => {
  for (const proposed of ['../../etc/x.svg', '/abs/x.svg', 'a\\b.svg', 'x.png', '.svg', '', '.hidden.svg', 'a'.repeat(200) + '.svg', 'x..svg']) {
    assert.equal(exportFileName(proposed, 'ioi.lmtrace', 'svg'), 'ioi.svg', proposed);
  }
  assert.equal(exportFileName('', 'my trace (1).lmtrace', 'png'), 'my-trace-1-.png');
  assert.equal(exportFileName('', '日本.lmtrace', 'png'), 'trace.png');
});
