"""Trace-file fuzzing: a real trace (tiny model) cut at every byte, bit-flipped at random,
every field given a value of the wrong type, msgpack headers declaring gigabytes that are not
there, and a newer format version. Every read ends fast in one `TraceFileError` line (or, for a
flip that happens to keep the file valid, a valid trace), and no read allocates much more than
the file. The daemon answers a damaged file with TraceFileError and keeps serving.

The number of damaged files read is printed (`pytest -s`) and asserted from below."""

from __future__ import annotations

import copy
import random
import struct
import time
import tracemalloc
from pathlib import Path
from typing import Any

import msgpack
import pytest

from lmscope.errors import TraceFileError
from lmscope.traces import lmtrace
from lmscope.traces.trace import Trace
from lmscope.tracing.engine import run_trace
from tests.conftest import TINY_PROMPT, build_tiny
from tests.daemon_client import RpcError
from tests.reliability.conftest import spawn

COUNTS: dict[str, int] = {}
ODD = [None, True, -1, 2**40, 1.5, "x", b"\x00\x01", [], {}, [[1]], {"dtype": "int32"}]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("good") / "t.lmtrace"
    Trace(run_trace(build_tiny("gpt2"), TINY_PROMPT)).save(path)
    yield path.read_bytes()
    print(f"\ntrace-file fuzzing: {sum(COUNTS.values())} damaged files ({COUNTS})")


def read_bounded(path: Path, what: str) -> None:
    """One read: a TraceFileError of one line, or a valid trace; fast and memory-bounded."""
    size = path.stat().st_size
    COUNTS[what] = COUNTS.get(what, 0) + 1
    if what in ("truncation", "bit flip", "wrong type") and COUNTS[what] % 5:
        started = time.monotonic()  # memory measured on every fifth read (tracemalloc is slow)
        try:
            lmtrace.read_trace(path)
        except TraceFileError as error:
            assert "\n" not in str(error)
        assert time.monotonic() - started < 5.0, f"{what}: slow read"
        return
    tracemalloc.start()
    started = time.monotonic()
    try:
        lmtrace.read_trace(path)
    except TraceFileError as error:
        message = str(error)
        assert message and "\n" not in message and len(message) < 400, message
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.monotonic() - started < 5.0, f"{what}: slow read"
    assert peak < 8 * size + 32 * 2**20, f"{what}: {peak} bytes for a {size}-byte file"


def test_every_truncation_fails_cleanly(good, tmp_path):
    path = tmp_path / "cut.lmtrace"
    step = max(1, len(good) // 300)
    for cut in [*range(0, len(good), step), len(good) - 1]:
        path.write_bytes(good[:cut])
        with pytest.raises(TraceFileError):
            lmtrace.read_trace(path)
        read_bounded(path, "truncation")


def test_random_bit_flips_fail_cleanly_or_read_a_valid_trace(good, tmp_path):
    rng = random.Random(6)
    path = tmp_path / "flip.lmtrace"
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.choice((1, 1, 2, 8))):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        read_bounded(path, "bit flip")


def leaf_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    if isinstance(node, dict):
        out = [prefix] if prefix else []
        for key, value in node.items():
            out += leaf_paths(value, (*prefix, key))
        return out
    return [prefix]


def test_every_field_with_a_wrong_type_fails_cleanly(good, tmp_path):
    wire = msgpack.unpackb(good, raw=False)
    path = tmp_path / "typed.lmtrace"
    rng = random.Random(7)
    for field_path in leaf_paths(wire):
        for value in rng.sample(ODD, 3):
            broken = copy.deepcopy(wire)
            node = broken
            for key in field_path[:-1]:
                node = node[key]
            original = node.get(field_path[-1])
            if type(original) is type(value):
                continue  # another value of the right type may well be valid
            node[field_path[-1]] = value
            path.write_bytes(msgpack.packb(broken, use_bin_type=True))
            if field_path[0] != "extra":
                with pytest.raises(TraceFileError):
                    lmtrace.read_trace(path)
            read_bounded(path, "wrong type")


@pytest.mark.parametrize(
    "header",
    [
        b"\xdf\xff\xff\xff\xff",  # map32 declaring 4 G entries
        b"\x81\xa5magic\xdd\xff\xff\xff\xff",  # array32 of 4 G items
        b"\x81\xa5magic\xc6\xff\xff\xff\xff",  # bin32 of 4 GiB
        b"\x81\xa5magic\xdb\xff\xff\xff\xf0",  # str32 of 4 GiB
        b"\x81\xa5magic\xc9\xff\xff\xff\xff\x01",  # ext32 of 4 GiB
    ],
    ids=["map32", "array32", "bin32", "str32", "ext32"],
)
def test_huge_declared_lengths_fail_fast_without_allocating(tmp_path, header):
    path = tmp_path / "huge.lmtrace"
    path.write_bytes(header + b"\x00" * 64)
    with pytest.raises(TraceFileError, match=r"corrupt|not an lmscope trace"):
        lmtrace.read_trace(path)
    read_bounded(path, "huge length")


def test_a_huge_array_length_inside_a_valid_looking_trace_fails_fast(good, tmp_path):
    wire = msgpack.unpackb(good, raw=False)
    wire["edges"]["layer"]["data"] = b"PLACEHOLDER!"
    packed = msgpack.packb(wire, use_bin_type=True)
    at = packed.index(b"\xc4\x0cPLACEHOLDER!")  # bin8 of 12 bytes -> bin32 claiming 2 GiB
    packed = packed[:at] + b"\xc6" + struct.pack(">I", 2**31) + packed[at + 2 :]
    path = tmp_path / "inner.lmtrace"
    path.write_bytes(packed)
    with pytest.raises(TraceFileError, match=r"truncated|corrupt"):
        lmtrace.read_trace(path)
    read_bounded(path, "huge length")


def test_a_newer_format_version_asks_to_upgrade(good, tmp_path):
    wire = msgpack.unpackb(good, raw=False)
    wire["formatVersion"] = 99
    wire["somethingNew"] = {"shape": [1]}
    path = tmp_path / "new.lmtrace"
    path.write_bytes(msgpack.packb(wire, use_bin_type=True))
    with pytest.raises(TraceFileError, match=r"newer lmscope .format 99.* upgrade lmscope"):
        lmtrace.read_trace(path)
    read_bounded(path, "newer version")


def test_the_daemon_answers_damaged_files_with_a_trace_file_error_and_serves(good, tmp_path):
    client = spawn(tmp_path / "logs")
    client.initialize()
    damaged = {
        "truncated": good[: len(good) // 2],
        "flipped": good[:40] + bytes([good[40] ^ 0xFF]) + good[41:],
        "empty": b"",
        "huge": b"\xdf\xff\xff\xff\xff",
    }
    for name, data in damaged.items():
        path = tmp_path / f"{name}.lmtrace"
        path.write_bytes(data)
        with pytest.raises(RpcError) as refused:
            client.request("lmscope/openTrace", {"path": str(path)})
        assert refused.value.code == -32003 and str(path) in refused.value.message
    for odd in ("/tmp/nul\x00.lmtrace", "/tmp/\ud800.lmtrace", "/dev/zero", "/"):
        with pytest.raises(RpcError) as refused:
            client.request("lmscope/openTrace", {"path": odd})
        assert refused.value.code == -32003
    good_path = tmp_path / "good.lmtrace"
    good_path.write_bytes(good)
    assert client.request("lmscope/openTrace", {"path": str(good_path)})["trace"]["tokens"]
    assert client.close() == 0
