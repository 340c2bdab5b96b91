"""Shared by the reliability suite: daemons spawned with or without injected faults
(`faults.py`), with a model loaded, and the daemon's resident memory. The tiny model folders
are tests/conftest.py's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lmscope
from tests.daemon_client import DaemonClient

DAEMON = Path(lmscope.__file__).resolve().parents[1]  # this checkout's daemon/ folder

FAULTS = Path(__file__).with_name("faults.py")


# One intra-op thread per daemon: these models are tiny, and on a shared 2-core machine torch's
# thread pool, spinning against another busy process, made a 20 ms trace take 0.5 s.
QUIET_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def spawn(log_dir: Path, faults: str | None = None, *args: str) -> DaemonClient:
    """A daemon over stdio; with `faults`, started through faults.py with those faults."""
    log_dir.mkdir(parents=True, exist_ok=True)
    if faults is None:
        return DaemonClient(log_dir / "daemon.log", *args, env=QUIET_THREADS)
    return DaemonClient(
        log_dir / "daemon.log",
        env={**QUIET_THREADS, "LMSCOPE_TEST_FAULTS": faults},
        command=[sys.executable, str(FAULTS), *args],
    )


def spawn_loaded(log_dir: Path, model_folder: Path, faults: str | None = None) -> DaemonClient:
    """`spawn`, initialized, with the model in `model_folder` loaded."""
    client = spawn(log_dir, faults)
    client.initialize()
    client.request("lmscope/loadModel", {"spec": str(model_folder)})
    return client


def run_lmscope(
    *args: str | os.PathLike[str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[bytes]:
    """`python -m lmscope ARGS` as its own process (this checkout's lmscope, wherever the
    subprocess runs), stdout and stderr on pipes as bytes, under a deadline."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(DAEMON), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "lmscope", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")
