"""lmscope's own processes keep freed blocks of a few MB for reuse (lmscope.allocator); a
process that only imports lmscope keeps its allocator as it was."""

from __future__ import annotations

import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tunes glibc's malloc")

CHILD = """
import torch
import lmscope.api  # imported as a library: the allocator is left alone
from lmscope.allocator import keep_freed_memory
from lmscope.benchmark.memory import resident_bytes

if {tuned}:
    assert keep_freed_memory()
block = torch.ones(4 * 2**20)  # 16 MB, touched
held = resident_bytes()
del block
print(held - resident_bytes())  # what freeing it gave back to the kernel
"""


def _given_back(tuned: bool) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(tuned=tuned)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return int(out.stdout.strip().splitlines()[-1])


@glibc
def test_a_freed_16_mb_tensor_stays_for_the_next_one_only_when_tuned():
    assert _given_back(tuned=False) >= 8 * 2**20  # glibc's default: mapped, then unmapped
    assert _given_back(tuned=True) < 2**20  # kept in the heap for the next tensor


def test_the_command_line_tunes_its_own_process(monkeypatch, tmp_path):
    import lmscope.cli as cli

    calls: list[int] = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["show", str(tmp_path / "missing.lmtrace")]) == 1  # a quick refusal
    assert calls == [1]
