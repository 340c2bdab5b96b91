// What the two webview tests in headless Chromium share (webview.test.ts: the flow graph;
// runView.test.ts: the run view): playwright-core from tools/code-server, the reason a machine
// skips them, and the page each loads: its bundle built in memory with esbuild, under the same
// CSP as in VS Code, with a stub of acquireVsCodeApi that hands every posted message to
// `window.__toHost` (the test, playing the extension host) and records alerts and CSP violations.
import fs from 'node:fs';
import {createRequire} from 'node:module';
import os from 'node:os';
import path from 'node:path';
import {contentSecurityPolicy} from '../host/webviewHtml';
import {ROOT} from './helpers';

const CHROMIUM = process.env['CHROMIUM'] ?? '/usr/bin/chromium';

/** The browser, with pages as the caller types the few calls it makes on them. */
export interface Browser<Page> {
  newPage(options: {viewport: {width: number; height: number}}): Promise<Page>;
  close(): Promise<void>;
}
interface Playwright<Page> {
  chromium: {launch(options: {executablePath: string; headless: boolean; args: string[]}): Promise<Browser<Page>>};
}

/** playwright-core (its own types live in tools/code-server, not here), or null. */
export function loadPlaywright<Page>(): Playwright<Page> | null {
  try {
    return createRequire(path.join(ROOT, 'tools', 'code-server', 'package.json'))('playwright-core') as Playwright<Page>;
  } catch {
    return null;
  }
}

/** Headless Chromium. */
export function launchChromium<Page>(playwright: Playwright<Page>): Promise<Browser<Page>> {
  return playwright.chromium.launch({
    executablePath: CHROMIUM, headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
}

/** Why these tests cannot run here, or false. */
export function skipReason(playwright: unknown): string | false {
  if (!fs.existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM}`;
  if (playwright === null) return 'no playwright-core in tools/code-server (run tools/code-server/install.sh)';
  return false;
}

/**
 * A temporary folder holding page.html, the bundle of `entry` (extension/webview/<entry>.ts) and
 * its stylesheet `<css>`; the caller removes it.
 */
export async function buildPage(entry: string, css: string, nonce: string, prefix: string): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const esbuild = await import('esbuild');
  const bundle = await esbuild.build({
    entryPoints: [path.join(ROOT, 'extension', 'webview', `${entry}.ts`)],
    bundle: true, platform: 'browser', format: 'iife', target: 'es2022', write: false, outdir: 'out',
  });
  for (const file of bundle.outputFiles) fs.writeFileSync(path.join(dir, path.basename(file.path)), file.contents);
  fs.writeFileSync(
    path.join(dir, 'page.html'),
    `<!DOCTYPE html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${contentSecurityPolicy('file:', nonce)}">
<link rel="stylesheet" href="${css}" nonce="${nonce}">
<script nonce="${nonce}">
window.__alerts = []; window.__violations = []; window.__state = undefined;
window.alert = (m) => window.__alerts.push(String(m));
document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
function acquireVsCodeApi() { return {postMessage: (m) => window.__toHost(m), getState: () => window.__state, setState: (s) => { window.__state = s; }}; }
</script></head><body><div id="root"></div>
<script nonce="${nonce}" src="${entry}.js"></script>
</body></html>`,
  );
  return dir;
}
