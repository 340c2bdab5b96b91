"""A built wheel works outside a checkout: the protocol ships inside it, and a daemon started
from a fresh virtual environment serves a trace of a tiny folder model."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import TINY_PROMPT
from tests.daemon_client import DaemonClient

pytestmark = pytest.mark.slow  # spawns daemons (the process boundary)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (built,) = out.glob("lmscope-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory, wheel) -> Path:
    """A new venv holding only the wheel; the heavy dependencies (torch, transformers, ...)
    come from the test venv's site-packages as a plain path entry, so the test venv's editable
    lmscope (a .pth file there) is never seen."""
    home = tmp_path_factory.mktemp("venv") / "venv"
    venv.EnvBuilder(with_pip=False).create(home)
    python = home / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
         "--no-index", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    (site / "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return home


def clean_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": ""}


def test_the_wheel_carries_the_protocol(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {"methods.json", "lmtrace.schema.json", "vocabulary.json", "README.md"}
    shipped |= {f"schemas/{p.name}" for p in (REPO / "protocol" / "schemas").glob("*.json")}
    assert {f"lmscope/protocol/spec/{name}" for name in shipped} <= names


def test_an_installed_wheel_reads_its_own_protocol_files(fresh_venv, tmp_path):
    result = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c",
         "import lmscope, lmscope.protocol as p; print(lmscope.__file__); print(p.PROTOCOL_DIR)"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    module, protocol_dir = result.stdout.split()
    assert Path(module).is_relative_to(fresh_venv)
    assert Path(protocol_dir).is_relative_to(fresh_venv) and protocol_dir.endswith("spec")


def test_an_installed_daemon_serves_a_trace_of_a_folder_model(fresh_venv, model_folder, tmp_path):
    client = DaemonClient(
        tmp_path / "daemon.log",
        env=clean_env(),
        command=[str(fresh_venv / "bin" / "lmscope"), "serve", "--stdio"],
    )
    try:
        client.initialize(root=tmp_path)
        client.request("lmscope/loadModel", {"spec": str(model_folder)})
        path = tmp_path / "t.lmtrace"
        result = client.request("lmscope/trace", {"prompt": TINY_PROMPT, "savePath": str(path)})
        assert result["saved"] and path.is_file()
        route = client.request(
            "lmscope/route", {"handle": result["trace"]["handle"], "threshold": 0.01}
        )
        assert route["nodes"]
    finally:
        assert client.close() == 0
