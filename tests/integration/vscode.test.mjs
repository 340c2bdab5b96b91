// lmscope inside a real VS Code: code-server 4.100.3 + playwright-core + Debian Chromium.
// The packaged lmscope-<version>.vsix is installed into a clean code-server (an empty extensions
// folder) with workspace trust on; the first test answers VS Code's trust dialog. One code-server
// and one workbench page (1280×800) for the whole file; the tests run in order.
// Run: make integration-test (install.sh, make package, then node --test with the spec reporter
// and ./summary-reporter.mjs, which ends with the plain "N passed, N failed" line). A screenshot
// of each test's final state (and of the geometry test's states) is written to a temp folder
// (printed), or to $LMSCOPE_SCREENSHOTS.
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import { appendFileSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import {
  answerTrustDialog,
  closeAllEditors,
  contributesCustomEditor,
  devExtension,
  installExtension,
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
  useTinyModel,
  vsix,
  webviewContent,
  workbenchUrl,
} from "./harness.mjs";
import {
  centre,
  CLICK_MARK,
  clickedEdgeSelectors,
  collect,
  containsPoint,
  fmtRect,
  inside,
  missing,
  overlap,
  overlappingPairs,
  pickEdge,
  SELECTORS,
  settled,
} from "./geometry.mjs";

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

// A laptop-sized window: the graph opened beside a file gets about half of it.
const VIEWPORT = { width: 1280, height: 800 };
// Below this body width the webview puts its details panel under the graph, else beside it
// (extension/webview/inspect.ts); the side column of VIEWPORT is narrower, a maximised group wider.
const STACK_BELOW = 760;
// VS Code's command that gives the active editor group the whole editor area, and back.
const MAXIMISE_GROUP = "View: Toggle Maximize Editor Group";

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
    // The packaged extension, installed as a user installs it (LMSCOPE_EXTENSION_PATH: a
    // development extension instead, loaded through the workbench URL).
    const installed = installExtension(fx);
    console.log(
      installed
        ? `extension: ${vsix} installed into ${installed}`
        : `extension: development extension ${devExtension} (LMSCOPE_EXTENSION_PATH)`,
    );
    server = await startCodeServer(fx);
    browser = await launchBrowser();
    page = await browser.newPage({ viewport: VIEWPORT });
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

/** Screenshot of the page into the screenshots folder, numbered in the order taken. */
async function screenshot(label) {
  if (!page) return;
  const name = `${String(++shot).padStart(2, "0")}-${label.replace(/[^a-z0-9]+/gi, "-").slice(0, 60)}.png`;
  await page.screenshot({ path: join(fx.shots, name) }).catch(() => {});
}

// Subtests (the geometry checks) take their own screenshots of the states they measure.
const subtests = new Set();

afterEach(async (t) => {
  if (!subtests.has(t.name)) await screenshot(t.name);
});

/** A subtest of `t` (reported on its own line; no screenshot of its own after it). */
function check(t, name, fn) {
  subtests.add(name);
  return t.test(name, fn);
}

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

/** Wait for the visible webview's graph: svg.graph holding at least one drawn edge. */
async function graphEdges(deadlineMs, { failOnToasts = true } = {}) {
  const frame = webviewContent(page);
  const edges = frame.locator(SELECTORS.edges);
  return until(
    `a drawn edge in the graph (${SELECTORS.edges})`,
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

/** Each traced .lmtrace in `folder` with its modification time (path → ms). */
function lmtraceVersions(folder) {
  return new Map(lmtracesIn(folder).map((p) => [p, statSync(join(folder, p)).mtimeMs]));
}

/** The traces written since `before` (lmtraceVersions): new files, and files replaced (tracing
 * the same prompt with the same model again replaces its file, extension/host/paths.ts). */
function writtenSince(folder, before) {
  return [...lmtraceVersions(folder)].filter(([p, t]) => before.get(p) !== t).map(([p]) => p);
}

/** lmscope's status bar item: by its id ("<publisher>.<name>.<item id>"), or its text. */
function statusItem() {
  const items = "#workbench\\.parts\\.statusbar .statusbar-item";
  return page
    .locator(`${items}[id^="${manifest.publisher}.${manifest.name}."]`)
    .or(page.locator(items).filter({ hasText: /lmscope/i }))
    .first();
}

/** The "Restricted Mode" indicator VS Code shows in an untrusted workspace. */
function restrictedMode() {
  return page.locator("#workbench\\.parts\\.statusbar .statusbar-item", {
    hasText: "Restricted Mode",
  });
}

test(
  "VS Code asks whether to trust the workspace; the installed extension waits in restricted mode, and answering Yes enables it",
  { skip, timeout: 120_000 },
  async (t) => {
    await withContext(trustTheWorkspace(t));
    assert.equal(await restrictedMode().count(), 0, "still in Restricted Mode after trusting");
  },
);

async function trustTheWorkspace(t) {
  // Until the question is answered the folder is untrusted: the extension says so (it activates
  // on startup finished, behind the modal dialog).
  const item = statusItem();
  await until("the status bar item to say untrusted before the answer", 45_000, async () => {
    return /untrusted/.test(await item.innerText().catch(() => ""));
  });
  t.diagnostic(`before the answer the status bar says: ${(await item.innerText()).trim()}`);
  await screenshot("the trust dialog, unanswered");
  await answerTrustDialog(page, { trust: true });
  await until("Restricted Mode to end", 30_000, async () => (await restrictedMode().count()) === 0);
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

/** Fails listing the contract's selectors that match nothing in the webview. */
function requireSelectors(snapshot, names) {
  const gone = missing(snapshot, names);
  assert.deepEqual(gone, [], `the webview has no element matching: ${gone.join(", ")}`);
}

const nodeName = (n) => n.id ?? (n.classes || "?");

test(
  "geometry at 1280×800 with the graph in the side column: the zoom buttons share one line, Fit keeps every node in the canvas, a clicked edge is never under the details panel, labels do not overlap",
  { skip, todo: pending.trace, timeout: 120_000 },
  async (t) => {
    if (pending.trace) return;
    const frame = webviewContent(page);
    await withContext(graphEdges(30_000));

    await check(
      t,
      "the graph has the side column (about half the window), not the full width",
      async () => {
        const webview = await page.locator("iframe.webview").last().boundingBox();
        assert.ok(webview, "no iframe.webview in the page");
        const groups = (
          await page
            .locator(".editor-group-container")
            .evaluateAll((els) => els.map((e) => e.getBoundingClientRect().toJSON()))
        ).filter((r) => r.width > 0 && r.height > 0);
        const rightmost = groups.reduce((a, b) => (b.left > a.left ? b : a), groups[0]);
        t.diagnostic(
          `window ${VIEWPORT.width}×${VIEWPORT.height}; ${groups.length} editor groups; webview ` +
            `${webview.width.toFixed(0)}×${webview.height.toFixed(0)} at x=${webview.x.toFixed(0)}`,
        );
        assert.ok(
          groups.length >= 2,
          `the graph is not beside the prompt: ${groups.length} editor group(s)`,
        );
        assert.ok(
          webview.x >= rightmost.left - 2 && webview.x + webview.width <= rightmost.right + 2,
          `the webview [${webview.x.toFixed(0)}, ${(webview.x + webview.width).toFixed(0)}] is not in the side column [${rightmost.left.toFixed(0)}, ${rightmost.right.toFixed(0)}]`,
        );
        assert.ok(
          webview.width <= VIEWPORT.width * 0.6,
          `the webview is ${webview.width.toFixed(0)} px wide: more than the side column of a ${VIEWPORT.width} px window`,
        );
      },
    );

    await check(
      t,
      "the toolbar: −, + and Fit on one line, inside the webview; export menu and legend present",
      async () => {
        const s = await collect(frame);
        requireSelectors(s, ["zoomOut", "zoomIn", "fit", "export", "legend"]);
        const buttons = [
          ["button.zoom-out", s.zoomOut[0]],
          ["button.zoom-in", s.zoomIn[0]],
          ["button.fit", s.fit[0]],
        ];
        const where = buttons.map(([sel, b]) => `${sel} ${fmtRect(b.rect)}`).join(", ");
        t.diagnostic(
          `webview ${s.window.width}×${s.window.height}: ${where}; button.export ${fmtRect(s.export[0].rect)}`,
        );
        for (const [sel, b] of buttons) {
          assert.ok(b.visible, `${sel} is not visible (${fmtRect(b.rect)})`);
          assert.ok(
            inside(b.rect, { left: 0, top: 0, right: s.window.width, bottom: s.window.height }),
            `${sel} ${fmtRect(b.rect)} is cut off by the webview (${s.window.width}×${s.window.height})`,
          );
        }
        for (let i = 1; i < buttons.length; i++) {
          const [pa, a] = buttons[i - 1];
          const [pb, b] = buttons[i];
          const o = overlap(a.rect, b.rect);
          const minHeight = Math.min(a.rect.bottom - a.rect.top, b.rect.bottom - b.rect.top);
          assert.ok(o.y >= minHeight / 2, `${pa} and ${pb} are on different lines: ${where}`);
          assert.ok(a.rect.right <= b.rect.left + 0.5, `${pb} is not right of ${pa}: ${where}`);
        }
      },
    );

    /**
     * Click Fit and wait for the graph to settle; screenshot `state`. Fails listing every drawn
     * route node whose box leaves .canvas, and (with the panel open) every node whose centre is
     * under .details. Returns the measurement.
     */
    async function fitKeepsNodesInCanvas(state) {
      requireSelectors(await collect(frame), ["canvas", "graph", "nodes", "fit"]);
      await frame.locator(SELECTORS.fit).click();
      const s = await settled(() => collect(frame));
      await screenshot(`geometry ${state}`);
      const canvas = s.canvas[0].rect;
      const nodes = s.nodes.filter((n) => n.rect.right > n.rect.left || n.rect.bottom > n.rect.top);
      const outside = nodes.filter((n) => !inside(n.rect, canvas));
      const details = s.details.find((d) => d.visible);
      t.diagnostic(
        `${state}: canvas ${fmtRect(canvas)}${details ? `, .details ${fmtRect(details.box)}` : ""}; ` +
          `${nodes.length} nodes; ${outside.length} outside`,
      );
      assert.ok(nodes.length > 0, `no drawn ${SELECTORS.nodes} ${state}`);
      assert.deepEqual(
        outside.map((n) => `${nodeName(n)} ${fmtRect(n.rect)}`),
        [],
        `${outside.length} of ${nodes.length} nodes are outside .canvas ${fmtRect(canvas)} ${state}`,
      );
      if (details) {
        const under = nodes.filter((n) => containsPoint(details.box, centre(n.rect)));
        assert.deepEqual(
          under.map((n) => `${nodeName(n)} ${fmtRect(n.rect)}`),
          [],
          `${under.length} nodes are under the open .details ${fmtRect(details.box)} ${state}`,
        );
      }
      return s;
    }

    await check(
      t,
      "zoomed in the route overflows the canvas; after Fit every route node is inside it",
      async () => {
        // Zoomed in first, so that Fit has something to bring back (and the check can fail).
        const zoomIn = frame.locator(SELECTORS.zoomIn);
        const overflowing = await until(
          "zoom in to push route nodes out of the canvas",
          10_000,
          async () => {
            await zoomIn.click();
            const s = await collect(frame);
            return s.nodes.filter((n) => !inside(n.rect, s.canvas[0].rect)).length;
          },
        );
        await screenshot("geometry zoomed in");
        t.diagnostic(`zoomed in: ${overflowing} nodes outside the canvas`);
        await fitKeepsNodesInCanvas("after Fit");
        // The README's picture: the demo's IOI prompt on the embedded default model, the graph
        // beside the prompt file at Fit (not with the tiny random model, whose route means nothing).
        if (!useTinyModel) await page.screenshot({ path: join(fx.shots, "readme-graph.png") });
      },
    );

    await check(
      t,
      "after Fit no route node is hidden under a pinned token or row label",
      async () => {
        const s = await collect(frame);
        requireSelectors(s, ["nodes", "columnLabels", "rowLabels"]);
        const labels = [...s.columnLabels, ...s.rowLabels].filter((l) => l.visible);
        const hidden = s.nodes.flatMap((n) => {
          const label = labels.find((l) => containsPoint(l.box, centre(n.rect)));
          return label
            ? [
                `${nodeName(n)} ${fmtRect(n.rect)} under ${JSON.stringify(label.text)} ${fmtRect(label.box)}`,
              ]
            : [];
        });
        assert.deepEqual(
          hidden,
          [],
          `${hidden.length} route nodes are under a pinned label after Fit`,
        );
      },
    );

    /** Visible token and row labels that overlap one another, as text for a failure. */
    async function labelOverlaps(state) {
      const s = await collect(frame);
      requireSelectors(s, ["columnLabels", "rowLabels"]);
      const labels = [
        ...s.columnLabels.map((l) => ({ ...l, kind: "column-label" })),
        ...s.rowLabels.map((l) => ({ ...l, kind: "row-label" })),
      ].filter((l) => l.visible);
      const pairs = overlappingPairs(labels);
      t.diagnostic(
        `${state}: ${labels.filter((l) => l.kind === "column-label").length} of ${s.columnLabels.length} column labels and ` +
          `${labels.filter((l) => l.kind === "row-label").length} of ${s.rowLabels.length} row labels visible; ${pairs.length} overlapping pairs`,
      );
      return pairs
        .slice(0, 12)
        .map(
          ([a, b, o]) =>
            `${a.kind} ${JSON.stringify(a.text)} ${fmtRect(a.box)} × ${b.kind} ${JSON.stringify(b.text)} ${fmtRect(b.box)} (${o.x.toFixed(1)}×${o.y.toFixed(1)} px)`,
        )
        .concat(pairs.length > 12 ? [`… and ${pairs.length - 12} more`] : []);
    }

    await check(t, "after Fit no token or row labels overlap", async () => {
      const pairs = await labelOverlaps("after Fit");
      assert.deepEqual(pairs, [], `labels overlap after Fit:\n  ${pairs.join("\n  ")}`);
    });

    /**
     * Click the attention edge nearest the bottom-right corner (where the panel opens) with the
     * real mouse, wait for .details to open and the graph to settle; screenshot `state`. Fails when
     * the edge's centre is then under the panel or outside the canvas, or when the panel is not
     * where the contract puts it for this width.
     */
    async function clickEdgeKeepsItVisible(state) {
      const s0 = await collect(frame);
      requireSelectors(s0, ["canvas", "graph", "attentionEdges", "details"]);
      const picked = await pickEdge(frame);
      let how;
      if (picked.clickable) {
        // A real click (Playwright's mouse, through both iframes) where the edge is on top.
        const svgBox = s0.graph[0].rect;
        await frame
          .locator(SELECTORS.graph)
          .click({ position: { x: picked.x - svgBox.left, y: picked.y - svgBox.top } });
        how = `clicked at (${picked.x.toFixed(1)}, ${picked.y.toFixed(1)})`;
      } else {
        // No visible point of any attention edge takes a click (nodes or labels cover them all).
        const first = frame.locator(SELECTORS.attentionEdges).first();
        await first.evaluate((e, mark) => e.setAttribute(mark, ""), CLICK_MARK);
        await first.dispatchEvent("click");
        how = `no visible point of the ${picked.shown} shown attention edges takes a click: click event dispatched on the first`;
      }
      t.diagnostic(`edge ${JSON.stringify(picked.key ?? "")}: ${how}`);
      await withContext(
        until(`${SELECTORS.details} to open`, 15_000, async () => {
          const s = await collect(frame, { details: SELECTORS.details });
          return s.details.some((d) => d.visible);
        }),
      );
      // The panel's content and any pan that keeps the edge in view settle first.
      const selectors = clickedEdgeSelectors(picked);
      const measure = async () => {
        const s = await collect(frame, {
          ...SELECTORS,
          ...Object.fromEntries(selectors.map((q, i) => [`clicked${i}`, q])),
        });
        s.clicked =
          selectors.map((_, i) => s[`clicked${i}`]).find((found) => found.length === 1)?.[0] ??
          null;
        return s;
      };
      const s = await settled(measure, { gapMs: 250, deadlineMs: 8_000 });
      await screenshot(`geometry ${state}`);
      assert.ok(s.clicked, `cannot find the clicked edge again (tried ${selectors.join(" | ")})`);
      const canvas = s.canvas[0].rect;
      const details = s.details.find((d) => d.visible).box;
      const c = centre(s.clicked.rect);
      // The contract: beside the canvas in a body of STACK_BELOW px or more, else below it.
      const beside = s.window.bodyWidth >= STACK_BELOW;
      const cut = overlap(s.clicked.rect, details);
      t.diagnostic(
        `${state}: webview ${s.window.width}×${s.window.height}, canvas ${fmtRect(canvas)}, .details ${fmtRect(details)}, edge ${fmtRect(s.clicked.rect)} ` +
          `centre (${c.x.toFixed(1)}, ${c.y.toFixed(1)}); edge box under the panel: ` +
          `${cut.x > 0 && cut.y > 0 ? `${cut.x.toFixed(1)}×${cut.y.toFixed(1)} px` : "none"}`,
      );
      assert.ok(
        !containsPoint(details, c),
        `the clicked edge's centre (${c.x.toFixed(1)}, ${c.y.toFixed(1)}) is under .details ${fmtRect(details)} (edge ${fmtRect(s.clicked.rect)})`,
      );
      assert.ok(
        containsPoint(canvas, c),
        `the clicked edge's centre (${c.x.toFixed(1)}, ${c.y.toFixed(1)}) is outside .canvas ${fmtRect(canvas)} (edge ${fmtRect(s.clicked.rect)})`,
      );
      assert.ok(
        beside ? details.left >= canvas.right - 1 : details.top >= canvas.bottom - 1,
        `with a ${s.window.bodyWidth} px wide webview body .details ${fmtRect(details)} should open ${beside ? "beside (right of)" : "below"} .canvas ${fmtRect(canvas)}`,
      );
      return s;
    }

    await check(
      t,
      "clicking an attention edge opens the details panel below the graph, and the edge is then not under it and still inside the canvas",
      async () => {
        await clickEdgeKeepsItVisible("after clicking an edge");
      },
    );

    await check(t, "with the details panel open no token or row labels overlap", async () => {
      const pairs = await labelOverlaps("details open");
      assert.deepEqual(
        pairs,
        [],
        `labels overlap with the details panel open:\n  ${pairs.join("\n  ")}`,
      );
    });

    await check(
      t,
      "with the details panel open, Fit keeps every route node inside the canvas and none under the panel",
      async () => {
        await fitKeepsNodesInCanvas("after Fit with the details panel open");
      },
    );

    await check(
      t,
      "in a full-width editor (group maximised) the panel opens beside the graph: a clicked edge is not under it, and Fit keeps every node in the canvas",
      async () => {
        await frame.locator(`${SELECTORS.details} button.close`).click();
        await runCommand(page, MAXIMISE_GROUP);
        try {
          const webview = page.locator("iframe.webview").last();
          await until("the webview to widen past the side-by-side width", 15_000, async () => {
            const box = await webview.boundingBox();
            return box && box.width >= STACK_BELOW + 20;
          });
          await fitKeepsNodesInCanvas("full width after Fit");
          await clickEdgeKeepsItVisible("full width after clicking an edge");
          await fitKeepsNodesInCanvas("full width after Fit with the details panel open");
        } finally {
          // Back to the side column for the tests that follow.
          await runCommand(page, MAXIMISE_GROUP);
          await until("the editor groups to be side by side again", 15_000, async () => {
            const box = await page.locator("iframe.webview").last().boundingBox();
            return box && box.width <= VIEWPORT.width * 0.6;
          });
        }
      },
    );
  },
);

test(
  "the traced graph is live: clicking an attention edge shows the chosen head's maps and tokens, an FFN node its neuron's tokens",
  { skip, todo: pending.trace, timeout: 120_000 },
  async () => {
    if (pending.trace) return;
    const frame = webviewContent(page);
    await withContext(
      frame.locator(".live-badge", { hasText: "live" }).waitFor({ timeout: 30_000 }),
    );
    await frame.locator(SELECTORS.attentionEdges).first().dispatchEvent("click");
    const head = frame.locator(".details .head-detail");
    await withContext(head.locator("canvas").nth(1).waitFor({ timeout: 60_000 }));
    const text = await head.innerText();
    assert.match(text, /Attention map of L\d+H\d+/);
    assert.match(text, /Contribution map of L\d+H\d+/);
    assert.match(text, /Head promotes/);
    await frame.locator(`${SELECTORS.graph} .node.ffn[data-node]`).first().dispatchEvent("click");
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
    const before = lmtraceVersions(fx.workspace);
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
        const now = writtenSince(fx.workspace, before);
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
  "the run view shows a run's heatmap, a clicked head's top prompts, and opens one's trace",
  { skip, todo: pending.viewer || pending.trace, timeout: 180_000 },
  async () => {
    if (pending.viewer || pending.trace) return;
    await closeAllEditors(page);
    await openFile(page, "run.json"); // Open Run… from the palette takes the run.json shown
    await runCommand(page, paletteTitle("lmscope.openRun"));
    const frame = webviewContent(page);
    const cell = frame.locator('#run-heatmap td[data-component="L1H0"]');
    await withContext(cell.waitFor({ timeout: 120_000 })); // the daemon may still be starting
    assert.equal(await frame.locator("#run-heatmap td.cell.head").count(), 3 * 6);
    await cell.click();
    const open = frame.locator("#run-details tr.top-prompt button.open-trace").first();
    await withContext(open.waitFor({ timeout: 30_000 }));
    assert.match(await frame.locator("#run-details tr.top-prompt .id").first().innerText(), /p-mary/);
    await open.click();
    await withContext(
      page.locator(".tabs-container .tab.active", { hasText: "00000-prompt.lmtrace" }).waitFor({ timeout: 30_000 }),
    );
    // The run view stays open beside the trace: look for the graph in every webview.
    const webviews = page.locator("iframe.webview");
    const edges = await withContext(
      until("a drawn edge in the run trace's graph", 60_000, async () => {
        for (let i = 0; i < (await webviews.count()); i++) {
          const frame = page.frameLocator("iframe.webview").nth(i).frameLocator("#active-frame");
          const n = await frame.locator(SELECTORS.edges).count().catch(() => 0);
          if (n) return n;
        }
        await failOnError();
        return 0;
      }, 500),
    );
    assert.ok(edges > 0, "the run's trace shows no route");
  },
);

test(
  "a saved .lmtrace opens in a window where the daemon cannot start (no interpreter)",
  { skip, todo: pending.viewer, timeout: 120_000 },
  async () => {
    if (pending.viewer) return;
    // A second window on the same code-server: its own extension host, and workspace settings
    // naming a Python that does not exist. Its error notification about that is expected.
    // Trusted (its restricted setting lmscope.python applies only then), so the daemon is tried.
    page = await browser.newPage({ viewport: VIEWPORT });
    await page.goto(workbenchUrl(server, fx, fx.noDaemon));
    await page.locator(".monaco-workbench").waitFor({ timeout: 60_000 });
    await withContext(answerTrustDialog(page, { trust: true }));
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
    // A third window on the same code-server, on a folder the test does not trust: it answers
    // "No, I don't trust the authors", so the folder opens in restricted mode. Daemons of the
    // other windows run in the same process group: none may be added.
    const daemonsOf = () =>
      processesOf(server, { pids: true })
        .filter((p) => /lmscope\b.*\bserve\b/.test(p.args))
        .map((p) => p.pid);
    const before = daemonsOf();
    const restricted = await browser.newPage({ viewport: VIEWPORT });
    const previous = page;
    page = restricted;
    try {
      await page.goto(workbenchUrl(server, fx, fx.untrusted));
      await page.locator(".monaco-workbench").waitFor({ timeout: 60_000 });
      await withContext(answerTrustDialog(page, { trust: false }));
      await withContext(restrictedMode().first().waitFor({ timeout: 15_000 }));
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
      const added = daemonsOf().filter((pid) => !before.includes(pid));
      assert.deepEqual(added, [], "no lmscope daemon started for the untrusted workspace");
      assert.deepEqual(lmtracesIn(fx.untrusted), [], "nothing was traced");
    } finally {
      await page.screenshot({ path: join(fx.shots, "untrusted-workspace.png") }).catch(() => {});
      await restricted.close().catch(() => {});
      page = previous;
    }
  },
);
