// The flow-graph webview in headless Chromium (skipped where /usr/bin/chromium, or $CHROMIUM,
// is absent): the bundle is built in memory with esbuild, loaded under the same CSP as in VS
// Code with a stub of acquireVsCodeApi, and sent a synthetic trace whose token is HTML.
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {test} from 'node:test';
import {encodeBase64} from '../src/webviewMessages';
import {contentSecurityPolicy} from '../src/webviewHtml';
import {encodeWire, ROOT, syntheticWire} from './helpers';

const CHROMIUM = process.env['CHROMIUM'] ?? '/usr/bin/chromium';
const XSS = '<img src=x onerror=alert(1)>';

/** Runs in the page after the trace is loaded; returns one JSON line of observations. */
const PROBE = `
function probe() {
  const r = {};
  const edges = () => document.querySelectorAll('path.edge').length;
  r.posted = window.__posted.map((m) => m.type);
  r.edgesDefault = edges();
  r.kinds = [...new Set([...document.querySelectorAll('path.edge')].map((e) => e.classList[1]))].sort();
  r.message = document.querySelector('.message').hidden ? null : document.querySelector('.message').textContent;
  r.images = document.querySelectorAll('img').length;
  r.xssAsText = [...document.querySelectorAll('option, text.token title')].some((t) => t.textContent.includes('<img·src=x·onerror=alert(1)>'));
  const attention = document.querySelector('path.edge.attention');
  attention.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));
  r.card = document.querySelector('.card').hidden ? null : document.querySelector('.card').textContent;
  attention.dispatchEvent(new MouseEvent('click', {bubbles: true}));
  r.heads = document.querySelectorAll('.details table tr').length - 1;
  const ffn = document.querySelector('.node.ffn[aria-label^="M0.2"]');
  if (ffn) ffn.dispatchEvent(new MouseEvent('click', {bubbles: true}));
  r.neurons = document.querySelector('.details').textContent;
  const input = document.getElementById('threshold');
  input.value = '0.1';
  input.dispatchEvent(new Event('change'));
  r.edgesHigh = edges();
  r.state = window.__state;
  r.alerts = window.__alerts;
  r.violations = window.__violations;
  return r;
}`;

test('the webview draws a route, shows cards and heads, re-routes locally and keeps HTML tokens as text', {skip: !fs.existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM}`}, async () => {
  const esbuild = await import('esbuild');
  const bundle = await esbuild.build({
    entryPoints: [path.join(ROOT, 'extension', 'webview', 'main.ts')],
    bundle: true, platform: 'browser', format: 'iife', target: 'es2022', write: false, outdir: 'out',
  });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lmscope-webview-'));
  try {
    for (const file of bundle.outputFiles) fs.writeFileSync(path.join(dir, path.basename(file.path)), file.contents);
    const wire = syntheticWire();
    wire.tokens.strings = ['<bos>', XSS, 'b'];
    wire.vocabulary.strings[4] = XSS;
    const bytes = encodeBase64(encodeWire(wire));
    const nonce = 'testnoncetestnoncetestnonce';
    const page = `<!DOCTYPE html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${contentSecurityPolicy('file:', nonce)}">
<link rel="stylesheet" href="main.css" nonce="${nonce}">
<script nonce="${nonce}">
window.__posted = []; window.__alerts = []; window.__violations = []; window.__state = undefined;
window.alert = (m) => window.__alerts.push(String(m));
document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
function acquireVsCodeApi() { return {postMessage: (m) => window.__posted.push(m), getState: () => window.__state, setState: (s) => { window.__state = s; }}; }
</script></head><body><div id="root"></div>
<script nonce="${nonce}" src="main.js"></script>
<script nonce="${nonce}">
${PROBE}
window.postMessage({type: 'load', name: 'x.lmtrace', bytes: '${bytes}', settings: {threshold: 0.04, mode: 'renormalize'}}, '*');
setTimeout(() => { const pre = document.createElement('pre'); pre.id = 'result'; pre.textContent = JSON.stringify(probe()); document.body.append(pre); }, 200);
</script></body></html>`;
    fs.writeFileSync(path.join(dir, 'page.html'), page);
    const dom = execFileSync(
      CHROMIUM,
      ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', `--user-data-dir=${path.join(dir, 'profile')}`,
        '--virtual-time-budget=5000', '--dump-dom', `file://${path.join(dir, 'page.html')}`],
      {encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'ignore']},
    );
    const match = /<pre id="result">([^<]*)<\/pre>/.exec(dom);
    assert.ok(match, `no result in the page: ${dom.slice(-500)}`);
    const text = match[1]!.replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
    const r = JSON.parse(text);
    assert.deepEqual(r.violations, [], 'no CSP violations');
    assert.deepEqual(r.alerts, [], 'the injected HTML never ran');
    assert.equal(r.images, 0, 'no <img> element was created from a token');
    assert.ok(r.xssAsText, 'the HTML token is shown as text');
    assert.equal(r.message, null);
    assert.ok(r.posted.includes('ready'));
    assert.ok(r.edgesDefault > 0);
    assert.deepEqual(r.kinds, ['attention', 'ffn', 'residual']);
    assert.match(r.card, /weight/);
    assert.equal(r.heads, 2, 'the per-head list has every head');
    assert.match(r.neurons, /L0\.N3/);
    assert.match(r.neurons, /\+1\.500/);
    assert.ok(r.edgesHigh < r.edgesDefault, `threshold 0.1 keeps fewer edges (${r.edgesHigh} vs ${r.edgesDefault})`);
    assert.equal(r.state.threshold, 0.1);
  } finally {
    fs.rmSync(dir, {recursive: true, force: true});
  }
});
