"""What reaches the terminal: every string that comes from a trace file, a model or a path is
shown inert. Issue 11: `lmscope show` printed a model name holding escape sequences raw, so
opening someone's trace could clear the screen or set the window title.

Each command runs as its own process writing to pipes, and its stdout and stderr bytes are
searched for every active character of `HOSTILE`: ESC, CSI and OSC sequences, BEL, C1 controls
(8-bit CSI, OSC, NEL), bidi overrides and isolates, zero-width and other format characters.
None may appear raw; each is shown as its escape (`\\x1b`, `\\u202e`, ...)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.reliability import bounds
from tests.reliability.conftest import run_lmscope

DEADLINE = 120  # a `trace` loads a model: generous, this is not about time

HOSTILE = (
    "A\x1b[2J\x1b[H"  # CSI: clear the screen, cursor home
    "\x1b]0;pwned\x07"  # OSC 0: window title, BEL-terminated
    "\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\"  # OSC 8 hyperlink, ST-terminated
    "\x07\x08\x7f"  # BEL, backspace, DEL
    "\x9b31m\x9d0;t\x9c\x85\x90"  # C1: 8-bit CSI, OSC, ST, NEL, DCS
    "\u202eevil\u202c\u2066iso\u2069\u200f\u061c"  # bidi: override, isolate, marks
    "\u200b\u200d\ufeff\u2028\u2029\U000e0041"  # zero width, BOM, line/paragraph separators, tag
    "Z"
)
ACTIVE = sorted({ch for ch in HOSTILE if not ch.isprintable()})


def run(*args: str | os.PathLike[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return run_lmscope(*args, cwd=cwd, timeout=DEADLINE)


def assert_inert(result: subprocess.CompletedProcess[bytes], what: str) -> None:
    """No active character of HOSTILE, raw, in stdout or stderr (as UTF-8 bytes: a C1 control
    is the two bytes C2 xx)."""
    for name, stream in (("stdout", result.stdout), ("stderr", result.stderr)):
        raw = [ch for ch in ACTIVE if ch.encode("utf-8") in stream]
        assert not raw, f"{what}: {name} holds raw {[f'U+{ord(c):04X}' for c in raw]}"


@pytest.fixture(scope="module")
def hostile_trace(tmp_path_factory) -> Path:
    """A valid trace (every node on a route) whose model name, spec, prompt, token strings and
    vocabulary strings all carry HOSTILE."""
    trace = bounds.quiet_trace(share=0.5)
    trace.model.name = f"model {HOSTILE}"
    trace.model.spec = f"/models/{HOSTILE}"
    trace.environment.device = HOSTILE
    trace.tokens.prompt = f"prompt {HOSTILE}"
    trace.tokens.strings = [f"{i}{HOSTILE}" for i in range(len(trace.tokens.strings))]
    trace.vocabulary = {i: f"v{i}{HOSTILE}" for i in trace.vocabulary}
    trace.predictions.probs[:, 0] = 0.5  # predictions are printed too
    path = tmp_path_factory.mktemp("hostile") / "hostile.lmtrace"
    path.write_bytes(bounds.pack(bounds.wire_of(trace)))
    return path


def test_show_prints_every_text_of_a_trace_inert(hostile_trace, tmp_path):
    for args in (("show", hostile_trace), ("show", hostile_trace, "--raw", "--threshold", "0.01")):
        result = run(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert_inert(result, " ".join(map(str, args)))
        out = result.stdout.decode("utf-8")
        # Shown, escaped: the model name, the prompt, tokens and predictions.
        assert out.startswith("model A\\x1b[2J\\x1b[H\\x1b]0;pwned\\x07"), out[:200]
        assert "“1A\\x1b[2J" in out  # a token, as every view shows it (long texts are cut)
        assert "prediction after" in out and "route of token" in out


def test_exports_written_to_the_terminal_are_inert_and_mean_the_same(hostile_trace, tmp_path):
    svg = run("export", hostile_trace, "--format", "svg", cwd=tmp_path)
    assert svg.returncode == 0, svg.stderr
    assert_inert(svg, "export --format svg")
    assert b"<svg" in svg.stdout and b"1A\\x1b[2J" in svg.stdout  # ESC, shown as text
    exported = run("export", hostile_trace, "--format", "json", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert_inert(exported, "export --format json")
    wire = json.loads(exported.stdout)  # the same document, escapes decoded
    assert wire["model"]["name"] == f"model {HOSTILE}"
    assert wire["tokens"]["prompt"] == f"prompt {HOSTILE}"
    assert wire["vocabulary"]["strings"][0] == f"v0{HOSTILE}"


def test_messages_that_echo_a_path_or_file_content_are_inert(hostile_trace, tmp_path):
    folder = tmp_path / f"dir{HOSTILE.replace('/', '')}"
    folder.mkdir()
    missing = folder / "missing.lmtrace"
    result = run("show", missing, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.count(b"\n") == 1, result.stderr
    assert_inert(result, "show of a missing file")
    assert b"does not exist" in result.stderr and b"\\x1b" in result.stderr
    # A file refused for what it holds: its path and the value it quotes.
    damaged = folder / "damaged.lmtrace"
    wire = bounds.wire_of(bounds.quiet_trace())
    wire["model"]["family"] = HOSTILE
    damaged.write_bytes(bounds.pack(wire))
    result = run("show", damaged, cwd=tmp_path)
    assert result.returncode == 1 and b"model.family" in result.stderr, result.stderr
    assert_inert(result, "show of a damaged file")
    # A file written: `wrote PATH` names it.
    out = folder / "route.svg"
    result = run("export", hostile_trace, "--format", "svg", "--out", out, cwd=tmp_path)
    assert result.returncode == 0 and out.exists(), result.stderr
    assert_inert(result, "export --out")
    assert b"wrote " in result.stderr
    # A usage error quoting an argument.
    result = run("show", hostile_trace, "--token", HOSTILE, cwd=tmp_path)
    assert result.returncode == 2
    assert_inert(result, "usage error")


def test_trace_prints_the_model_name_prompt_tokens_and_paths_inert(model_folder, tmp_path):
    """The model's display name is its folder's name; the prompt and its tokens come from the
    user and the tokenizer. Progress lines are printed too (no --quiet)."""
    hostile_model = tmp_path / f"tiny{HOSTILE.replace('/', '')}"
    shutil.copytree(model_folder, hostile_model)
    out = tmp_path / f"out{HOSTILE.replace('/', '')}"
    out.mkdir()
    result = run(
        "trace", f"When Mary {HOSTILE} and John", "--model", hostile_model,
        "--out", out / "t.lmtrace", "--svg",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")[-2000:]
    assert_inert(result, "trace")
    text = result.stdout.decode("utf-8")
    assert text.startswith("tiny"), text[:200]
    assert "wrote " in text and "\\x1b" in text
    # A prompt file with a bad line: the message names the file (a hostile path) and the line.
    prompts = out / "prompts.txt"
    prompts.write_text("When Mary and John\n\x00\x00\n", encoding="utf-8")  # line 2: no text
    result = run(
        "trace", "--file", prompts, "--model", hostile_model, "--out-dir", out, "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert_inert(result, "trace --file")
    assert b"line 2" in result.stderr
