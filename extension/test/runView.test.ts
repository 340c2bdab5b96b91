// The run view: its messages and the path rule of "open trace" (pure, always run), and the
// webview itself in headless Chromium driven by playwright-core (as webview.test.ts: skipped
// where Chromium or tools/code-server's playwright-core is absent). The bundle is built in memory
// with esbuild and loaded under the VS Code CSP, with a stub of acquireVsCodeApi; this test plays
// the host, answering each query with lmscope/run answers from protocol/examples/ (the daemon's
// own are checked against the same schema by tests/test_run_view.py). Synchronisation is on
// posted messages and selectors, never on sleeps.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {after, before, test} from 'node:test';
import type {RunResult} from '../shared/protocol/types';
import {componentLabel, isHostToRunView, isRunViewToHost, traceSegments, type HostToRunView, type RunViewToHost} from '../shared/runMessages';
import {ROOT} from './helpers';
import {buildPage, launchChromium, loadPlaywright, skipReason, type Browser} from './webviewPage';

const NONCE = 'runviewnoncerunviewnonce';
const example = (name: string): RunResult => JSON.parse(fs.readFileSync(path.join(ROOT, 'protocol', 'examples', name), 'utf8'));
/** An answer with a selected head (L1H0, two top prompts, one an HTML string), and one without. */
const WITH_COMPONENT = example('run.result.valid.1.json');
const PLAIN: RunResult = {...WITH_COMPONENT, component: null};

// --- messages and paths (no browser) ----------------------------------------------------------
test('the webview\'s messages are checked on arrival at the host', () => {
  const query = {stat: 'onRoute', threshold: 0.1, tag: null, component: {kind: 'head', layer: 1, index: 0}};
  assert.ok(isRunViewToHost({type: 'query', id: 3, query}));
  assert.ok(isRunViewToHost({type: 'query', id: 3, query: {...query, component: {kind: 'ffn', layer: 2}}}));
  assert.ok(!isRunViewToHost({type: 'query', id: 3, query: {...query, threshold: 0.05}}), 'only the run\'s thresholds');
  assert.ok(!isRunViewToHost({type: 'query', id: 3, query: {...query, component: {kind: 'head', layer: 1}}}), 'a head needs its index');
  assert.ok(!isRunViewToHost({type: 'query', id: 3, query: {...query, component: {kind: 'ffn', layer: 1, index: 0}}}));
  assert.ok(!isRunViewToHost({type: 'query', id: -1, query}));
  assert.ok(isRunViewToHost({type: 'openTrace', trace: 'traces/00001-a.lmtrace'}));
  assert.ok(!isRunViewToHost({type: 'openTrace'}));
  assert.ok(isHostToRunView({type: 'run', id: 1, result: WITH_COMPONENT}));
  const ragged = {...PLAIN, heads: [[0.1, 0.2], [0.3, 0.4, 0.5]]};
  assert.ok(!isHostToRunView({type: 'run', id: 1, result: ragged}), 'the matrix is nLayers x nHeads');
  assert.equal(componentLabel({kind: 'head', layer: 12, index: 3}), 'L12H3');
  assert.equal(componentLabel({kind: 'ffn', layer: 5}), 'L5.ffn');
});

test('"open trace" opens only .lmtrace files inside the run folder', () => {
  assert.deepEqual(traceSegments('traces/00002-when-mary.lmtrace'), ['traces', '00002-when-mary.lmtrace']);
  for (const hostile of ['../other/x.lmtrace', 'traces/../../x.lmtrace', '/etc/x.lmtrace', 'C:/x.lmtrace', 'traces\\x.lmtrace', 'traces//x.lmtrace', './x.lmtrace', 'run.json', '']) {
    assert.equal(traceSegments(hostile), null, hostile);
  }
});

// --- the webview in Chromium -------------------------------------------------------------------
// The few playwright-core calls used here (its types live in tools/code-server, not here).
interface Locator {
  first(): Locator;
  count(): Promise<number>;
  waitFor(options?: {state?: 'attached' | 'visible'}): Promise<void>;
  innerText(): Promise<string>;
  click(): Promise<void>;
  getAttribute(name: string): Promise<string | null>;
  selectOption(value: string): Promise<unknown>;
  isDisabled(): Promise<boolean>;
}
interface Page {
  locator(selector: string): Locator;
  evaluate<T>(expression: string): Promise<T>;
  exposeFunction(name: string, callback: (message: RunViewToHost) => void): Promise<void>;
  goto(url: string): Promise<unknown>;
  close(): Promise<void>;
}
const playwright = loadPlaywright<Page>();
const skip = skipReason(playwright);

let dir = '';
let browser: Browser<Page> | null = null;

before(async () => {
  if (skip) return;
  dir = await buildPage('runView', 'runView.css', NONCE, 'lmscope-runview-');
  browser = await launchChromium(playwright!);
});

after(async () => {
  await browser?.close();
  if (dir) fs.rmSync(dir, {recursive: true, force: true});
});

/** The host's side of one page: every message the webview posted, and a wait for the next. */
class Host {
  readonly posted: RunViewToHost[] = [];
  private waiting: {match: (m: RunViewToHost) => boolean; resolve: (m: RunViewToHost) => void}[] = [];

  receive(message: RunViewToHost): void {
    this.posted.push(message);
    const found = this.waiting.find((w) => w.match(message));
    if (found !== undefined) {
      this.waiting = this.waiting.filter((w) => w !== found);
      found.resolve(message);
    }
  }

  /** The next message posted that `match`es (one already posted and not yet taken counts). */
  next<T extends RunViewToHost['type']>(type: T, match: (m: Extract<RunViewToHost, {type: T}>) => boolean = () => true): Promise<Extract<RunViewToHost, {type: T}>> {
    const test = (m: RunViewToHost) => m.type === type && match(m as Extract<RunViewToHost, {type: T}>);
    const earlier = this.posted.findIndex(test);
    if (earlier >= 0) return Promise.resolve(this.posted.splice(earlier, 1)[0] as Extract<RunViewToHost, {type: T}>);
    return new Promise((resolve) => this.waiting.push({match: test, resolve: (m) => resolve(m as Extract<RunViewToHost, {type: T}>)}));
  }
}

async function openRunView(): Promise<{page: Page; host: Host}> {
  const page = await browser!.newPage({viewport: {width: 1200, height: 800}});
  const host = new Host();
  await page.exposeFunction('__toHost', (message: RunViewToHost) => host.receive(message));
  await page.goto(`file://${path.join(dir, 'page.html')}`);
  return {page, host};
}

function send(page: Page, message: HostToRunView): Promise<void> {
  return page.evaluate(`window.postMessage(${JSON.stringify(message)}, '*')`);
}

test('the run view draws the heatmap, asks for a clicked cell, lists its top prompts as text and opens a trace', {skip}, async () => {
  const {page, host} = await openRunView();
  await host.next('ready');
  const first = await host.next('query');
  assert.deepEqual(first.query, {stat: 'meanShare', threshold: 0.04, tag: null, component: null}, 'it asks with the defaults');
  await send(page, {type: 'run', id: first.id, result: PLAIN});
  await page.locator('#run-heatmap td.cell').first().waitFor();
  // nLayers rows of nHeads head cells and one FFN cell; the last layer on top.
  assert.equal(await page.locator('#run-heatmap td.cell.head').count(), 2 * 3);
  assert.equal(await page.locator('#run-heatmap td.cell.ffn').count(), 2);
  const rows = await page.evaluate<string[]>(`[...document.querySelectorAll('#run-heatmap tr th[scope=row]')].map((t) => t.textContent)`);
  assert.deepEqual(rows, ['L1', 'L0']);
  assert.equal(await page.locator('td[data-component="L1H0"]').getAttribute('title'), 'L1H0: mean share 30.0%');
  assert.equal(await page.locator('td[data-component="L1.ffn"]').getAttribute('title'), 'L1.ffn: mean share 40.0%');
  // Colour strength: the largest head is full, the others in proportion, FFN blocks apart.
  const strength = (label: string) => page.evaluate<string>(`document.querySelector('td[data-component="${label}"]').style.getPropertyValue('--strength')`);
  assert.equal(await strength('L1H0'), '100%');
  assert.equal(await strength('L0H2'), '37%');
  assert.equal(await strength('L1.ffn'), '100%');
  assert.match(await page.locator('.headline').innerText(), /run ioi[\s\S]*SmolLM2-135M · 3 of 4 prompts traced, 1 failed/);
  assert.match(await page.locator('#run-details').innerText(), /Click a cell/);
  assert.ok(await page.locator('#run-threshold').isDisabled(), 'τ is for on-route frequency only');

  await page.locator('td[data-component="L1H0"]').click();
  const clicked = await host.next('query', (m) => m.query.component !== null);
  assert.deepEqual(clicked.query.component, {kind: 'head', layer: 1, index: 0});
  assert.ok(clicked.id > first.id);
  await send(page, {type: 'run', id: clicked.id, result: WITH_COMPONENT});
  await page.locator('#run-details tr.top-prompt').first().waitFor();
  const details = await page.locator('#run-details').innerText();
  assert.match(details, /L1H0 · attention head/);
  assert.match(details, /on the route in 67% of 3 prompts \(τ 0\.04\) · mean share 30\.0% ± 10\.0%/);
  const cells = await page.evaluate<string[][]>(`[...document.querySelectorAll('#run-details tr.top-prompt')].map((r) => [...r.children].slice(0, 3).map((c) => c.textContent))`);
  assert.deepEqual(cells, [
    ['45.0%', 'p3', 'When Mary and John went to the store, John gave a drink to'],
    ['30.0%', 'line-1', '<img src=x onerror=alert(1)>'],
  ]);
  assert.equal(await page.locator('td.cell.selected').getAttribute('data-component'), 'L1H0');

  await page.locator('#run-details button.open-trace').first().click();
  const open = await host.next('openTrace');
  assert.equal(open.trace, 'traces/00002-when-mary-and-john.lmtrace');

  // Another statistic: on-route frequency at a chosen τ, the selection kept; the tag filter.
  await page.locator('#run-stat').selectOption('onRoute');
  const onRoute = await host.next('query', (m) => m.query.stat === 'onRoute');
  assert.equal(onRoute.query.threshold, 0.04);
  assert.deepEqual(onRoute.query.component, {kind: 'head', layer: 1, index: 0});
  await send(page, {type: 'run', id: onRoute.id, result: {...WITH_COMPONENT, stat: 'onRoute'}});
  await page.locator('#run-threshold').selectOption('0.1');
  assert.equal((await host.next('query', (m) => m.query.threshold === 0.1)).query.stat, 'onRoute');
  await page.locator('#run-tag').selectOption('names');
  const tagged = await host.next('query', (m) => m.query.tag === 'names');
  // A stale answer (an earlier id) is ignored; an error for the latest is shown in one line.
  await send(page, {type: 'run', id: onRoute.id, result: PLAIN});
  await send(page, {type: 'runError', id: tagged.id, message: 'run ioi has no prompt tagged \'names\''});
  await page.locator('.message:not([hidden])').waitFor();
  assert.equal(await page.locator('.message').innerText(), 'run ioi has no prompt tagged \'names\'');
  assert.equal(await page.locator('#run-details tr.top-prompt').count(), 2, 'the stale answer did not replace the list');

  const inert = await page.evaluate<{violations: string[]; alerts: string[]; images: number}>(
    `({violations: window.__violations, alerts: window.__alerts, images: document.querySelectorAll('img').length})`,
  );
  assert.deepEqual(inert, {violations: [], alerts: [], images: 0}, 'the CSP held and no prompt ran as HTML');
  await page.close();
});
