"""The daemon under a real third-party LSP client: Debian's Neovim (installed by
tools/neovim/install.sh, which `make test` runs), driven headless by tests/neovim/lsp_client.lua.

Neovim starts `python -m lmscope serve --stdio` as a plain user would (no initializationOptions
at all), loads the default model and traces the IOI prompt through its own `request_sync`,
hovers `L23H0` in a Markdown buffer and asks for CodeLens on a `.prompts.txt` buffer; the script
writes what it got as JSON, which this test reads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.default_model]

SCRIPT = Path(__file__).with_name("neovim") / "lsp_client.lua"
IOI = "When Mary and John went to the store, John gave a drink to"
PROMPTS = f"{IOI}\n# a comment, not a prompt\n\nThe war lasted from the year 1732 to the year 17\n"
DEADLINE_S = 600  # the script's own; the subprocess gets a minute more


def unescape(markdown: str) -> str:
    r"""The card's text without Markdown's backslash escapes (`SmolLM2\-135M`)."""
    return re.sub(r"\\([\\`*_{}\[\]()#+\-.!|<>~])", r"\1", markdown)


@pytest.fixture(scope="module")
def neovim(tmp_path_factory) -> dict[str, Any]:
    """Run the Lua script once; its JSON report, with nvim's exit status."""
    nvim = shutil.which("nvim")
    if nvim is None:
        pytest.fail("nvim is not installed: run tools/neovim/install.sh (make test does)")
    tmp = tmp_path_factory.mktemp("neovim")
    work = tmp / "project"
    work.mkdir()
    hover_file = work / "notes.md"
    hover_file.write_text("# Notes\n\nThe name mover L23H0 copies Mary.\n", encoding="utf-8")
    prompts_file = work / "ioi.prompts.txt"
    prompts_file.write_text(PROMPTS, encoding="utf-8")
    result = tmp / "result.json"
    log = tmp / "daemon.log"
    env = {
        **os.environ,
        "LMSCOPE_PYTHON": sys.executable,
        "LMSCOPE_NVIM_RESULT": str(result),
        "LMSCOPE_NVIM_HOVER": str(hover_file),
        "LMSCOPE_NVIM_PROMPTS": str(prompts_file),
        "LMSCOPE_NVIM_LOG": str(log),
        "LMSCOPE_NVIM_DEADLINE": str(DEADLINE_S),
        # Neovim's own files (lsp.log, shada, swap) stay in the test's folder.
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "XDG_DATA_HOME": str(tmp / "data"),
        "XDG_STATE_HOME": str(tmp / "state"),
        "XDG_CACHE_HOME": str(tmp / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    command = [nvim, "--headless", "--clean", "-u", "NONE", "-n", "-c", f"luafile {SCRIPT}"]
    process = subprocess.Popen(
        command,
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # nvim and the daemon it started, killed together on a hang
    )
    try:
        output, _ = process.communicate(timeout=DEADLINE_S + 60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    diagnostics = (
        f"nvim exited {process.returncode}; output:\n{output.decode(errors='replace')[-4000:]}\n"
        f"daemon log:\n{log.read_text(errors='replace')[-4000:] if log.exists() else '(none)'}"
    )
    report = json.loads(result.read_text(encoding="utf-8")) if result.exists() else {}
    return {"rc": process.returncode, "report": report, "diagnostics": diagnostics}


def check(neovim: dict[str, Any], step: str) -> dict[str, Any]:
    """The step's part of the report, failing with everything Neovim said when it is missing."""
    report = neovim["report"]
    got = report.get("steps", {}).get(step)
    assert got, (
        f"no {step!r} in the report; errors: {json.dumps(report.get('errors'), indent=1)}\n"
        f"{neovim['diagnostics']}"
    )
    assert "error" not in got, f"{step}: {got['error']}"
    return got


def test_neovim_initializes_without_options_and_runs_the_custom_requests(neovim):
    assert neovim["report"].get("nvim_version", "").startswith("0."), neovim["diagnostics"]
    init = check(neovim, "initialize")
    assert init["ok"] and init["hoverProvider"] and init["codeLensProvider"]
    assert init["lmscope"]["protocolVersion"] == "1"
    assert check(neovim, "loadModel")["model"] == "SmolLM2-135M-Instruct"
    trace = check(neovim, "trace")
    assert re.fullmatch(r"t[0-9]+", trace["handle"]) and trace["prediction"] == " Mary"
    states = [(n["method"], n["state"]) for n in neovim["report"]["notifications"]]
    assert ("lmscope/modelChanged", "ready") in states, states


def test_neovim_hovers_l23h0_and_gets_the_card(neovim):
    hover = check(neovim, "hover")
    assert hover["kind"] == "markdown"
    card = unescape(hover["markdown"])
    title = card.splitlines()[0]
    assert "L23H0 · attention head" in title and "SmolLM2-135M-Instruct" in title, title
    share = re.search(r"carries \*\*([0-9.]+)%\*\* of the prediction of `·Mary` after `·to`", card)
    assert share and 0 < float(share.group(1)) <= 100, card
    assert "| promoted | score | suppressed | score |" in card, card
    assert len(re.findall(r"^\| `.*` \| \+[0-9.]+ \| `.*` \| -[0-9.]+ \|$", card, re.M)) >= 5
    # The reference's span, in Neovim's (UTF-16) columns on line 2.
    line = "The name mover L23H0 copies Mary."
    start = line.index("L23H0")
    assert hover["range"] == {
        "start": {"line": 2, "character": start},
        "end": {"line": 2, "character": start + len("L23H0")},
    }
    # What Neovim showed: its hover float holds the card (title and table rows).
    shown = "\n".join(hover["float_lines"])
    assert "L23H0 · attention head" in shown and "promoted" in shown, shown
    # Beside the reference, no card: null, which Neovim shows as nothing.
    assert check(neovim, "hoverElsewhere")["result"] is None


def test_neovim_gets_a_trace_lens_per_prompt_line(neovim):
    lenses = check(neovim, "codeLens")
    assert lenses["lenses"] == [
        {"line": 0, "title": "Trace", "command": "lmscope.tracePrompt", "prompt": IOI},
        {
            "line": 3,
            "title": "Trace",
            "command": "lmscope.tracePrompt",
            "prompt": "The war lasted from the year 1732 to the year 17",
        },
    ]
    # Neovim's codelens module kept both and shows each as virtual text on its line.
    assert lenses["neovim_lenses"] == 2
    assert lenses["virtual_text"] == [{"line": 0, "text": "Trace"}, {"line": 3, "text": "Trace"}]


def test_neovim_quits_cleanly_and_the_daemon_exits_zero(neovim):
    report = neovim["report"]
    assert report.get("errors") == [], f"{report.get('errors')}\n{neovim['diagnostics']}"
    assert report.get("daemon_exit", {}).get("code") == 0, neovim["diagnostics"]
    assert neovim["rc"] == 0, neovim["diagnostics"]
