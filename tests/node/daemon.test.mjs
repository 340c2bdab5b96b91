// The daemon from Node, through vscode-languageserver-protocol: the JSON-RPC stack the VS Code
// extension uses. Spawns `python -m lmscope serve --stdio` and talks to it over its pipes.
// Run: node --test tests/node/  (LMSCOPE_PYTHON overrides the interpreter, default .venv/bin/python)
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import {
  createProtocolConnection,
  StreamMessageReader,
  StreamMessageWriter,
} from "vscode-languageserver-protocol/node";

const root = resolve(import.meta.dirname, "..", "..");
const python = process.env.LMSCOPE_PYTHON ?? join(root, ".venv", "bin", "python");
const table = JSON.parse(readFileSync(join(root, "protocol", "methods.json"), "utf8"));

function startDaemon() {
  const child = spawn(python, ["-m", "lmscope", "serve", "--stdio", "--log-level", "warning"], {
    cwd: root,
    stdio: ["pipe", "pipe", "inherit"],
  });
  const connection = createProtocolConnection(
    new StreamMessageReader(child.stdout),
    new StreamMessageWriter(child.stdin),
  );
  connection.listen();
  const exited = new Promise((done) => child.on("exit", (code) => done(code)));
  return { child, connection, exited };
}

function savedTinyTrace() {
  // A trace of a tiny random-init Llama, made by the engine (no model download).
  const folder = mkdtempSync(join(tmpdir(), "lmscope-node-"));
  const path = join(folder, "tiny.lmtrace");
  const script = [
    "import sys",
    "from lmscope.traces.trace import Trace",
    "from lmscope.tracing.engine import run_trace",
    "from tests.conftest import TINY_PROMPT, build_tiny",
    "Trace(run_trace(build_tiny('llama'), TINY_PROMPT)).save(sys.argv[1])",
  ].join("\n");
  execFileSync(python, ["-c", script, path], { cwd: root, stdio: ["ignore", "ignore", "inherit"] });
  return path;
}

test("a Node client initializes, queries a saved trace and shuts the daemon down", async () => {
  const path = savedTinyTrace();
  const { connection, exited } = startDaemon();
  try {
    const init = await connection.sendRequest("initialize", {
      processId: process.pid,
      rootUri: null,
      capabilities: {},
      initializationOptions: { protocolVersion: table.protocolVersion },
    });
    assert.equal(init.capabilities.experimental.lmscope.protocolVersion, table.protocolVersion);
    connection.sendNotification("initialized", {});

    const status = await connection.sendRequest("lmscope/status", {});
    assert.equal(status.state, "idle");
    assert.equal(status.model, null);

    const { trace } = await connection.sendRequest("lmscope/openTrace", { path });
    assert.equal(trace.live, false);
    assert.equal(trace.tokens[0], "<bos>");

    const route = await connection.sendRequest("lmscope/route", {
      handle: trace.handle,
      threshold: 0.01,
    });
    assert.equal(route.token, trace.tokens.length - 1);
    assert.ok(route.edges.length > 0);
    const edge = route.edges.find((e) => e.kind === "attention");
    if (edge) {
      const { heads } = await connection.sendRequest("lmscope/edgeHeads", {
        handle: trace.handle,
        layer: edge.target.layer,
        target: edge.target.position,
        source: edge.source.position,
      });
      assert.equal(heads.length, trace.nHeads);
    }

    await assert.rejects(connection.sendRequest("lmscope/noSuchMethod", {}), (error) => {
      assert.equal(error.code, -32601);
      return true;
    });
    await assert.rejects(
      connection.sendRequest("lmscope/route", { handle: trace.handle, threshold: -1 }),
      (error) => {
        assert.equal(error.code, -32602);
        assert.match(error.message, /threshold/);
        return true;
      },
    );

    await connection.sendRequest("shutdown");
    connection.sendNotification("exit");
    assert.equal(await exited, 0);
  } finally {
    connection.dispose();
  }
});
