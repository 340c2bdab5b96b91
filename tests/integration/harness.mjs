// The integration harness: a real VS Code (code-server 4.100.3 from tools/code-server) on a
// loopback port, driven by playwright-core with Debian's Chromium. The extension under test is the
// packaged lmscope-<version>.vsix (`make package`), installed with `code-server --install-extension`
// into a fresh extensions folder, as a user installs it; workspace trust is on, as for a user, and
// the tests answer VS Code's trust dialog. See shared/vscode-testing.md.
import { spawn, execFileSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const root = resolve(import.meta.dirname, "..", "..");
export const toolsDir = join(root, "tools", "code-server");
export const codeServerBin = join(toolsDir, "node_modules", ".bin", "code-server");
export const chromiumPath = process.env.LMSCOPE_CHROMIUM ?? "/usr/bin/chromium";
// Absolute (it goes into settings.json), symlinks kept (a venv's python is one).
export const python = resolve(process.env.LMSCOPE_PYTHON ?? join(root, ".venv", "bin", "python"));
// The extension under test: the packaged .vsix named after the repo's manifest (LMSCOPE_VSIX
// names another). Escape hatch for working on the harness: LMSCOPE_EXTENSION_PATH=<folder> loads
// that folder (e.g. the repo root after `npm run build`) as a development extension instead, with
// no package and no install.
export const devExtension = process.env.LMSCOPE_EXTENSION_PATH
  ? resolve(process.env.LMSCOPE_EXTENSION_PATH)
  : null;
export const manifest = JSON.parse(
  readFileSync(join(devExtension ?? root, "package.json"), "utf8"),
);
export const vsix = devExtension
  ? null
  : resolve(process.env.LMSCOPE_VSIX ?? join(root, `${manifest.name}-${manifest.version}.vsix`));

export const TINY_PROMPT = "when mary and john went to the store , john gave a drink to";
// The model the extension's daemon loads: the embedded default (as a user gets it) unless
// LMSCOPE_INTEGRATION_MODEL=tiny asks for the tiny random model (seconds faster).
export const useTinyModel = process.env.LMSCOPE_INTEGRATION_MODEL === "tiny";
/** The demo's indirect-object prompt (the first of demo/prompts.txt), which the README shows. */
export const DEMO_PROMPT = readFileSync(join(root, "demo", "prompts.txt"), "utf8")
  .split("\n")
  .map((line) => line.trim())
  .find((line) => line && !line.startsWith("#"));
export const PROMPT = useTinyModel ? TINY_PROMPT : DEMO_PROMPT;
/** What the status bar shows once the model is ready. */
export const MODEL_NAME = useTinyModel ? /tiny-llama/ : /SmolLM2/;

/** Why the suite cannot run here (a message), or null. Builds and installs nothing. */
export function missingPrerequisite() {
  if (!existsSync(codeServerBin))
    return "code-server is not installed: run tools/code-server/install.sh first";
  if (!existsSync(chromiumPath))
    return `no Chromium at ${chromiumPath}: run tools/code-server/install.sh first`;
  if (!existsSync(python)) return `no Python at ${python}: run make setup first`;
  if (!manifest.main) return `package.json has no "main": the extension is not written yet`;
  if (vsix) return existsSync(vsix) ? null : `no ${vsix}: run make package first`;
  const main = resolve(devExtension, manifest.main);
  if (!existsSync(main) && !existsSync(`${main}.js`)) return `no ${main}: run npm run build first`;
  return null;
}

/** The title a command shows in the palette ("category: title"), or null if not contributed. */
export function paletteTitle(commandId) {
  const c = (manifest.contributes?.commands ?? []).find((x) => x.command === commandId);
  return c ? (c.category ? `${c.category}: ${c.title}` : c.title) : null;
}

export function contributesCustomEditor(viewType) {
  return (manifest.contributes?.customEditors ?? []).some((e) => e.viewType === viewType);
}

/** Retries `probe` until it returns something truthy; an error with `fatal` set stops at once. */
export async function until(what, deadlineMs, probe, intervalMs = 250) {
  const end = Date.now() + deadlineMs;
  let last;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (err) {
      if (err.fatal) throw err;
      last = err;
    }
    if (Date.now() > end) {
      throw new Error(
        `timed out after ${deadlineMs / 1000} s waiting for ${what}${last ? `: ${last.message}` : ""}`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

/**
 * A temp folder with: a workspace (notes.md, ioi.prompts.txt holding PROMPT, long.prompts.txt,
 * saved.lmtrace, example.py), a tiny random-init Llama saved with save_pretrained (no downloads),
 * fresh user data whose settings point the extension at the repo's Python and the model, an empty
 * extensions folder, and a screenshots folder. Two more workspaces: one whose settings name a Python that does not exist
 * (`noDaemon`) and one the tests never trust (`untrusted`). Workspace trust stays on (VS Code's
 * default); the tests answer its dialog for each folder they open (answerTrustDialog).
 */
export function prepareFixtures() {
  const base = mkdtempSync(join(tmpdir(), "lmscope-integration-"));
  const workspace = join(base, "workspace");
  const model = join(base, "tiny-llama");
  const user = join(base, "user");
  const shots = join(base, "screenshots");
  for (const d of [workspace, model, join(user, "User"), join(base, "extensions"), shots]) {
    mkdirSync(d, { recursive: true });
  }
  writeFileSync(join(workspace, "notes.md"), "L1H2\n\nHead L1H2 moves the subject's name.\n");
  writeFileSync(
    join(workspace, "example.py"),
    "import torch\n\nL0H0 = (0, 0)  # attends to the previous token\n",
  );
  writeFileSync(join(workspace, "ioi.prompts.txt"), `${PROMPT}\n`);
  // A prompt of a few hundred tokens: its trace runs long enough to be cancelled.
  writeFileSync(join(workspace, "long.prompts.txt"), `${`${PROMPT} Mary. `.repeat(30).trim()}\n`);
  const script = [
    "import sys",
    "from lmscope.traces.trace import Trace",
    "from lmscope.tracing.engine import run_trace",
    "from tests.conftest import TINY_PROMPT, build_tiny",
    "lm = build_tiny('llama')",
    "lm.model.save_pretrained(sys.argv[1])",
    "lm.tokenizer.save_pretrained(sys.argv[1])",
    "Trace(run_trace(lm, TINY_PROMPT)).save(sys.argv[2])",
  ].join("\n");
  execFileSync(python, ["-c", script, model, join(workspace, "saved.lmtrace")], {
    cwd: root,
    env: { ...process.env, HF_HUB_OFFLINE: "1", HF_HUB_DISABLE_PROGRESS_BARS: "1" },
    stdio: ["ignore", "ignore", "pipe"], // its stderr is in the error if it fails
  });
  // A corpus run folder as `lmscope run` lays it out (tests/test_run_view.py builds it): the run
  // view opens it.
  const run = "import sys, pathlib; from tests.test_run_view import make_demo_run; make_demo_run(pathlib.Path(sys.argv[1]))";
  execFileSync(python, ["-c", run, join(workspace, "runs", "demo")], {
    cwd: root,
    env: { ...process.env, HF_HUB_OFFLINE: "1", HF_HUB_DISABLE_PROGRESS_BARS: "1" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const settings = {
    "lmscope.python": python,
    "lmscope.model": useTinyModel ? model : "default",
    "workbench.startupEditor": "none",
    "workbench.tips.enabled": false,
    "workbench.enableExperiments": false,
    // VS Code's defaults, written out: trust on, and its dialog when a folder is first opened.
    "security.workspace.trust.enabled": true,
    "security.workspace.trust.startupPrompt": "once",
    "telemetry.telemetryLevel": "off",
    "extensions.autoCheckUpdates": false,
    "extensions.autoUpdate": false,
    "update.mode": "none",
    "editor.hover.delay": 100,
    "chat.commandCenter.enabled": false,
  };
  writeFileSync(join(user, "User", "settings.json"), JSON.stringify(settings, null, 2));
  // A second workspace whose settings name an interpreter that does not exist: no daemon there.
  const noDaemon = join(base, "workspace-no-daemon");
  mkdirSync(join(noDaemon, ".vscode"), { recursive: true });
  copyFileSync(join(workspace, "saved.lmtrace"), join(noDaemon, "saved.lmtrace"));
  writeFileSync(
    join(noDaemon, ".vscode", "settings.json"),
    JSON.stringify({ "lmscope.python": join(base, "no-such-python") }, null, 2),
  );
  // A workspace the tests do not trust (they answer "No" to its trust dialog): no daemon there.
  const untrusted = join(base, "workspace-untrusted");
  mkdirSync(untrusted, { recursive: true });
  writeFileSync(join(untrusted, "ioi.prompts.txt"), `${PROMPT}\n`);
  return {
    base,
    workspace,
    noDaemon,
    untrusted,
    model,
    user,
    shots,
    extensions: join(base, "extensions"),
  };
}

/** code-server's own config file: empty (without --config it writes ~/.config/code-server). */
function configFile(fx) {
  const path = join(fx.base, "code-server.yaml");
  if (!existsSync(path)) writeFileSync(path, "");
  return path;
}

/**
 * Install the packaged extension into fx.extensions (empty: a clean code-server) with
 * `code-server --install-extension`, as a user does; checks that it landed with the manifest the
 * tests read (a .vsix packed from an older package.json fails here) and returns its folder. With LMSCOPE_EXTENSION_PATH
 * nothing is installed (the extension is loaded as a development extension) and this returns null.
 */
export function installExtension(fx) {
  if (!vsix) return null;
  const id = `${manifest.publisher}.${manifest.name}`;
  let out;
  try {
    out = execFileSync(
      codeServerBin,
      [...profileArgs(fx), "--install-extension", vsix],
      { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 120_000 },
    );
  } catch (err) {
    throw new Error(`code-server --install-extension ${vsix} failed:\n${err.stdout}${err.stderr}`);
  }
  const folder = join(fx.extensions, `${id}-${manifest.version}`);
  if (!existsSync(join(folder, "package.json")))
    throw new Error(`installing ${vsix} made no ${folder}/package.json; code-server said:\n${out}`);
  const installed = JSON.parse(readFileSync(join(folder, "package.json"), "utf8"));
  if (JSON.stringify(installed.contributes) !== JSON.stringify(manifest.contributes))
    throw new Error(
      `${vsix} contributes other commands or settings than package.json: run make package`,
    );
  if (!existsSync(resolve(folder, installed.main)))
    throw new Error(`the installed extension has no ${installed.main}`);
  return folder;
}

/** The profile every code-server run of a fixture uses: its config, user data and extensions
 * (the install and the server must see the same ones). */
function profileArgs(fx) {
  return ["--config", configFile(fx), "--user-data-dir", fx.user, "--extensions-dir", fx.extensions];
}

/**
 * Start code-server in its own process group (detached = setsid); resolves once /healthz answers.
 * Workspace trust is on (no --disable-workspace-trust): every folder opened asks whether to trust
 * it (answerTrustDialog). It serves the extensions in fx.extensions (installExtension).
 */
export async function startCodeServer(fx) {
  const port = await freePort();
  const log = join(fx.base, "code-server.log");
  const fd = openSync(log, "a");
  const child = spawn(
    codeServerBin,
    [
      "--bind-addr",
      `127.0.0.1:${port}`,
      "--auth",
      "none",
      "--disable-telemetry",
      "--disable-update-check",
      "--disable-getting-started-override",
      ...profileArgs(fx),
      fx.workspace,
    ],
    { detached: true, stdio: ["ignore", fd, fd], env: { ...process.env, HF_HUB_OFFLINE: "1" } },
  );
  let exited = null;
  child.on("exit", (code, signal) => (exited = { code, signal }));
  const server = { port, pid: child.pid, log, child };
  // Whatever happens to this process, the group goes (code-server, its watcher, the extension
  // host and the daemon it started).
  const killOnExit = () => killGroup(server, "SIGKILL");
  const killOnSignal = (signal) => {
    killGroup(server, "SIGKILL");
    process.exit(signal === "SIGINT" ? 130 : 143);
  };
  process.once("exit", killOnExit);
  process.once("SIGINT", killOnSignal);
  process.once("SIGTERM", killOnSignal);
  server.killOnExit = killOnExit;
  server.killOnSignal = killOnSignal;
  await until("code-server /healthz", 60_000, async () => {
    if (exited)
      throw new Error(`code-server exited (${JSON.stringify(exited)}); log:\n${tail(log)}`);
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    return res.ok;
  });
  return server;
}

/** The command lines of the processes in `server`'s process group (code-server and its
 * children); with `pids: true`, objects {pid, args}. */
export function processesOf(server, { pids = false } = {}) {
  const out = execFileSync("ps", ["-eo", "pid=,pgid=,args="], { encoding: "utf8" });
  return out
    .split("\n")
    .map((line) => line.trim().match(/^(\d+)\s+(\d+)\s+(.*)$/))
    .filter((m) => m && Number(m[2]) === server.pid)
    .map((m) => (pids ? { pid: Number(m[1]), args: m[3] } : m[3]));
}

export function tail(path, lines = 30) {
  try {
    return readFileSync(path, "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

function killGroup(server, signal) {
  try {
    process.kill(-server.pid, signal);
    return true;
  } catch {
    return false; // already gone
  }
}

/** SIGTERM the whole process group, SIGKILL whatever is left after a deadline. */
export async function stopCodeServer(server) {
  if (!server) return;
  process.removeListener("exit", server.killOnExit);
  process.removeListener("SIGINT", server.killOnSignal);
  process.removeListener("SIGTERM", server.killOnSignal);
  if (!killGroup(server, "SIGTERM")) return;
  const gone = () => {
    try {
      process.kill(-server.pid, 0);
      return false;
    } catch {
      return true;
    }
  };
  try {
    await until("code-server's process group to exit", 5_000, gone, 100);
  } catch {
    killGroup(server, "SIGKILL");
  }
}

export async function launchBrowser() {
  const require = createRequire(join(toolsDir, "package.json"));
  const { chromium } = require("playwright-core");
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** The workbench URL opening `folder`; with LMSCOPE_EXTENSION_PATH it also loads that folder as a
 * development extension. */
export function workbenchUrl(server, fx, folder = fx.workspace) {
  const authority = `127.0.0.1:${server.port}`;
  const url = `http://${authority}/?folder=${encodeURIComponent(folder)}`;
  if (!devExtension) return url;
  const payload = [["extensionDevelopmentPath", `vscode-remote://${authority}${devExtension}`]];
  return `${url}&payload=${encodeURIComponent(JSON.stringify(payload))}`;
}

/** The question of VS Code's workspace trust dialog, and its two answers (1.100). */
export const TRUST_QUESTION = /Do you trust the authors of the files in this folder\?/;
const TRUST_YES = "Yes, I trust the authors";
const TRUST_NO = "No, I don't trust the authors";

/**
 * Wait for VS Code's workspace trust dialog (a modal shown when a folder is first opened) and
 * answer it: "Yes, I trust the authors" (`trust`) or "No, I don't trust the authors". Leaves the
 * "trust the parent folder" box unticked, so only this folder is trusted. Returns once the dialog
 * has closed.
 */
export async function answerTrustDialog(page, { trust }) {
  const dialog = page.locator(".monaco-dialog-box").filter({ hasText: TRUST_QUESTION });
  try {
    await dialog.waitFor({ state: "visible", timeout: 60_000 });
  } catch (err) {
    throw new Error(`VS Code did not ask whether to trust the folder: ${err.message}`);
  }
  const answer = trust ? TRUST_YES : TRUST_NO;
  await dialog.getByRole("button", { name: answer, exact: true }).click();
  await dialog.waitFor({ state: "hidden", timeout: 15_000 });
}

// --- driving the workbench --------------------------------------------------------------------

/** Run a command from the palette by its exact title ("Category: Title"). */
export async function runCommand(page, title) {
  await page.keyboard.press("Escape");
  await page.keyboard.press("F1");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor({ state: "visible" });
  await input.fill(`>${title}`);
  // The focused row, not any row: the list shows stale (recently used) entries until it filters.
  const row = page.locator(".quick-input-list .monaco-list-row.focused", { hasText: title });
  await row.waitFor({ state: "visible", timeout: 10_000 });
  await page.keyboard.press("Enter");
}

/** Is a command with exactly this title listed in the palette? (closes the palette again) */
export async function paletteLists(page, title) {
  await page.keyboard.press("Escape");
  await page.keyboard.press("F1");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor({ state: "visible" });
  await input.fill(`>${title}`);
  const rows = page.locator(".quick-input-list .monaco-list-row", { hasText: title });
  try {
    await rows.first().waitFor({ state: "visible", timeout: 10_000 });
    return true;
  } catch {
    return false;
  } finally {
    await page.keyboard.press("Escape");
  }
}

/** Open a workspace file with Quick Open; waits for its tab. */
export async function openFile(page, name) {
  await page.keyboard.press("Escape");
  await page.keyboard.press("Control+P");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor({ state: "visible" });
  await input.fill(name);
  await page.locator(".quick-input-list .monaco-list-row.focused", { hasText: name }).waitFor();
  await page.keyboard.press("Enter");
  await page.locator(".tabs-container .tab.active", { hasText: name }).waitFor({ timeout: 15_000 });
}

export async function closeAllEditors(page) {
  await runCommand(page, "View: Close All Editors");
  await until("all editors (and their webviews) to close", 10_000, async () => {
    return (
      (await page.locator(".tabs-container .tab").count()) === 0 &&
      (await page.locator("iframe.webview").count()) === 0
    );
  });
}

/** The document of the (single) visible webview: two iframes deep. */
export function webviewContent(page) {
  return page.frameLocator("iframe.webview").last().frameLocator("#active-frame");
}
