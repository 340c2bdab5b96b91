"""Shared by the reliability suite: a tiny model folder, daemons spawned with or without
injected faults (`faults.py`), and the daemon's resident memory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import transformers

from tests.conftest import build_tiny
from tests.daemon_client import DaemonClient

FAULTS = Path(__file__).with_name("faults.py")


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    loaded = build_tiny("llama")
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def slow_model_folder(tmp_path_factory) -> Path:
    """A wider random model with a long context: a long prompt traces for seconds."""
    folder = tmp_path_factory.mktemp("slow-llama")
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=256, intermediate_size=512, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=4096,
    )  # fmt: skip
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model.save_pretrained(folder)
    build_tiny("llama").tokenizer.save_pretrained(folder)
    return folder


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


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")
