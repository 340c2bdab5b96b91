// lmscope inside a real VS Code: code-server 4.100.3 + playwright-core + Debian Chromium.
// One code-server and one workbench page for the whole file; the tests run in order.
// Run: make integration-test (install.sh, npm run build, then node --test with the spec reporter
// and ./summary-reporter.mjs, which ends with the plain "N passed, N failed" line). A screenshot of each test's final state is written to
// a temp folder (printed), or to $LMSCOPE_SCREENSHOTS.
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import { appendFileSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import {
  closeAllEditors,
  contributesCustomEditor,
  launchBrowser,
  manifest,
  MODEL_NAME,
  missingPrerequisite,
  openFile,
  paletteLists,
  paletteTitle,
  prepareFixtures,
  processesOf,
  root,
  runCommand,
  startCodeServer,
  stopCodeServer,
  tail,
  until,
  webviewContent,
  workbenchUrl,
} from "./harness.mjs";

const skip = missingPrerequisite() ?? false;
const traceSelection = paletteTitle("lmscope.traceSelection"); // "lmscope: Trace Selection"
const daemonHovers = readFileSync(join(root, "daemon/lmscope/server/editor.py"), "utf8").includes(
  "TEXT_DOCUMENT_HOVER",
);

// A feature the extension does not declare yet is a todo (reported, not run), not a failure.
const pending = {
  trace: traceSelection ? false : 'waiting for the "lmscope: Trace Selection" command',
  hover: daemonHovers ? false : "waiting for the daemon's hover cards",
  viewer: contributesCustomEditor("lmscope.traceViewer")
    ? false
    : "waiting for the lmscope.traceViewer custom editor for *.lmtrace",
};

let fx, server, browser, page;
const browserErrors = [];
let shot = 0;

before(
  async () => {
    if (skip) return;
    fx = prepareFixtures();
    if (process.env.LMSCOPE_SCREENSHOTS) {
      fx.shots = process.env.LMSCOPE_SCREENSHOTS;
      mkdirSync(fx.shots, { recursive: true });
    }
    console.log(`screenshots: ${fx.shots}`);
    server = await startCodeServer(fx);
    browser = await launchBrowser();
    page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    // The workbench's own errors (a custom editor that throws shows only "unexpected error").
    const record = (text) => {
      browserErrors.push(text);
      appendFileSync(join(fx.base, "browser-errors.log"), `${text}\n`);
    };
    page.on("pageerror", (err) => record(`pageerror: ${err.message}`));
    page.on("console", (msg) => msg.type() === "error" && record(`console: ${msg.text()}`));
    await page.goto(workbenchUrl(server, fx));
    await page.locator(".monaco-workbench").waitFor({ timeout: 60_000 });
  },
  { timeout: 180_000 },
);

afterEach(async (t) => {
  if (!page) return;
  const name = `${String(++shot).padStart(2, "0")}-${t.name.replace(/[^a-z0-9]+/gi, "-").slice(0, 60)}.png`;
  await page.screenshot({ path: join(fx.shots, name) }).catch(() => {});
});

after(async () => {
  await browser?.close().catch(() => {});
  await stopCodeServer(server);
  if (fx)
    console.log(`screenshots: ${fx.shots}\ncode-server log: ${join(fx.base, "code-server.log")}`);
});

/** Visible notification toasts, for failure messages. */
async function toasts() {
  const texts = await page.locator(".notifications-toasts .notification-list-item").allInnerTexts();
  return texts.length
    ? `\nnotifications: ${texts.map((t) => t.replace(/\s+/g, " ")).join(" | ")}`
    : "";
}

/** Fails with the notifications, browser errors and the code-server log added to the message. */
async function withContext(promise) {
  try {
    return await promise;
  } catch (err) {
    let extra = await toasts().catch(() => "");
    if (browserErrors.length)
      extra += `\nbrowser errors:\n  ${browserErrors.slice(-8).join("\n  ")}`;
    if (server) extra += `\ncode-server log tail:\n${tail(server.log, 10)}`;
    extra += `\nlogs: ${join(fx.user, "logs")} (the extension's own log: */exthost1/lmscope.lmscope/)`;
    throw new Error(`${err.message}${extra}`);
  }
}

/** An error notification, or an editor that failed to open: no point waiting further. */
async function failOnError({ toasts = true } = {}) {
  const errors = page
    .locator(".notifications-toasts .notification-list-item")
    .filter({ has: page.locator(".codicon-error") });
  const texts = toasts ? await errors.allInnerTexts() : [];
  if (!texts.length && (await page.getByText("The editor could not be opened").count())) {
    texts.push("the workbench says: The editor could not be opened due to an unexpected error");
  }
  if (texts.length) {
    const err = new Error(`error: ${texts.map((t) => t.replace(/\s+/g, " ")).join(" | ")}`);
    err.fatal = true;
    throw err;
  }
}

/** Wait for the visible webview's graph: an <svg> holding at least one drawn edge. */
async function graphEdges(deadlineMs, { failOnToasts = true } = {}) {
  const frame = webviewContent(page);
  const edges = frame.locator("svg :is(path, line, polyline)");
  return until(
    "a drawn edge in the graph's <svg>",
    deadlineMs,
    async () => {
      const n = await edges.count().catch(() => 0);
      if (n) return n;
      await failOnError({ toasts: failOnToasts });
      return 0;
    },
    500,
  );
}

function lmtracesIn(folder) {
  return readdirSync(folder, { recursive: true })
    .map(String)
    .filter((p) => p.endsWith(".lmtrace") && p !== "saved.lmtrace");
}

/** lmscope's status bar item: by its id ("<publisher>.<name>.<item id>"), or its text. */
function statusItem() {
  const items = "#workbench\\.parts\\.statusbar .statusbar-item";
  return page
    .locator(`${items}[id^="${manifest.publisher}.${manifest.name}."]`)
    .or(page.locator(items).filter({ hasText: /lmscope/i }))
    .first();
}

test(
  "the workbench loads and the extension activates (status bar item shows lmscope)",
  { skip, timeout: 120_000 },
  async (t) => {
    const item = statusItem();
    try {
      await item.first().waitFor({ state: "visible", timeout: 45_000 });
    } catch {
      // No status bar item (yet): at least the extension's commands must be in the palette.
      assert.ok(
        traceSelection,
        "no status bar item containing lmscope, and no Trace Selection command",
      );
      await openFile(page, "notes.md"); // the command is offered when an editor is open
      assert.ok(
        await paletteLists(page, traceSelection),
        `no status bar item containing "lmscope", and the palette does not list "${traceSelection}"`,
      );
      t.diagnostic(
        `no status bar item containing "lmscope"; the palette lists "${traceSelection}"`,
      );
    }
  },
);

test(
  "the daemon starts and loads the configured model (the status bar names it)",
  { skip, timeout: 180_000 },
  async () => {
    const item = statusItem();
    await withContext(
      until(
        `the status bar item to name the model ${MODEL_NAME}`,
        150_000,
        async () => {
          // Its text names the model once ready (while loading only its tooltip does).
          const text = await item.innerText();
          if (MODEL_NAME.test(text) && !(await item.locator(".codicon-loading").count()))
            return true;
          if (await item.locator(".codicon-error").count()) {
            const err = new Error(
              `the status bar item shows an error: ${text.replace(/\s+/g, " ")}`,
            );
            err.fatal = true;
            throw err;
          }
          return false;
        },
        500,
      ),
    );
  },
);

test(
  "Trace Selection on a prompt line opens the flow graph beside it and saves a .lmtrace next to the file",
  { skip, todo: pending.trace, timeout: 240_000 },
  async () => {
    if (pending.trace) return;
    await closeAllEditors(page);
    const before = lmtracesIn(fx.workspace);
    await openFile(page, "ioi.prompts.txt");
    await page.locator(".monaco-editor .view-lines").first().click();
    await page.keyboard.press("Control+Home");
    await runCommand(page, traceSelection);
    // First trace: the daemon starts, imports torch and loads the tiny model.
    const edges = await withContext(graphEdges(180_000));
    assert.ok(edges > 0, "the graph shows no route");
    const saved = await withContext(
      until(".lmtrace saved next to ioi.prompts.txt", 30_000, () => {
        const fresh = lmtracesIn(fx.workspace).filter((p) => !before.includes(p));
        return fresh.length ? fresh : null;
      }),
    );
    console.log(`saved: ${saved.map((p) => relative(fx.base, join(fx.workspace, p))).join(", ")}`);
    // The progress notification ("waiting for the daemon and the model…", then the layers)
    // closes once the graph is open.
    await withContext(
      until("the tracing progress notification to close", 15_000, async () => {
        return (await tracingToasts().count()) === 0;
      }),
    );
  },
);

test(
  "the traced graph is live: clicking an attention edge shows the chosen head's maps and tokens, an FFN node its neuron's tokens",
  { skip, todo: pending.trace, timeout: 120_000 },
  async () => {
    if (pending.trace) return;
    const frame = webviewContent(page);
    await withContext(frame.locator(".live-badge", { hasText: "live" }).waitFor({ timeout: 30_000 }));
    await frame.locator("path.edge.attention").first().dispatchEvent("click");
    const head = frame.locator(".details .head-detail");
    await withContext(head.locator("canvas").nth(1).waitFor({ timeout: 60_000 }));
    const text = await head.innerText();
    assert.match(text, /Attention map of L\d+H\d+/);
    assert.match(text, /Contribution map of L\d+H\d+/);
    assert.match(text, /Head promotes/);
    await frame.locator(".node.ffn").first().dispatchEvent("click");
    await withContext(
      frame.locator(".details .neuron-detail .tok-section").first().waitFor({ timeout: 60_000 }),
    );
    assert.match(await frame.locator(".details").innerText(), /Neuron promotes/);
  },
);

/** Visible progress notifications of a running Trace Selection. */
function tracingToasts() {
  return page
    .locator(".notifications-toasts .notification-list-item", { hasText: "lmscope: tracing" })
    .filter({ visible: true });
}

test(
  "cancelling Trace Selection from its progress notification saves no .lmtrace, and the daemon keeps serving",
  { skip, todo: pending.trace, timeout: 300_000 },
  async () => {
    if (pending.trace) return;
    await closeAllEditors(page);
    // long.prompts.txt: a prompt of a few hundred tokens, whose trace runs long enough to cancel.
    const before = lmtracesIn(fx.workspace);
    await openFile(page, "long.prompts.txt");
    await page.locator(".monaco-editor .view-lines").first().click();
    await page.keyboard.press("Control+Home");
    await runCommand(page, traceSelection);
    const toast = tracingToasts().first();
    // Cancel once the daemon reports the trace's progress (the model is loaded by now).
    await withContext(
      until("the tracing notification to report progress", 60_000, async () => {
        await failOnError();
        return /layer|tracing…|%/.test(await toast.innerText().catch(() => ""));
      }),
    );
    await toast.hover(); // its buttons show on hover
    await toast.getByRole("button", { name: "Cancel" }).click();
    await withContext(
      until("the cancelled trace's notification to close", 30_000, async () => {
        return (await tracingToasts().count()) === 0;
      }),
    );
    await failOnError();
    // The daemon keeps serving: the next trace opens its graph. Traces run in order, so the
    // cancelled one is over by the time this one is saved.
    await closeAllEditors(page);
    await openFile(page, "ioi.prompts.txt");
    await page.locator(".monaco-editor .view-lines").first().click();
    await page.keyboard.press("Control+Home");
    await runCommand(page, traceSelection);
    const edges = await withContext(graphEdges(120_000));
    assert.ok(edges > 0, "the trace after the cancelled one shows no route");
    const fresh = await withContext(
      until("the second trace's .lmtrace", 30_000, () => {
        const now = lmtracesIn(fx.workspace).filter((p) => !before.includes(p));
        return now.length ? now : null;
      }),
    );
    assert.equal(fresh.length, 1, `only the second trace is saved, found: ${fresh.join(", ")}`);
  },
);

/** Page coordinates of the middle of the first occurrence of `text` in the rendered lines
 * (a DOM Range over its characters, whatever spans the tokenizer split the line into). */
async function centreOf(lines, text) {
  return lines.evaluate((root, needle) => {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const at = node.data.indexOf(needle);
      if (at < 0) continue;
      const range = document.createRange();
      range.setStart(node, at);
      range.setEnd(node, at + needle.length);
      const r = range.getBoundingClientRect();
      return { x: r.left + r.width / 2, y: r.top + r.height / 2 };
    }
    throw new Error(`no "${needle}" in the editor's lines`);
  }, text);
}

/** Hover `ref` on the first line of `file` that shows it, until a visible card names it. */
async function hoverCard(file, ref) {
  await closeAllEditors(page);
  await openFile(page, file);
  const lines = page.locator(".monaco-editor .view-lines").first();
  await lines.getByText(ref).first().waitFor();
  const card = page.locator(".monaco-hover", { hasText: ref }).filter({ visible: true });
  // The daemon may still be starting: hover again until the card comes.
  await withContext(
    until(
      `a hover card containing ${ref} in ${file}`,
      120_000,
      async () => {
        await page.mouse.move(0, 0);
        const { x, y } = await centreOf(lines, ref);
        await page.mouse.move(x, y, { steps: 3 });
        try {
          await card.first().waitFor({ state: "visible", timeout: 3_000 });
          return true;
        } catch {
          return false;
        }
      },
      0,
    ),
  );
}

test(
  "hovering L1H2 in a Markdown file shows the daemon's card for L1H2",
  { skip, todo: pending.hover, timeout: 180_000 },
  async () => {
    if (pending.hover) return;
    await hoverCard("notes.md", "L1H2");
  },
);

test(
  "hovering L0H0 in a Python file shows the daemon's card for L0H0",
  { skip, todo: pending.hover, timeout: 180_000 },
  async () => {
    if (pending.hover) return;
    await hoverCard("example.py", "L0H0");
  },
);

test(
  "opening a saved .lmtrace shows its graph in the custom editor (no tracing needed)",
  { skip, todo: pending.viewer, timeout: 120_000 },
  async () => {
    if (pending.viewer) return;
    await closeAllEditors(page);
    await openFile(page, "saved.lmtrace");
    const edges = await withContext(graphEdges(60_000));
    assert.ok(edges > 0, "the saved trace's graph shows no route");
  },
);

test(
  "a saved .lmtrace opens in a window where the daemon cannot start (no interpreter)",
  { skip, todo: pending.viewer, timeout: 120_000 },
  async () => {
    if (pending.viewer) return;
    // A second window on the same code-server: its own extension host, and workspace settings
    // naming a Python that does not exist. Its error notification about that is expected.
    page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    await page.goto(workbenchUrl(server, fx, fx.noDaemon));
    await page.locator(".monaco-workbench").waitFor({ timeout: 60_000 });
    await openFile(page, "saved.lmtrace");
    const edges = await withContext(graphEdges(60_000, { failOnToasts: false }));
    assert.ok(edges > 0, "the saved trace's graph shows no route");
  },
);

test(
  "in an untrusted workspace the daemon never starts and the user is told why",
  { skip, todo: pending.trace, timeout: 180_000 },
  async () => {
    if (pending.trace) return;
    // A second code-server with workspace trust on: its folder opens in restricted mode.
    const trusting = await startCodeServer(fx, { trust: true });
    const restricted = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    const previous = page;
    page = restricted;
    try {
      await page.goto(workbenchUrl(trusting, fx, fx.untrusted));
      await page.locator(".monaco-workbench").waitFor({ timeout: 60_000 });
      const item = statusItem();
      await withContext(
        until("the status bar to say the workspace is untrusted", 60_000, async () => {
          return /untrusted/.test(await item.innerText().catch(() => ""));
        }),
      );
      await openFile(page, "ioi.prompts.txt");
      await page.locator(".monaco-editor .view-lines").first().click();
      await page.keyboard.press("Control+Home");
      await runCommand(page, traceSelection);
      const told = page
        .locator(".notifications-toasts .notification-list-item", { hasText: /trusted workspace/ })
        .filter({ visible: true });
      await withContext(told.first().waitFor({ timeout: 30_000 }));
      const daemons = processesOf(trusting).filter((args) => /lmscope\b.*\bserve\b/.test(args));
      assert.deepEqual(daemons, [], "no lmscope daemon runs for the untrusted workspace");
      assert.deepEqual(lmtracesIn(fx.untrusted), [], "nothing was traced");
    } finally {
      await page.screenshot({ path: join(fx.shots, "untrusted-workspace.png") }).catch(() => {});
      await restricted.close().catch(() => {});
      page = previous;
      await stopCodeServer(trusting);
    }
  },
);
