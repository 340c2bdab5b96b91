// Where Trace Selection's time goes, in a real VS Code: starts code-server with this checkout as
// a development extension (run `npm run build` first), traces the integration suite's prompt
// three times and prints the extension's own timing lines ("timing ...", from timing.ts) and the
// daemon's ("traced N tokens in X ms (stages), saved in Y ms") for each run:
//   1. cold: right after the window opens (the daemon may still be starting or loading);
//   2. warm, no graph open: the model is ready, the trace replaces the file, the graph opens;
//   3. warm, graph open: the trace replaces the file and the open graph reloads.
// Compare with `lmscope bench --lengths 15` (the prompt is 15 tokens with BOS).
// Run: node tools/trace-timing/measure.mjs   (reuses tests/integration/harness.mjs, read-only)
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..", "..");
process.env.LMSCOPE_EXTENSION_PATH ??= root;
const h = await import("../../tests/integration/harness.mjs");

const why = h.missingPrerequisite();
if (why) {
  console.error(`trace-timing: ${why}`);
  process.exit(1);
}

/** Every file under `dir` (the code-server logs). */
function filesUnder(dir) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(path));
    else out.push(path);
  }
  return out;
}

/** The extension's log lines so far (its LogOutputChannel "lmscope", the daemon's stderr in it). */
function logLines(fx) {
  const logs = join(fx.user, "logs");
  let files = [];
  try {
    // Only the channel's own file: other logs grow too, and would shift the lines counted.
    files = filesUnder(logs).filter((p) => /[\\/]lmscope\.log$/.test(p) && statSync(p).isFile());
  } catch {
    return [];
  }
  return files.flatMap((p) => readFileSync(p, "utf8").split("\n"));
}

async function traceOnce(page, fx, label) {
  const before = logLines(fx).length;
  await h.runCommand(page, h.paletteTitle("lmscope.traceSelection"));
  const lines = await h.until(`the timing summary of run "${label}"`, 300_000, () => {
    const fresh = logLines(fx).slice(before);
    return fresh.some((l) => /timing .*: total \d+ ms/.test(l)) ? fresh : null;
  }, 200);
  console.log(`\n== ${label}`);
  for (const line of lines) {
    if (/timing |traced \d+ tokens|graph .*(load posted|painted|changed on disk)/.test(line)) console.log(line);
  }
}

const fx = h.prepareFixtures();
let server, browser;
try {
  server = await h.startCodeServer(fx);
  browser = await h.launchBrowser();
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  await page.goto(h.workbenchUrl(server, fx));
  await page.locator(".monaco-workbench").waitFor({ timeout: 60_000 });
  await h.answerTrustDialog(page, { trust: true });
  await h.openFile(page, "ioi.prompts.txt");
  await page.locator(".monaco-editor .view-lines").first().click();
  await page.keyboard.press("Control+Home");
  await traceOnce(page, fx, "cold (window just opened)");
  await h.closeAllEditors(page);
  await h.openFile(page, "ioi.prompts.txt");
  await page.locator(".monaco-editor .view-lines").first().click();
  await page.keyboard.press("Control+Home");
  await traceOnce(page, fx, "warm, no graph open");
  await page.locator(".monaco-editor .view-lines").first().click();
  await page.keyboard.press("Control+Home");
  await traceOnce(page, fx, "warm, the graph of that file open (replaced and reloaded)");
  const traces = readdirSync(join(fx.workspace, "traces"));
  console.log(`\ntraces/: ${traces.join(", ")}`);
} finally {
  await browser?.close().catch(() => {});
  await h.stopCodeServer(server);
  console.log(`logs: ${join(fx.user, "logs")}`);
}
