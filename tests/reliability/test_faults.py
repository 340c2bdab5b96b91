"""Faults a day brings, each injected into a real daemon process: a SIGKILL during a trace and
between a trace file's temp write and its rename, an out-of-memory or CUDA error inside the
engine, a full disk and a read-only traces folder. Nothing half-written appears under a final
name, errors are one clear answer, and the daemon (or its successor) keeps serving."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from lmscope.traces.lmtrace import read_trace
from tests.conftest import TINY_PROMPT
from tests.daemon_client import RpcError
from tests.reliability.conftest import rss_bytes, spawn, spawn_loaded

TRACE_FILE_ERROR, OUT_OF_MEMORY, LMSCOPE_ERROR = -32003, -32007, -32006
LONG_PROMPT = " ".join(["mary", "john", "went", "to", "the", "store"] * 100)


def wait_for_file(path: Path, client, timeout: float = 60.0) -> None:
    """Poll with a deadline: the daemon signals this point by creating the file."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert client.process.poll() is None, f"daemon died (log: {client.log_path})"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def sigkill(client) -> None:
    client.process.send_signal(signal.SIGKILL)
    assert client.process.wait(timeout=30) == -signal.SIGKILL
    client._log.close()


def visible_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_sigkill_during_a_trace_leaves_no_file_and_earlier_traces_intact(
    tmp_path, slow_model_folder
):
    traces = tmp_path / "traces"
    client = spawn(tmp_path / "logs")
    client.initialize()
    client.request("lmscope/loadModel", {"spec": str(slow_model_folder)})
    kept = traces / "kept.lmtrace"
    client.request("lmscope/trace", {"prompt": TINY_PROMPT, "savePath": str(kept)})
    before = kept.read_bytes()
    client.request_async(
        "lmscope/trace",
        {"prompt": LONG_PROMPT, "savePath": str(traces / "lost.lmtrace"), "workDoneToken": "k"},
    )
    client.wait_notification(
        lambda n: (
            n["method"] == "$/progress"
            and n["params"]["token"] == "k"
            and n["params"]["value"].get("percentage") is not None
        )
    )
    sigkill(client)
    assert visible_files(traces) == ["kept.lmtrace"]
    assert kept.read_bytes() == before
    assert read_trace(kept).tokens.prompt == TINY_PROMPT


def test_sigkill_between_temp_file_and_rename_keeps_the_old_file_under_the_final_name(
    tmp_path, model_folder
):
    traces = tmp_path / "traces"
    marker = tmp_path / "temp-written"
    client = spawn(tmp_path / "logs", f"pause-before-rename:{marker}")
    client.initialize()
    client.request("lmscope/loadModel", {"spec": str(model_folder)})
    kept = traces / "kept.lmtrace"
    client.request("lmscope/trace", {"prompt": "mary went to the store", "savePath": str(kept)})
    victim = traces / "victim.lmtrace"
    shutil.copyfile(kept, victim)  # an earlier trace under the name about to be replaced
    client.request_async("lmscope/trace", {"prompt": TINY_PROMPT, "savePath": str(victim)})
    wait_for_file(marker, client)
    temp = Path(marker.read_text())
    assert temp.parent == traces and temp.name.startswith(".victim.lmtrace.")
    assert temp.stat().st_size > 0  # the new bytes are complete, only the rename is missing
    sigkill(client)
    assert victim.read_bytes() == kept.read_bytes()  # old content, never a partial file
    assert visible_files(traces) == ["kept.lmtrace", "victim.lmtrace"]
    assert read_trace(victim).tokens.prompt == "mary went to the store"

    # A fresh daemon (what the extension starts after the crash) opens the saved traces.
    again = spawn(tmp_path / "logs2")
    again.initialize()
    opened = again.request("lmscope/openTrace", {"path": str(victim)})
    assert opened["trace"]["prompt"] == "mary went to the store"
    assert again.close() == 0


@pytest.fixture(scope="module")
def engine_faults(tmp_path_factory, model_folder):
    """One daemon whose first three traces fail inside the engine (OOM, CUDA, MemoryError)."""
    logs = tmp_path_factory.mktemp("engine-faults")
    client = spawn_loaded(logs, model_folder, "engine:oom+cuda+memory")
    yield client
    client.check_notifications()
    assert client.close() == 0


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (OUT_OF_MEMORY, "out of memory"),
        (LMSCOPE_ERROR, "the GPU failed during this work: CUDA error"),
        (OUT_OF_MEMORY, "out of memory"),
    ],
    ids=["torch-oom", "cuda-error", "memory-error"],
)
def test_an_engine_failure_is_a_clear_error_releases_its_memory_and_the_daemon_serves(
    engine_faults, code, words
):
    client = engine_faults
    before = rss_bytes(client.process.pid)
    with pytest.raises(RpcError) as failed:
        client.request("lmscope/trace", {"prompt": TINY_PROMPT})
    assert failed.value.code == code and words in failed.value.message
    assert "memory was released" in failed.value.message
    assert "\n" not in failed.value.message
    # The 256 MiB the failing layer allocated are gone once the error is answered.
    grown = rss_bytes(client.process.pid) - before
    print(f"resident memory after the failed trace: {grown / 2**20:+.1f} MiB")
    assert grown < 128 * 2**20
    client.wait_notification(
        lambda n: n["method"] == "lmscope/traceChanged" and n["params"]["state"] == "failed"
    )
    status = client.request("lmscope/status", {})
    assert status["state"] == "idle" and status["model"] is not None


def test_after_engine_failures_the_same_daemon_traces_again(engine_faults):
    for _ in range(3):  # consume the injected failures whatever ran before
        try:
            engine_faults.request("lmscope/trace", {"prompt": TINY_PROMPT})
        except RpcError as error:
            assert error.code in (OUT_OF_MEMORY, LMSCOPE_ERROR)
    traced = engine_faults.request("lmscope/trace", {"prompt": TINY_PROMPT})
    assert traced["trace"]["tokens"][0] == "<bos>"


# --- disk full and read-only folders ------------------------------------------------------------
@pytest.fixture(scope="module")
def disk_faults(tmp_path_factory, model_folder):
    """Writes into any `full` folder fail half-way with ENOSPC; into any `readonly` folder,
    creating the file fails with EROFS."""
    logs = tmp_path_factory.mktemp("disk-faults")
    client = spawn_loaded(
        logs, model_folder, "write-error:/full/:ENOSPC,open-error:/readonly/:EROFS"
    )
    yield client
    assert client.close() == 0


@pytest.mark.parametrize(
    ("folder", "reason"),
    [("full", "No space left on device"), ("readonly", "Read-only file system")],
)
def test_a_failed_save_is_a_clear_error_and_the_trace_stays_usable_and_saveable_elsewhere(
    disk_faults, tmp_path, folder, reason
):
    client = disk_faults
    target = tmp_path / folder / "ioi.lmtrace"
    with pytest.raises(RpcError) as failed:
        client.request("lmscope/trace", {"prompt": TINY_PROMPT, "savePath": str(target)})
    error = failed.value
    assert error.code == TRACE_FILE_ERROR
    assert reason in error.message and str(target) in error.message
    assert "save it elsewhere" in error.message
    assert not target.exists()
    assert not target.parent.exists() or os.listdir(target.parent) == []  # no temp left behind
    handle = error.data["handle"]
    route = client.request("lmscope/route", {"handle": handle, "threshold": 0.01})
    assert route["edges"]
    elsewhere = tmp_path / "elsewhere" / "ioi.lmtrace"
    saved = client.request("lmscope/saveTrace", {"handle": handle, "path": str(elsewhere)})
    assert saved == {"path": str(elsewhere)}
    reopened = client.request("lmscope/openTrace", {"path": str(elsewhere)})["trace"]
    again = client.request("lmscope/route", {"handle": reopened["handle"], "threshold": 0.01})
    assert again["edges"] == route["edges"]
    # Saving to the broken folder again is the same clear error, and nothing is lost.
    with pytest.raises(RpcError) as still:
        client.request("lmscope/saveTrace", {"handle": handle, "path": str(target)})
    assert still.value.code == TRACE_FILE_ERROR and reason in still.value.message
    assert client.request("lmscope/route", {"handle": handle, "threshold": 0.01}) == route


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_really_read_only_folder_is_a_clear_error(disk_faults, tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(RpcError) as failed:
            disk_faults.request(
                "lmscope/trace", {"prompt": TINY_PROMPT, "savePath": str(folder / "x.lmtrace")}
            )
        assert failed.value.code == TRACE_FILE_ERROR and "ermission denied" in failed.value.message
        assert failed.value.data["handle"]
    finally:
        folder.chmod(0o700)
