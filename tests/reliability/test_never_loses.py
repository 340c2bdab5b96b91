"""Nothing the user has is lost to a mistake: a load of something that is not a model keeps
the model that was loaded (and says why it failed); a truncated or damaged weights file is one
clear ModelError line, never a traceback; the command line's files cannot be redirected through
a planted symlink."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmscope.models.default_model import gguf_path
from tests.conftest import TINY_PROMPT
from tests.daemon_client import RpcError
from tests.reliability.conftest import spawn_loaded

MODEL_ERROR = -32001


def not_models(tmp_path: Path) -> dict[str, str]:
    """Specs that name nothing loadable, each in its own way."""
    empty = tmp_path / "empty-folder"
    empty.mkdir(exist_ok=True)
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf at all")
    no_weights = tmp_path / "config-only"
    no_weights.mkdir(exist_ok=True)
    (no_weights / "config.json").write_text('{"model_type": "llama"}')
    return {
        "missing path": str(tmp_path / "no" / "such" / "folder"),
        "empty folder": str(empty),
        "a text file": str(text),
        "not a gguf": str(fake),
        "missing gguf": str(tmp_path / "gone.gguf"),
        "config without weights": str(no_weights),
        "malformed hub id": "org/name/with/too/many/parts!",
    }


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, model_folder):
    client = spawn_loaded(tmp_path_factory.mktemp("never-loses"), model_folder)
    yield client
    assert client.close() == 0


def test_a_load_of_something_that_is_not_a_model_keeps_the_loaded_one(daemon, tmp_path):
    loaded = daemon.request("lmscope/status", {})["model"]
    assert loaded is not None
    for what, spec in not_models(tmp_path).items():
        with pytest.raises(RpcError) as refused:
            daemon.request("lmscope/loadModel", {"spec": spec})
        assert refused.value.code == MODEL_ERROR, what
        assert "\n" not in refused.value.message, what
        status = daemon.request("lmscope/status", {})
        assert status["model"] == loaded, f"{what}: the loaded model was let go"
        trace = daemon.request("lmscope/trace", {"prompt": TINY_PROMPT})
        assert trace["trace"]["model"]["name"] == loaded["name"]
        error = daemon.wait_notification(
            lambda n, spec=spec: (
                n["method"] == "lmscope/modelChanged"
                and n["params"]["state"] == "error"
                and n["params"].get("message") == refused.value.message
            )
        )
        assert error["params"]["model"] == loaded  # the state names the model still loaded


def truncations(source: Path, tmp_path: Path) -> list[Path]:
    """The default model's GGUF cut at several points, and two damaged copies."""
    data = source.read_bytes()
    cuts = [0, 3, 4, 10, 24, 100, 4096, 200_000, len(data) // 2]
    made = []
    for cut in cuts:
        path = tmp_path / f"cut-{cut}.gguf"
        path.write_bytes(data[:cut])
        made.append(path)
    flipped = bytearray(data[:300_000])
    flipped[8:24] = b"\xff" * 16  # absurd tensor and metadata counts
    (tmp_path / "counts.gguf").write_bytes(bytes(flipped))
    made.append(tmp_path / "counts.gguf")
    return made


@pytest.mark.default_model
def test_a_truncated_or_damaged_gguf_is_one_model_error_line(tmp_path, daemon):
    for path in truncations(gguf_path(), tmp_path):
        result = subprocess.run(
            [sys.executable, "-m", "lmscope", "trace", "hi", "--model", str(path), "--quiet"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 1, (path.name, result.stderr[-800:])
        assert result.stderr.startswith("lmscope: ") and result.stderr.count("\n") == 1, (
            path.name,
            result.stderr[-800:],
        )
        assert "Traceback" not in result.stderr
        with pytest.raises(RpcError) as refused:
            daemon.request("lmscope/loadModel", {"spec": str(path)}, timeout=300)
        assert refused.value.code == MODEL_ERROR, (path.name, refused.value.message)
    assert daemon.request("lmscope/status", {})["model"] is not None


@pytest.mark.parametrize(
    "argv",
    [["export", "{trace}", "--format", "svg", "--out", "{out}"],
     ["export", "{trace}", "--format", "json", "--out", "{out}"]],
)  # fmt: skip
def test_the_command_line_never_writes_through_a_planted_symlink(tmp_path, model_folder, argv):
    trace = tmp_path / "t.lmtrace"
    import lmscope

    lmscope.trace(TINY_PROMPT, model=str(model_folder)).save(trace)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out" / "result.txt"
    out.parent.mkdir()
    # Where an attacker would plant links: every temp name a predictable scheme could pick (the
    # process id of the writer, which the test cannot know in advance, so a range of them).
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    base = child.pid
    child.communicate(b"")
    for pid in range(base, base + 512):
        (out.parent / f".{out.name}.{pid}.tmp").symlink_to(victim)
    args = [a.format(trace=trace, out=out) for a in argv]
    result = subprocess.run(
        [sys.executable, "-m", "lmscope", *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "precious"
    assert out.is_file() and not out.is_symlink() and out.stat().st_size > 0
    assert sorted(p.name for p in out.parent.iterdir() if not p.is_symlink()) == [out.name]


def test_an_atomic_write_never_follows_a_link_at_its_temp_name(tmp_path, monkeypatch):
    from lmscope import files

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    monkeypatch.setattr(files.secrets, "token_hex", lambda _n: "fixed")
    (tmp_path / ".out.txt.fixed.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError):
        files.atomic_write_text(tmp_path / "out.txt", "new")
    assert victim.read_text() == "precious" and not (tmp_path / "out.txt").exists()
    os.unlink(tmp_path / ".out.txt.fixed.tmp")
    files.atomic_write_text(tmp_path / "out.txt", "new")
    assert (tmp_path / "out.txt").read_text() == "new"
