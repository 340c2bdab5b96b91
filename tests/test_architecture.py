"""The layers of lmscope hold: the import contract, no module reaching for another's private
names, no torch where a saved trace is read, one handler per request, modules of a readable
size. ARCHITECTURE.md names each layer and why."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lmscope
from lmscope import protocol
from lmscope.server.handlers import HANDLERS
from tests.conftest import TINY_PROMPT, build_tiny

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(lmscope.__file__).resolve().parent
MAX_LINES = 450  # past this, a module must say why in its docstring ("Why over 450 lines:")
HARD_LIMIT = 600


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((name, path))
    return found


def test_the_import_contract_holds():
    """pyproject.toml [tool.importlinter]: the layers, torch-free reading, pygls at the edge."""
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(linter), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_no_module_imports_a_private_name_of_another_module():
    offences = []
    for name, path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lmscope"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        offences.append(f"{name} imports {node.module}.{alias.name}")
    assert offences == []


def test_modules_stay_small_or_say_why():
    too_long = []
    for name, path in modules():
        lines = path.read_text(encoding="utf-8").count("\n")
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if lines > HARD_LIMIT or (lines > MAX_LINES and "Why over 450 lines:" not in docstring):
            too_long.append(f"{name}: {lines} lines")
    assert too_long == []


def test_every_request_of_the_protocol_has_exactly_one_handler():
    requests = {
        name
        for name, spec in protocol.METHODS.items()
        if spec.kind == "request" and spec.direction == "client->server"
    }
    assert set(HANDLERS) == requests


# --- no torch where a saved trace is read ------------------------------------------------------
@pytest.fixture(scope="module")
def saved_trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("saved") / "t.lmtrace"
    lmscope.trace(TINY_PROMPT, model=build_tiny("llama")).save(path)
    return path


CHECK = """
import sys
{body}
heavy = sorted(m for m in ("torch", "transformers", "accelerate") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


def run_without_torch_check(body: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    return subprocess.run(
        [sys.executable, "-c", CHECK.format(body=body)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "{trace}"],
        ["show", "{trace}", "--raw", "--threshold", "0.1"],
        ["export", "{trace}", "--format", "json", "--out", "t.json"],
        ["export", "{trace}", "--format", "svg", "--out", "t.svg"],
        ["diff", "{trace}", "{trace}", "--threshold", "0.01", "--json", "d.json"],
    ],
)
def test_show_and_export_never_import_torch(saved_trace, tmp_path, argv):
    args = [a.format(trace=saved_trace) for a in argv]
    body = f"from lmscope.cli import main\nassert main({json.dumps(args)}) == 0"
    result = run_without_torch_check(body, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stderr


def test_run_summary_and_load_run_never_import_torch(tmp_path):
    from lmscope.runner.corpus import RunSettings, read_checked_source, run_corpus
    from lmscope.runner.local import LocalBackend

    source = tmp_path / "c.prompts.txt"
    source.write_text(TINY_PROMPT + "\n")
    loaded = build_tiny("llama")
    out = tmp_path / "run"
    checked = read_checked_source(source, False)
    run_corpus(checked, out, RunSettings(), lambda: LocalBackend(loaded), quiet=True)
    body = (
        "from lmscope.cli import main\n"
        f"assert main(['run-summary', {str(out)!r}, '--component', 'L0H0']) == 0\n"
        f"import lmscope\nlmscope.load_run({str(out)!r}).summary()"
    )
    result = run_without_torch_check(body, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stderr


def test_a_saved_trace_is_read_and_queried_without_torch(saved_trace, tmp_path):
    body = f"""
import lmscope
from lmscope.cards import component_card
from lmscope.components import ComponentRef
trace = lmscope.load_trace({str(saved_trace)!r})
route = trace.route(-1, 0.01)
route.flow()
layer, target, source = (int(x[0]) for x in (
    trace.data.edges.layer, trace.data.edges.target, trace.data.edges.source))
trace.edge_heads(layer, target, source)
component_card(ComponentRef("attention", 0), trace, threshold=0.01)
"""
    result = run_without_torch_check(body, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stderr
