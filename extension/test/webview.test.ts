// The flow-graph webview in headless Chromium, driven by playwright-core (from
// tools/code-server; skipped where it or /usr/bin/chromium, or $CHROMIUM, is absent). The bundle is
// built in memory with esbuild and loaded under the same CSP as in VS Code, with a stub of
// acquireVsCodeApi that hands every posted message to this test, which plays the extension host.
//
// Two traces: a synthetic one built here (exact numbers), and one the Python engine makes: a
// spawned daemon (`lmscope serve --stdio`, through the JSON-RPC stack the extension uses) loads
// a tiny random Llama whose vocabulary holds an HTML token (tests/fixtures/webview_model.py),
// traces a prompt containing it and saves the .lmtrace; the test renders that file and forwards
// the webview's drill-down queries to the daemon, as the host does for a live trace.
// Synchronisation is on selectors and messages, never on sleeps.
import assert from 'node:assert/strict';
import {execFileSync, spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {createProtocolConnection, StreamMessageReader, StreamMessageWriter, type ProtocolConnection} from 'vscode-languageserver-protocol/node';
import type {HostToWebview, WebviewToHost} from '../shared/webviewMessages';
import {encodeBase64} from '../shared/webviewMessages';
import {encodeWire, f32, longWire, ROOT, syntheticWire} from './helpers';
import {syntheticMoeWire} from './moeWire';
import {buildPage, launchChromium, loadPlaywright, skipReason, type Browser} from './webviewPage';

const PYTHON = process.env['LMSCOPE_PYTHON'] ?? path.join(ROOT, '.venv', 'bin', 'python');
const XSS = '<img src=x onerror=alert(1)>';
const XSS_SHOWN = '<img·src=x·onerror=alert(1)>'; // displayToken makes spaces visible
const NONCE = 'testnoncetestnoncetestnonce';

// The few playwright-core calls used here (its types live in tools/code-server, not here). Page
// code is passed as strings: this tsconfig has no DOM library.
interface Locator {
  first(): Locator;
  nth(index: number): Locator;
  filter(options: {hasText: string}): Locator;
  locator(selector: string, options?: {hasText: string}): Locator;
  count(): Promise<number>;
  waitFor(options?: {state?: 'attached' | 'visible'}): Promise<void>;
  dispatchEvent(type: string): Promise<void>;
  innerText(): Promise<string>;
  fill(value: string): Promise<void>;
  click(): Promise<void>;
  getAttribute(name: string): Promise<string | null>;
}
interface Page {
  locator(selector: string, options?: {hasText: string}): Locator;
  evaluate<T>(expression: string): Promise<T>;
  waitForFunction(expression: string): Promise<unknown>;
  exposeFunction(name: string, callback: (message: WebviewToHost) => void): Promise<void>;
  goto(url: string): Promise<unknown>;
  close(): Promise<void>;
}
const playwright = loadPlaywright<Page>();
const skip = skipReason(playwright);

let dir = '';
let browser: Browser<Page> | null = null;

before(async () => {
  if (skip) return;
  dir = await buildPage('main', 'main.css', NONCE, 'lmscope-webview-');
  browser = await launchChromium(playwright!);
});

after(async () => {
  await browser?.close();
  if (dir) fs.rmSync(dir, {recursive: true, force: true});
});

/** A page showing the webview; `onMessage` is the host's side. Resolves once it said `ready`. */
async function openWebview(onMessage: (message: WebviewToHost, page: Page) => void): Promise<{page: Page; posted: WebviewToHost[]}> {
  const page = await browser!.newPage({viewport: {width: 1400, height: 900}});
  const posted: WebviewToHost[] = [];
  let ready: () => void = () => {};
  const isReady = new Promise<void>((resolve) => (ready = resolve));
  await page.exposeFunction('__toHost', (message: WebviewToHost) => {
    posted.push(message);
    if (message.type === 'painted') void page.evaluate('window.__painted = true');
    if (message.type === 'export') void page.evaluate(`(window.__exports = window.__exports || []).push({format: ${JSON.stringify(message.format)}})`);
    if (message.type === 'ready') ready();
    onMessage(message, page);
  });
  await page.goto(`file://${path.join(dir, 'page.html')}`);
  await isReady;
  return {page, posted};
}

function send(page: Page, message: HostToWebview): Promise<void> {
  return page.evaluate(`window.postMessage(${JSON.stringify(message)}, '*')`);
}

/** What must hold on every page at the end: the CSP held and no token ran as HTML. */
async function assertInert(page: Page): Promise<void> {
  const r = await page.evaluate<{violations: string[]; alerts: string[]; images: number}>(
    `({violations: window.__violations, alerts: window.__alerts, images: document.querySelectorAll('img').length})`,
  );
  assert.deepEqual(r.violations, [], 'no CSP violations');
  assert.deepEqual(r.alerts, [], 'the injected HTML never ran');
  assert.equal(r.images, 0, 'no <img> element was created from a token');
}

/** The heads panel's rows, top to bottom: [head, raw contribution as shown]. */
function headRows(page: Page): Promise<[number, number][]> {
  return page.evaluate(`[...document.querySelectorAll('.details tr[data-head]')].map((r) => [Number(r.dataset.head), Number(r.children[2].textContent)])`);
}

async function setThreshold(page: Page, value: string): Promise<void> {
  const input = page.locator('#threshold');
  await input.fill(value);
  await input.dispatchEvent('change');
}

test('the webview draws a synthetic route, shows cards, heads and neurons, re-routes locally and keeps HTML tokens as text', {skip}, async () => {
  const wire = syntheticWire();
  wire['tokens'].strings = ['<bos>', XSS, 'b'];
  wire['vocabulary'].strings[4] = XSS;
  const {page, posted} = await openWebview(() => {});
  await send(page, {type: 'load', name: 'x.lmtrace', bytes: encodeBase64(encodeWire(wire)), settings: {threshold: 0.04, mode: 'renormalize'}});
  await send(page, {type: 'daemon', live: false, reason: 'no daemon in this test'});
  const edges = page.locator('path.edge');
  await edges.first().waitFor({state: 'attached'});
  const before = await edges.count();
  const kinds = await page.evaluate(`[...new Set([...document.querySelectorAll('path.edge')].map((e) => e.classList[1]))].sort()`);
  assert.deepEqual(kinds, ['attention', 'ffn', 'residual']);
  assert.ok(await page.locator('.column-label').filter({hasText: XSS_SHOWN}).count(), 'the HTML token is shown as text');
  await page.waitForFunction(`window.__painted`);
  assert.ok(posted.some((m) => m.type === 'painted' && m.edges === before), 'the host hears when the route is on screen');
  assert.match(await page.locator('.legend').innerText(), /R residual[\s\S]*A after attention[\s\S]*M FFN[\s\S]*X embedding[\s\S]*output/);

  const attention = page.locator('path.edge.attention').first();
  await attention.dispatchEvent('mouseover');
  await page.locator('.card:not([hidden])').waitFor();
  assert.match(await page.locator('.card').innerText(), /weight/);
  await attention.dispatchEvent('click');
  await page.locator('.details tr[data-head]').first().waitFor();
  assert.equal(await page.locator('.details tr[data-head]').count(), 2, 'the per-head list has every head');
  // Both numbers of a head, labelled: as drawn (renormalised, the hover's) and raw.
  const header = await page.locator('.details table.heads tr').first().innerText();
  assert.match(header, /drawn \(renorm\.\)[\s\S]*raw contribution[\s\S]*attention/);
  const shown = (await headRows(page)).map(([, contribution]) => contribution);
  assert.deepEqual(shown, [...shown].sort((a, b) => b - a), 'heads by contribution, largest first');
  assert.match(await page.locator('.details').innerText(), /needs the model — trace again/);

  await page.locator('svg.graph .node.ffn[data-node="M0.2"]').dispatchEvent('click');
  await page.locator('.details tr[data-neuron]').first().waitFor();
  const neurons = await page.locator('.details').innerText();
  assert.match(neurons, /L0\.N3/);
  assert.match(neurons, /\+1\.500/);
  assert.match(neurons, /Block promotes/, 'the stored ffn_update projection of the block');

  // A residual node whose logit lens the file does not store, with no live daemon behind it.
  await page.locator('svg.graph .node.residual[data-node="R0.2"]').dispatchEvent('click');
  await page.locator('.details .not-stored').waitFor();
  assert.match(await page.locator('.details').innerText(), /logit lens of R0\.2 is not stored in this file; it needs the model — trace again/);

  // The panel follows the route: another output token's route lacks R0.2, so it closes.
  assert.ok(await page.locator('.details:not([hidden])').count());
  await page.evaluate(`(() => { const s = document.querySelector('#token'); s.value = '1'; s.dispatchEvent(new Event('change')); })()`);
  await page.locator('.details[hidden]').waitFor({state: 'attached'});

  await page.evaluate(`(() => { const s = document.querySelector('#token'); s.value = '2'; s.dispatchEvent(new Event('change')); })()`);
  await setThreshold(page, '0.1');
  await page.waitForFunction(`document.querySelectorAll('path.edge').length !== ${before}`);
  assert.ok((await edges.count()) < before, 'threshold 0.1 keeps fewer edges');
  assert.equal(await page.evaluate('window.__state.threshold'), 0.1);
  assert.ok(posted.some((m) => m.type === 'settingsChanged'));

  // Export: the shown route as an SVG document (the HTML token escaped) and as PNG bytes.
  await page.locator('button.export').click();
  await page.locator('button.export-svg').click();
  await page.waitForFunction(`window.__exports && window.__exports.some((m) => m.format === 'svg')`);
  await page.locator('button.export').click();
  await page.locator('button.export-png').click();
  await page.waitForFunction(`window.__exports && window.__exports.some((m) => m.format === 'png')`);
  const svgExport = posted.find((m) => m.type === 'export' && m.format === 'svg');
  const pngExport = posted.find((m) => m.type === 'export' && m.format === 'png');
  assert.ok(svgExport?.type === 'export' && pngExport?.type === 'export');
  assert.match(svgExport.data, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.ok(svgExport.data.includes('&lt;bos&gt;') && !/<(bos|img)/.test(svgExport.data), 'tokens are escaped text in the SVG');
  assert.equal((svgExport.data.match(/<path /g) ?? []).length, await edges.count(), 'every shown edge is exported');
  assert.match(svgExport.name, /^x\.token-2\.svg$/);
  const png = Buffer.from(pngExport.data, 'base64');
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG bytes');
  await assertInert(page);
  await page.close();
});

test('an FFN node of a mixture-of-experts layer shows its experts (label, gate, shares) above neurons labelled by expert; picking an expert filters them', {skip}, async () => {
  const {page, posted} = await openWebview(() => {});
  await send(page, {type: 'load', name: 'moe.lmtrace', bytes: encodeBase64(encodeWire(syntheticMoeWire())), settings: {threshold: 0.04, mode: 'renormalize'}});
  await send(page, {type: 'daemon', live: false, reason: 'no daemon in this test'});
  const ffn = page.locator('svg.graph .node.ffn[data-node="M0.2"]');
  await ffn.waitFor({state: 'attached'});
  await ffn.dispatchEvent('mouseover');
  await page.locator('.card:not([hidden])').waitFor();
  assert.match(await page.locator('.card').innerText(), /Click for experts and neurons/);
  await ffn.dispatchEvent('click');
  await page.locator('.details tr[data-expert]').first().waitFor();
  // Experts, strongest first, from the file: label, gate, c_e and the share of the FFN part.
  const experts = await page.evaluate<string[][]>(`[...document.querySelectorAll('.details table.experts tr')].map((r) => [...r.children].map((c) => c.textContent))`);
  assert.deepEqual(experts, [
    ['expert', 'gate', 'contribution', '', 'of the FFN'],
    ['L0.S0', '0.750', '0.5000', '', '66.7%'],
    ['L0.E1', '0.625', '0.2500', '', '33.3%'],
  ]);
  const titles = await page.evaluate<string[]>(`[...document.querySelectorAll('.details table.experts th[title]')].map((t) => t.title)`);
  assert.equal(titles.length, 3, 'gate, contribution and share explain themselves');
  assert.match(await page.locator('.details .expert-list').innerText(), /From this file/);
  // The experts come first, then the neurons, labelled by expert.
  const order = await page.evaluate<string[]>(`[...document.querySelectorAll('.details .expert-list, .details .neuron-list')].map((e) => e.className)`);
  assert.deepEqual(order, ['expert-list', 'neuron-list']);
  const neuronLabels = () => page.evaluate<string[]>(`[...document.querySelectorAll('.details tr[data-neuron]')].filter((r) => !r.hidden).map((r) => r.children[0].textContent)`);
  assert.deepEqual(await neuronLabels(), ['L0.S0.N1', 'L0.E1.N0']);
  assert.match(await page.locator('.details .neuron-detail').innerText(), /L0\.S0\.N1/);
  // Picking an expert shows only its neurons; picking it again shows them all.
  await page.locator('.details tr[data-expert="L0.E1"]').first().click();
  assert.deepEqual(await neuronLabels(), ['L0.E1.N0']);
  await page.locator('.details table.experts tr[data-expert="L0.E1"]').click();
  assert.deepEqual(await neuronLabels(), ['L0.S0.N1', 'L0.E1.N0']);
  // A node whose experts the file does not store says so (no daemon behind this page).
  const others = await page.evaluate<string[]>(`[...document.querySelectorAll('svg.graph .node.ffn')].map((n) => n.dataset.node).filter((id) => id !== 'M0.2')`);
  assert.ok(others.length > 0, `another FFN node on the route: ${others.join(', ')}`);
  await page.locator(`svg.graph .node.ffn[data-node="${others[0]}"]`).dispatchEvent('click');
  await page.locator('.details .expert-list .note').waitFor();
  assert.match(await page.locator('.details .expert-list').innerText(), /this file stores the experts of .*; the others need the model/);
  assert.equal(posted.filter((m) => m.type === 'query').length, 0, 'nothing is asked of a daemon that does not hold the trace');
  await assertInert(page);
  await page.close();
});

/** Geometry of the page: every route node inside the canvas, and no two visible labels overlapping. */
async function geometry(page: Page): Promise<{nodes: number; outside: string[]; overlaps: string[]; labels: number}> {
  return page.evaluate(`(() => {
    const c = document.querySelector('.canvas').getBoundingClientRect();
    const outside = [...document.querySelectorAll('svg.graph .node')].filter((n) => {
      const r = n.getBoundingClientRect();
      return r.left < c.left - 0.5 || r.right > c.right + 0.5 || r.top < c.top - 0.5 || r.bottom > c.bottom + 0.5;
    }).map((n) => n.dataset.node);
    const labels = [...document.querySelectorAll('.column-label, .row-label')].filter((l) => !l.hidden).map((l) => [l.textContent, l.getBoundingClientRect()]);
    const overlaps = [];
    for (let i = 0; i < labels.length; i++) for (let j = i + 1; j < labels.length; j++) {
      const [a, p] = labels[i], [b, q] = labels[j];
      if (p.left < q.right - 0.5 && q.left < p.right - 0.5 && p.top < q.bottom - 0.5 && q.top < p.bottom - 0.5) overlaps.push(a + ' / ' + b);
    }
    return {nodes: document.querySelectorAll('svg.graph .node').length, outside, overlaps, labels: labels.length};
  })()`);
}

test('a 1000-token, 30-layer trace opens in the side column with the whole route fitted, then re-routes at new thresholds (times measured)', {skip, timeout: 120_000}, async (t) => {
  const bytes = encodeWire(longWire(1000, 30, 9));
  const page = await browser!.newPage({viewport: {width: 540, height: 900}});
  const painted: number[] = [];
  let ready: () => void = () => {};
  const isReady = new Promise<void>((resolve) => (ready = resolve));
  await page.exposeFunction('__toHost', (message: WebviewToHost) => {
    if (message.type === 'ready') ready();
    if (message.type === 'painted') {
      painted.push(message.ms);
      void page.evaluate('window.__painted = true');
    }
  });
  await page.goto(`file://${path.join(dir, 'page.html')}`);
  await isReady;
  // The bytes arrive as a Uint8Array, as the host sends them; the clock starts at arrival.
  await page.evaluate(`(() => {
    const bytes = Uint8Array.from(atob(${JSON.stringify(Buffer.from(bytes).toString('base64'))}), (c) => c.charCodeAt(0));
    window.postMessage({type: 'load', name: 'long.lmtrace', bytes, settings: {threshold: 0.04, mode: 'renormalize'}}, '*');
  })()`);
  await page.waitForFunction('window.__painted');
  const edges = await page.evaluate<number>(`document.querySelectorAll('path.edge').length`);
  const fitted = await geometry(page);
  assert.ok(edges > 500, `a route of some size: ${edges} edges`);
  assert.deepEqual(fitted.outside, [], 'after the first fit every route node is inside the canvas');
  assert.deepEqual(fitted.overlaps, [], 'no two labels overlap');
  assert.ok(fitted.labels > 10, 'token and layer labels are shown');
  // Re-routing: from the threshold's change to the end of the frame that shows the new route
  // (a task queued from that frame's requestAnimationFrame runs after its style, layout and
  // paint), at thresholds not shown before, each from an idle page.
  const reroute = await page.evaluate<number[]>(`(async () => {
    const input = document.querySelector('#threshold');
    const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
    const times = [];
    for (const v of ['0.05', '0.041', '0.06', '0.042', '0.045', '0.043', '0.055', '0.044']) {
      await frame();
      await frame();
      input.value = v;
      const t0 = performance.now();
      input.dispatchEvent(new Event('change'));
      await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
      times.push(performance.now() - t0);
    }
    return times;
  })()`);
  const after = await geometry(page);
  assert.deepEqual(after.outside, [], 'after re-routing every route node is still inside the canvas');
  assert.deepEqual(after.overlaps, []);
  const median = [...reroute].sort((a, b) => a - b)[Math.floor(reroute.length / 2)]!;
  t.diagnostic(`1000 tokens x 30 layers, ${bytes.length} bytes, ${edges} route edges at τ 0.04: first paint ${painted[0]} ms; re-route to a painted frame, median ${median.toFixed(1)} ms (${reroute.map((v) => v.toFixed(1)).join(', ')})`);
  await page.close();
});

// ---- a trace made by the engine, with a live daemon behind it ------------------------------------
interface Daemon {
  connection: ProtocolConnection;
  exited: Promise<number | null>;
}

function startDaemon(): Daemon {
  const child = spawn(PYTHON, ['-m', 'lmscope', 'serve', '--stdio', '--log-level', 'warning'], {
    cwd: ROOT,
    stdio: ['pipe', 'pipe', 'inherit'],
    env: {...process.env, HF_HUB_OFFLINE: '1', TRANSFORMERS_VERBOSITY: 'error'},
  });
  const connection = createProtocolConnection(new StreamMessageReader(child.stdout), new StreamMessageWriter(child.stdin));
  connection.listen();
  return {connection, exited: new Promise((done) => child.on('exit', (code) => done(code)))};
}

test('a trace the engine made renders: threshold changes the edge count, hover shows the card, a click shows heads, maps come from the live daemon, HTML tokens stay text', {skip, timeout: 240_000}, async () => {
  const model = path.join(dir, 'model');
  execFileSync(PYTHON, [path.join(ROOT, 'tests', 'fixtures', 'webview_model.py'), model], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'inherit'],
    env: {...process.env, HF_HUB_OFFLINE: '1', TRANSFORMERS_VERBOSITY: 'error', HF_HUB_DISABLE_PROGRESS_BARS: '1'},
  });
  const daemon = startDaemon();
  const rpc = daemon.connection;
  try {
    await rpc.sendRequest('initialize', {processId: process.pid, rootUri: null, capabilities: {}, initializationOptions: {protocolVersion: '1'}});
    await rpc.sendNotification('initialized', {});
    await rpc.sendRequest('lmscope/loadModel', {spec: model});
    const file = path.join(dir, 'engine.lmtrace');
    const traced = await rpc.sendRequest<{trace: {handle: string; tokens: string[]; nHeads: number; live: boolean}}>('lmscope/trace', {
      prompt: `when mary and ${XSS} went to the store , john gave a drink to`,
      savePath: file,
    });
    assert.ok(traced.trace.live && traced.trace.tokens.includes(XSS), 'the engine kept the HTML token as one token');
    const handle = traced.trace.handle;

    // The host's part: answer queries from the daemon, adding the trace handle.
    const queries: string[] = [];
    const {page} = await openWebview((message, page) => {
      if (message.type !== 'query') return;
      queries.push(message.method);
      rpc.sendRequest(message.method, {...message.params, handle}).then(
        (result) => send(page, {type: 'queryResult', id: message.id, result}),
        (error: {message: string; code?: number}) => send(page, {type: 'queryResult', id: message.id, error: {message: error.message, needsModel: error.code === -32004}}),
      );
    });
    await send(page, {type: 'load', name: 'engine.lmtrace', bytes: encodeBase64(fs.readFileSync(file)), settings: {threshold: 0.01, mode: 'renormalize'}});
    await send(page, {type: 'daemon', live: false, reason: 'the daemon has no model loaded'});
    const edges = page.locator('path.edge');
    await edges.first().waitFor({state: 'attached'});
    const low = await edges.count();
    assert.ok(await page.locator('.column-label').filter({hasText: XSS_SHOWN}).count(), 'the HTML token labels its column as text');

    // Hover: the card. Click: every head; without a live trace the maps need the model.
    const attention = page.locator('path.edge.attention:not(.self)').first();
    await attention.dispatchEvent('mouseover');
    await page.locator('.card:not([hidden])').waitFor();
    const card = await page.locator('.card').innerText();
    assert.match(card, /weight/);
    assert.match(card, /Top heads/);
    await attention.dispatchEvent('click');
    await page.locator('.details tr[data-head]').first().waitFor();
    assert.equal(await page.locator('.details tr[data-head]').count(), traced.trace.nHeads, 'the per-head list has every head');
    // In the daemon's order (lmscope/edgeHeads), exactly: the file's answer is shown as it comes.
    const label = (await attention.getAttribute('aria-label')) ?? '';
    const [, source, layer, target] = /^attention (?:X|R\d+\.)(\d+) → A(\d+)\.(\d+),/.exec(label) ?? assert.fail(`an attention edge: ${label}`);
    const daemonHeads = await rpc.sendRequest<{heads: {head: number}[]}>('lmscope/edgeHeads', {handle, layer: Number(layer), target: Number(target), source: Number(source)});
    assert.deepEqual((await headRows(page)).map(([head]) => head), daemonHeads.heads.map((h) => h.head), 'heads in the daemon\'s order');
    assert.match(await page.locator('.details .head-detail').innerText(), /needs the model — trace again/);
    // An FFN node: its stored neurons (the selected one's tokens need the model), or, when the
    // file does not store them, a note saying so.
    const ffn = page.locator('svg.graph .node.ffn').first();
    await ffn.dispatchEvent('click');
    await page.locator('.details .neuron-detail .needs-model, .details .neuron-list .note').first().waitFor();
    if (await page.locator('.details tr[data-neuron]').count()) {
      assert.match(await page.locator('.details .neuron-detail').innerText(), /needs the model — trace again/);
    }
    assert.equal(queries.length, 0, 'nothing is asked of a daemon that does not hold the trace');

    // Live: the chosen head's attention and contribution maps and its tokens, from the daemon.
    await send(page, {type: 'daemon', live: true, reason: ''});
    await attention.dispatchEvent('click');
    await page.locator('.details .head-detail canvas').nth(1).waitFor();
    const head = await page.locator('.details .head-detail').innerText();
    assert.match(head, /Attention map of L\d+H\d+/);
    assert.match(head, /Contribution map of L\d+H\d+/);
    assert.match(head, /Head promotes/);
    assert.equal(await page.locator('.details .head-detail .tok-section').first().locator('li').count(), 8);
    // Another head, picked from the list.
    const second = page.locator('.details tr[data-head]').nth(1);
    const secondHead = await second.getAttribute('data-head');
    await second.click();
    await page.locator('.details .head-title', {hasText: `H${secondHead}`}).waitFor();
    await page.locator('.details .head-detail canvas').nth(1).waitFor();
    // An FFN node: the selected neuron's tokens, and the whole block's.
    await ffn.dispatchEvent('click');
    await page.locator('.details .neuron-detail .tok-section').first().waitFor();
    const neuron = await page.locator('.details').innerText();
    assert.match(neuron, /Neuron promotes/);
    assert.match(neuron, /Neuron suppresses/);
    // The block's tokens: from the file when it stores them, else asked of the daemon.
    assert.match(neuron, /Whole block L\d+\.ffn/);
    assert.ok(queries.includes('lmscope/headMaps') && queries.includes('lmscope/component'));
    assert.ok(queries.every((m) => ['lmscope/headMaps', 'lmscope/component', 'lmscope/projection', 'lmscope/ffnNeurons'].includes(m)));

    // Thresholds re-route locally: fewer edges at 0.1, and no query for it.
    const asked = queries.length;
    await setThreshold(page, '0.1');
    await page.waitForFunction(`document.querySelectorAll('path.edge').length !== ${low}`);
    assert.ok((await edges.count()) < low, 'threshold 0.1 keeps fewer edges than 0.01');
    assert.equal(queries.length, asked);
    await assertInert(page);
    await page.close();
  } finally {
    await rpc.sendRequest('shutdown').catch(() => undefined);
    await rpc.sendNotification('exit').catch(() => undefined);
    await daemon.exited;
    rpc.dispose();
  }
});

test('the diff view draws both routes coloured by gain and loss, re-diffs at a new τ and shows A, B and Δ in cards', {skip}, async () => {
  const a = syntheticWire();
  const b = syntheticWire();
  b['tokens'].prompt = 'a c';
  // B: the last token keeps less of its own residual at layer 1, so its attention gains.
  b['blocks'].residualAttention = f32([2, 3], [0.7, 0.5, 0.3, 0.6, 0.03, 0.05]);
  const {page} = await openWebview(() => {});
  const bytes = (wire: Record<string, unknown>) => encodeBase64(encodeWire(wire));
  await send(page, {type: 'loadDiff', nameA: 'a.lmtrace', nameB: 'b.lmtrace', bytesA: bytes(a), bytesB: bytes(b), alignLast: null, settings: {threshold: 0.04, mode: 'renormalize'}});
  await page.locator('path.edge').first().waitFor({state: 'attached'});
  assert.equal(await page.locator('.title').innerText(), 'A: a b vs B: a c');
  const classes = await page.evaluate<string[]>(`[...document.querySelectorAll('path.edge, .node')].flatMap((e) => [...e.classList].filter((c) => c.startsWith('diff-')))`);
  assert.ok(classes.includes('diff-gain') && classes.includes('diff-loss'), `gains and losses drawn: ${classes.join(' ')}`);
  assert.match(await page.locator('.summary').innerText(), /edges on both/);
  const edge = page.locator('path.edge.diff-loss').first();
  await edge.dispatchEvent('mouseover');
  await page.locator('.card:not([hidden])').waitFor();
  assert.match(await page.locator('.card').innerText(), /weight in A \/ B[\s\S]*Δ weight/);
  const before = await page.locator('path.edge').count();
  await setThreshold(page, '0.3');
  await page.waitForFunction(`document.querySelectorAll('path.edge').length !== ${before}`);
  // Another model's trace is refused, naming both.
  const other = syntheticWire();
  other['model'].contentHash = 'sha256:1';
  other['model'].name = 'other';
  await send(page, {type: 'loadDiff', nameA: 'a.lmtrace', nameB: 'o.lmtrace', bytesA: bytes(a), bytesB: bytes(other), alignLast: null, settings: {threshold: 0.04, mode: 'renormalize'}});
  await page.waitForFunction(`document.body.innerText.includes('cannot compare traces of different models')`);
  await assertInert(page);
  await page.close();
});

// ---- causal checks: ablate toggles and Verify route, against a host that answers by hand ---------
type Query = Extract<WebviewToHost, {type: 'query'}>;

/** The queries a page posts, in order: `next()` resolves with the next one (already posted or not). */
function queryInbox(): {onMessage: (message: WebviewToHost) => void; next: () => Promise<Query>; count: () => number} {
  const queue: Query[] = [];
  const waiting: ((q: Query) => void)[] = [];
  let seen = 0;
  return {
    onMessage: (message) => {
      if (message.type !== 'query') return;
      seen++;
      const waiter = waiting.shift();
      if (waiter) waiter(message);
      else queue.push(message);
    },
    next: () => {
      const q = queue.shift();
      return q ? Promise.resolve(q) : new Promise((resolve) => waiting.push(resolve));
    },
    count: () => seen,
  };
}

/** The daemon's answer to lmscope/ablate, shaped as the protocol's example (" Mary" 0.836 → 0.647). */
function ablateAnswer(params: Record<string, unknown>, top: string): unknown {
  const logprob = Math.log(0.836), ablatedLogprob = Math.log(0.647);
  return {targets: params['targets'], kind: params['kind'], position: params['token'], token: ' Mary', tokenId: 5, logprob, ablatedLogprob, deltaLogprob: ablatedLogprob - logprob, top: [{token: top, id: 4, prob: 0.647}]};
}

const NEEDS_MODEL_ERROR = {message: 'the trace\'s model is not loaded (loaded: other)', needsModel: true};

test('ablate toggles on a head, the edge, a head everywhere, an FFN node and a neuron ask for their target and kind and show Δ log p where clicked; NeedsModel shows the note', {skip}, async () => {
  const inbox = queryInbox();
  const {page, posted} = await openWebview(inbox.onMessage);
  await send(page, {type: 'load', name: 'x.lmtrace', bytes: encodeBase64(encodeWire(syntheticWire())), settings: {threshold: 0.04, mode: 'renormalize'}});
  await send(page, {type: 'daemon', live: true, reason: ''});
  const attention = page.locator('path.edge.attention:not(.self)').first();
  await attention.waitFor({state: 'attached'});
  await attention.dispatchEvent('mouseover'); // describes the edge (its aria-label)
  const label = (await attention.getAttribute('aria-label')) ?? '';
  const [, source, layer, target] = /^attention (?:X|R\d+\.)(\d+) → A(\d+)\.(\d+),/.exec(label) ?? assert.fail(`an attention edge: ${label}`);
  await attention.dispatchEvent('click');
  await page.locator('.details tr[data-head]').first().waitFor();
  // Picking the edge asked for the first head's maps: answer it, the panel is live.
  const maps = await inbox.next();
  assert.equal(maps.method, 'lmscope/headMaps');

  // A head's term of the edge: the toggle in its row.
  const firstRow = page.locator('.details tr[data-head]').first();
  const head = await firstRow.getAttribute('data-head');
  await firstRow.locator('button.ablate-toggle').click();
  const asked = await inbox.next();
  assert.equal(asked.method, 'lmscope/ablate');
  assert.deepEqual(asked.params, {targets: [`L${layer}H${head}:${target}<-${source}`], kind: 'zero', token: 2});
  assert.equal(await firstRow.locator('button.ablate-toggle').getAttribute('aria-busy'), 'true', 'busy while the daemon works');
  assert.match(await page.locator('.details tr.ablation-row').innerText(), /ablating \(zero\)… asking the daemon/);
  await send(page, {type: 'queryResult', id: asked.id, result: ablateAnswer(asked.params, XSS)});
  const result = page.locator('.details tr.ablation-row .ablation-result');
  await result.waitFor();
  assert.equal(await result.innerText(), `Δ log p −0.26 (p 83.6% → 64.7%) · top “${XSS_SHOWN}” 64.7%`);
  assert.match((await result.getAttribute('title')) ?? '', /^Ablating L\d+H\d+:\d+<-\d+ \(zero\) in one forward pass of the model: log p of the traced prediction “·Mary” at token 2 goes from -0\.179 to -0\.435/);
  assert.equal(await firstRow.getAttribute('aria-selected'), 'true', 'the toggle does not pick another head');
  assert.equal(await firstRow.locator('button.ablate-toggle').getAttribute('aria-busy'), null);

  // The whole edge, with the kind switched to mean; then both pressed, ablated together.
  await page.evaluate(`(() => { const s = document.querySelector('.details .ablate-kind'); s.value = 'mean'; s.dispatchEvent(new Event('change')); })()`);
  const edgeLine = page.locator('.details .ablate-line', {hasText: 'the whole edge'});
  await edgeLine.locator('button.ablate-toggle').click();
  const edgeAsked = await inbox.next();
  assert.deepEqual(edgeAsked.params, {targets: [`L${layer}:${target}<-${source}`], kind: 'mean', token: 2});
  await send(page, {type: 'queryResult', id: edgeAsked.id, result: ablateAnswer(edgeAsked.params, ' to')});
  await edgeLine.locator('.ablation-result').waitFor();
  const together = page.locator('.details button.ablate-together');
  assert.equal(await together.innerText(), 'ablate 2 selected together');
  await together.click();
  const setAsked = await inbox.next();
  assert.deepEqual(setAsked.params, {targets: [`L${layer}:${target}<-${source}`, `L${layer}H${head}:${target}<-${source}`], kind: 'mean', token: 2});
  await send(page, {type: 'queryResult', id: setAsked.id, result: ablateAnswer(setAsked.params, ' to')});
  await page.locator('.details .ablate-bar .ablation-result').waitFor();
  // Pressed again, a toggle takes its answer away.
  await firstRow.locator('button.ablate-toggle').click();
  await page.locator('.details tr.ablation-row[hidden]').waitFor({state: 'attached'});
  assert.equal(await firstRow.locator('button.ablate-toggle').getAttribute('aria-pressed'), 'false');

  // The chosen head everywhere, beside its title; the daemon says the model is not loaded.
  const headLine = page.locator('.details .head-detail .ablate-line');
  await headLine.locator('button.ablate-toggle').click();
  const headAsked = await inbox.next();
  assert.deepEqual(headAsked.params, {targets: [`L${layer}H${head}`], kind: 'mean', token: 2});
  await send(page, {type: 'queryResult', id: headAsked.id, error: NEEDS_MODEL_ERROR});
  await headLine.locator('.needs-model').waitFor();
  assert.match(await headLine.innerText(), /Ablating L\d+H\d+ needs the model — trace again \(Trace Selection with the daemon running; here: the trace's model is not loaded/);

  // An FFN node and one of its neurons (the kind stays mean).
  await page.locator('svg.graph .node.ffn[data-node="M0.2"]').dispatchEvent('click');
  await page.locator('.details tr[data-neuron]').first().waitFor();
  assert.equal((await inbox.next()).method, 'lmscope/component', 'the first neuron\'s card');
  await page.locator('.details .ablate-line', {hasText: 'FFN block'}).locator('button.ablate-toggle').click();
  let next = await inbox.next();
  assert.deepEqual(next.params, {targets: ['L0.ffn@2'], kind: 'mean', token: 2});
  await page.locator('.details tr[data-neuron="3"] button.ablate-toggle').click();
  next = await inbox.next();
  assert.deepEqual(next.params, {targets: ['L0.N3@2'], kind: 'mean', token: 2});
  await send(page, {type: 'queryResult', id: next.id, result: ablateAnswer(next.params, ' to')});
  await page.locator('.details tr.ablation-row .ablation-result').waitFor();
  assert.match(await page.locator('.details tr.ablation-row').innerText(), /Δ log p −0\.26/);

  // Without a live daemon trace nothing is asked: the note says why.
  await send(page, {type: 'daemon', live: false, reason: 'the daemon has no model loaded'});
  const asksBefore = inbox.count();
  await page.locator('.details tr[data-neuron="1"] button.ablate-toggle').click();
  await page.locator('.details tr.ablation-row .needs-model').waitFor();
  assert.match(await page.locator('.details tr.ablation-row', {hasText: 'N1'}).innerText(), /Ablating L0\.N1@2 needs the model — trace again .*here: the daemon has no model loaded/);
  assert.equal(inbox.count(), asksBefore);
  assert.ok(posted.every((m) => m.type !== 'query' || !('handle' in m.params)));
  await assertInert(page);
  await page.close();
});

test('Verify route shows the faithfulness figure beside the edge count, drops it when τ or the token change, and says when it needs the model', {skip}, async () => {
  const inbox = queryInbox();
  const {page} = await openWebview(inbox.onMessage);
  await send(page, {type: 'load', name: 'x.lmtrace', bytes: encodeBase64(encodeWire(syntheticWire())), settings: {threshold: 0.04, mode: 'renormalize'}});
  await send(page, {type: 'daemon', live: true, reason: ''});
  await page.locator('path.edge').first().waitFor({state: 'attached'});
  const figure = page.locator('.headline .faithfulness');
  const verified = {threshold: 0.04, kind: 'zero', position: 2, token: XSS, tokenId: 5, fullProb: 0.836, routeProb: 4.8e-9, kept: 5.7e-9, keptEdges: 70, totalEdges: 32400, keptFfn: 77, totalFfn: 450, randomProbs: [5.8e-12, 2.4e-11], randomKept: 1.8e-11, seed: 0};

  await page.locator('button.verify-route').click();
  const asked = await inbox.next();
  assert.equal(asked.method, 'lmscope/verifyRoute');
  assert.deepEqual(asked.params, {token: 2, threshold: 0.04, mode: 'renormalize', kind: 'zero'});
  assert.equal(await figure.innerText(), 'verifying route (zero)…');
  assert.equal(await page.locator('button.verify-route').getAttribute('aria-busy'), 'true');
  await send(page, {type: 'queryResult', id: asked.id, result: verified});
  await page.locator('.headline .faithfulness.verified').waitFor();
  assert.equal(await figure.innerText(), 'kept p 5.7e-9 of full; random 1.8e-11 (seed 0)');
  assert.ok(await page.evaluate<boolean>(`document.querySelector('.faithfulness').previousElementSibling === document.querySelector('.summary')`), 'beside the edge count');
  assert.match(await page.locator('.summary').innerText(), /^\d+ edges/);
  const title = (await figure.getAttribute('title')) ?? '';
  assert.match(title, /^Verify route at τ 0\.04 \(renormalised, zero ablation\): keeping only the route — 70 of 32400 attention terms \(head, i←j\) and 77 of 450 FFN nodes/);
  assert.match(title, /2 random sets of the same size \(seed 0\) keep 1\.8e-11 on average/);
  assert.equal(await page.locator('button.verify-route').getAttribute('aria-busy'), null);

  // Another τ: the figure goes.
  await setThreshold(page, '0.1');
  await page.locator('.headline .faithfulness[hidden]').waitFor({state: 'attached'});
  // Verified again at 0.1; then another output token: it goes too, and a late answer is dropped.
  await page.locator('button.verify-route').click();
  const again = await inbox.next();
  assert.deepEqual(again.params, {token: 2, threshold: 0.1, mode: 'renormalize', kind: 'zero'});
  await page.evaluate(`(() => { const s = document.querySelector('#token'); s.value = '1'; s.dispatchEvent(new Event('change')); })()`);
  await page.locator('.headline .faithfulness[hidden]').waitFor({state: 'attached'});
  await send(page, {type: 'queryResult', id: again.id, result: {...verified, threshold: 0.1}});
  // The daemon without the trace's model: the note, at the new token.
  await page.locator('button.verify-route').click();
  const third = await inbox.next();
  assert.deepEqual(third.params, {token: 1, threshold: 0.1, mode: 'renormalize', kind: 'zero'});
  await send(page, {type: 'queryResult', id: third.id, error: NEEDS_MODEL_ERROR});
  await page.locator('.headline .faithfulness.needs-model').waitFor();
  assert.equal(await figure.innerText(), 'verify route needs the model — trace again');
  assert.match((await figure.getAttribute('title')) ?? '', /model is not loaded/);
  // No live trace at all (a saved file): the note, and nothing asked.
  await send(page, {type: 'daemon', live: false, reason: 'the daemon has no model loaded'});
  await setThreshold(page, '0.05');
  await page.locator('.headline .faithfulness[hidden]').waitFor({state: 'attached'});
  await page.locator('button.verify-route').click();
  await page.locator('.headline .faithfulness.needs-model').waitFor();
  assert.match((await figure.getAttribute('title')) ?? '', /here the daemon has no model loaded/);
  assert.equal(inbox.count(), 3);
  await assertInert(page);
  await page.close();
});
