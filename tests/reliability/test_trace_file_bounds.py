"""Trace files that are schema-valid in shape but hold what no model produces: numbers out of
their range (contributions of 3e38 whose sums overflow to infinity), steps whose shares sum past
1, sizes no model has (300,000 layers in 3.6 MB), texts and lists past their length, values
nested 500 deep. Each bound is written once, in protocol/lmtrace.schema.json; the reader refuses
what lies past it with one line naming the field, reads what lies at it, and a file at every
bound at once loads and answers `show`, `export` and the daemon's routes. The TypeScript reader
says the same of the same files (tests/fixtures/export_route_golden.py, golden.test.ts).

No wall-clock assertions: bounded work is shown by refusals that come at once and by
subprocess deadlines (30 s) that only minutes of work would miss. The daemon, whatever it is
asked, never writes a number JSON cannot carry (NaN, Infinity)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lmscope.errors import TraceFileError
from lmscope.traces import lmtrace
from tests.daemon_client import RpcError
from tests.reliability import bounds
from tests.reliability.conftest import run_lmscope, spawn

SCHEMA = bounds.SCHEMA
DEADLINE = 30  # seconds: minutes of work would miss it, a loaded machine would not
TRACE_FILE_ERROR = -32003


def read(tmp_path: Path, payload: bytes) -> str | None:
    """The reader's message for `payload` as a file ('{file}' for its path), None if read."""
    path = tmp_path / "case.lmtrace"
    path.write_bytes(payload)
    try:
        lmtrace.read_trace(path)
    except TraceFileError as error:
        message = str(error)
        assert "\n" not in message and len(message) < 400, message
        return message.replace(str(path), "{file}")
    return None


def cli(*args: str | os.PathLike[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return run_lmscope(*args, cwd=cwd, timeout=DEADLINE)


def numbers(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in numbers(v)]
    return [value] if isinstance(value, float | int) and not isinstance(value, bool) else []


@pytest.fixture(params=[False, True], ids=["sequential", "parallel"])
def quiet(request) -> tuple[dict[str, Any], bool]:
    return bounds.wire_of(bounds.quiet_trace(parallel=request.param)), request.param


# ---- every value in its range ---------------------------------------------------------------


def test_every_float_field_past_its_range_is_refused_and_its_extremes_are_read(quiet, tmp_path):
    wire, parallel = quiet
    assert read(tmp_path, bounds.pack(wire)) is None
    # Every float array of the format has a range (none is an unbounded float32Array).
    floats = [p for p, a in SCHEMA["$defs"].items() if a.get("$ref") == "#/$defs/float32Array"]
    assert sorted(floats) == ["magnitudeArray", "shareArray"]
    fields = {name.split(" ", 1)[0] for name, _ in bounds.value_cases(wire)}
    assert fields == set(bounds.float_ranges()) - ({"blocks.residualFfn"} if parallel else set())
    checked = 0
    for name, payload in bounds.value_cases(wire):
        path, case = name.split(" ", 1)
        low, high = bounds.float_ranges()[path]
        message = read(tmp_path, payload)
        if case in ("at the top", "at the bottom") or (case == "tiny negative" and low < 0):
            assert message is None, f"{name}: {message}"
        else:
            assert message is not None and f"{path} holds " in message, f"{name}: {message}"
            assert f"outside [{low!r}, {high!r}]" in message, message
        checked += 1
    assert checked >= 7 * 10


def test_shares_of_one_step_summing_past_the_maximum_are_refused(quiet, tmp_path):
    wire, parallel = quiet
    most = bounds.SHARE_MAX
    kinds = {"predictions row", "neurons row", "attention step", "ffn step", "block step"}
    seen = set()
    for name, payload in bounds.sum_cases(wire, parallel):
        kind, verdict = name.rsplit(" ", 1)
        seen.add(kind)
        message = read(tmp_path, payload)
        if verdict == "at":
            assert message is None, f"{name}: {message}"
        else:
            assert message is not None and f"more than {most!r}" in message, f"{name}: {message}"
    assert seen == kinds - ({"ffn step"} if parallel else {"block step"})


def test_huge_contributions_never_reach_a_route_show_or_the_wire(tmp_path):
    """Issue 11: head contributions of 3e38 sum to infinity in float32; the daemon answered
    `"weight": Infinity` (not JSON: VS Code's client hangs) and `show --raw` printed `inf%`."""
    trace = bounds.quiet_trace(H=4, share=0.5)
    trace.edges.head_contributions[:] = np.float32(3e38)
    path = tmp_path / "huge.lmtrace"
    path.write_bytes(bounds.pack(bounds.wire_of(trace)))
    shown = cli("show", path, "--raw", cwd=tmp_path)
    assert shown.returncode == 1 and b"inf" not in shown.stdout, shown.stdout
    assert shown.stderr.decode().startswith("lmscope: corrupt trace file ")
    assert b"edges.headContributions holds 3.0000000054977558e+38" in shown.stderr
    client = spawn(tmp_path / "logs")
    client.initialize()
    with pytest.raises(RpcError) as refused:
        client.request("lmscope/openTrace", {"path": str(path)})
    assert refused.value.code == TRACE_FILE_ERROR
    assert "edges.headContributions" in refused.value.message
    assert client.close() == 0


# ---- every size bounded ---------------------------------------------------------------------


def test_every_declared_size_past_its_maximum_is_refused(tmp_path):
    wire = bounds.wire_of(bounds.quiet_trace())
    names = set()
    for name, payload in bounds.count_cases(wire, SCHEMA):
        path, value = name.split(" = ")
        section, key = path.split(".")
        names.add(path)
        most = SCHEMA["$defs"][section]["properties"][key]["maximum"]
        expected = f"{path}: {value} is greater than the maximum of {most}"
        assert read(tmp_path, payload) == f"corrupt trace file {{file}}: {expected}"
    assert names == {f"model.{k}" for k in bounds.MODEL_DIMENSIONS} | {
        f"settings.{k}" for k in bounds.SETTINGS_COUNTS
    }


def test_texts_and_string_lists_past_their_maximum_are_refused(tmp_path):
    wire = bounds.wire_of(bounds.quiet_trace())
    refused = 0
    for name, payload in bounds.text_cases(wire, SCHEMA):
        message = read(tmp_path, payload)
        if name.endswith(" at"):
            assert message is None, f"{name}: {message}"
        else:
            assert message is not None and "more than the" in message, f"{name}: {message}"
            assert " allowed" in message and len(message) < 200, message
            refused += 1
    assert refused >= len(bounds.TEXT_FIELDS) + 6


def test_300000_layers_in_36_mb_are_refused_at_once_by_show_export_and_the_daemon(tmp_path):
    """Issue 11: this file cost 3 minutes in the daemon's route, 2 in show and export."""
    wire = bounds.wire_of(bounds.quiet_trace(L=1, n=1, share=0.5))
    layers = 300_000
    wire["model"]["nLayers"] = layers
    for key in ("residualAttention", "ffn", "residualFfn"):
        wire["blocks"][key] = {
            "dtype": "float32",
            "shape": [layers, 1],
            "data": np.full(layers, 0.5, "<f4").tobytes(),
        }
    path = tmp_path / "deep.lmtrace"
    path.write_bytes(bounds.pack(wire))
    assert path.stat().st_size > 3_500_000
    expected = b"model.nLayers: 300000 is greater than the maximum of 1024"
    for args in (("show", path, "--raw"), ("export", path, "--format", "svg")):
        result = cli(*args, cwd=tmp_path)
        assert result.returncode == 1 and expected in result.stderr, result.stderr
    client = spawn(tmp_path / "logs")
    client.initialize()
    with pytest.raises(RpcError) as refused:
        client.request("lmscope/openTrace", {"path": str(path)}, timeout=DEADLINE)
    assert refused.value.code == TRACE_FILE_ERROR and "nLayers" in refused.value.message
    assert client.close() == 0


def test_files_at_the_bounds_load_and_answer_show_export_and_routes(tmp_path):
    """Every model dimension at its maximum (every node on the route: 3 x 1024 x 8), every
    settings count at its maximum, and the most tokens a trace may hold: each loads, and show,
    export and the daemon answer within the deadline, with finite numbers only."""
    model = SCHEMA["$defs"]["model"]["properties"]
    most = {key: model[key]["maximum"] for key in bounds.MODEL_DIMENSIONS}
    L = most["nLayers"]
    widest = bounds.wire_of(
        bounds.quiet_trace(
            L=L,
            n=8,
            H=most["nHeads"],
            d_ffn=most["dFfn"],
            V=most["vocabSize"],
            share=0.5,
            all_edges=False,
        )
    )
    widest["model"].update(
        nKvHeads=most["nKvHeads"],
        dModel=most["dModel"],
        dHead=most["dHead"],
        contextLength=most["contextLength"],
    )
    counts = SCHEMA["$defs"]["settings"]["properties"]
    settings = bounds.wire_of(  # K, k and kPred are min(count, model size): small here
        bounds.quiet_trace(
            share=0.5,
            top_neurons=counts["topNeurons"]["maximum"],
            projection_top_k=counts["projectionTopK"]["maximum"],
            prediction_top_k=counts["predictionTopK"]["maximum"],
        )
    )
    tokens = bounds.most_items("tokens")
    longest = bounds.wire_of(bounds.quiet_trace(L=1, n=tokens, H=1, all_edges=False))
    client = spawn(tmp_path / "logs")
    client.initialize()
    for name, wire in (("widest", widest), ("settings", settings), ("longest", longest)):
        path = tmp_path / f"{name}.lmtrace"
        path.write_bytes(bounds.pack(wire))
        lmtrace.read_trace(path)
        for args in (
            ("show", path, "--raw", "--threshold", "0.01"),
            ("show", path),
            ("export", path, "--format", "svg", "--out", tmp_path / f"{name}.svg"),
            ("export", path, "--format", "json", "--out", tmp_path / f"{name}.json"),
        ):
            if name == "longest" and args[0] == "export":
                continue  # 2^20 columns of SVG and 2^20-item JSON lists: linear, just big
            result = cli(*args, cwd=tmp_path)
            assert result.returncode == 0, (name, args, result.stderr[-500:])
            assert b"inf" not in result.stdout and b"nan" not in result.stdout
        handle = client.request("lmscope/openTrace", {"path": str(path)})["trace"]["handle"]
        for mode in ("raw", "renormalize"):
            route = client.request(
                "lmscope/route",
                {"handle": handle, "threshold": 0.01, "mode": mode},
                timeout=DEADLINE,
            )
            assert all(math.isfinite(x) for x in numbers(route)), (name, mode)
            if name == "widest" and mode == "raw":
                # The last token's column (3L + X) and, below the top layer, 7 others.
                assert len(route["nodes"]) == (3 * L + 1) + 7 * (3 * (L - 1) + 1)
    assert client.close() == 0


# ---- nesting --------------------------------------------------------------------------------


def test_nesting_past_the_limit_is_refused_anywhere_and_read_up_to_it(tmp_path):
    """Issue 11: `extra` nested 500 deep was read by Python and refused by TypeScript. One
    limit (the schema's x-maxNesting) and one message now, below msgpack-python's own stack
    (1024) and past it."""
    wire = bounds.wire_of(bounds.quiet_trace())
    most = bounds.MAX_NESTING
    assert most == 100
    too_deep = f"corrupt trace file {{file}}: values are nested more than {most} deep"
    for name, payload in bounds.nesting_cases(wire):
        depth = int(name.split(" nested ")[1].split()[0])
        assert read(tmp_path, payload) == (None if depth <= most else too_deep), name
    with pytest.raises(TraceFileError, match=f"values are nested more than {most} deep"):
        lmtrace.from_wire(bounds.edited(wire, lambda w: w["extra"].__setitem__("x", _chain(most))))


def _chain(levels: int) -> Any:
    value: Any = None
    for _ in range(levels):
        value = [value]
    return value


# ---- SVG with a long token ------------------------------------------------------------------


def test_svg_of_a_route_through_a_megabyte_token_is_linear(tmp_path):
    """A 1 MB token (refused in files now: tokens.strings items are at most 4096 characters)
    made SVG export quadratic: its whole text was processed for each node of its column. A
    route of 3000 nodes through it must render well within the deadline."""
    script = tmp_path / "svg.py"
    script.write_text(
        "from lmscope.graph import ATTENTION_EDGE, RESIDUAL, Edge, Node, Route\n"
        "from lmscope.render.svg import route_svg\n"
        "layers = 1000\n"
        "route = Route(token=1, threshold=0.01, mode='raw', n_layers=layers, n_tokens=2,\n"
        "              parallel_blocks=True)\n"
        "for layer in range(1, layers):\n"
        "    for pos in (0, 1):\n"
        "        route.edges.append(Edge(ATTENTION_EDGE, Node(RESIDUAL, layer - 1, 0),\n"
        "                                Node(RESIDUAL, layer, pos), 0.5, (0.5,)))\n"
        "svg = route_svg(route, ['\\x1b[2J' * 250_000, 'b'])\n"
        "assert '\\x1b' not in svg and len(svg) < 5_000_000, len(svg)\n"
        "print(len(route.nodes))\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, timeout=DEADLINE, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) >= 1999


# ---- the wire: finite numbers only ----------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        pass


def test_the_daemon_never_writes_nan_or_infinity(caplog):
    """The last line of defence: results are finite by construction, but one that is not is
    answered with an internal error (valid JSON, the request's id), never with `Infinity`."""
    from lmscope.server.app import LmscopeServer

    protocol = LmscopeServer().protocol
    writer = _Writer()
    protocol.set_writer(writer)
    protocol._send_response(7, result={"edges": [{"weight": float("inf")}]})
    protocol._send_response(8, result={"share": float("nan")})
    protocol.notify("lmscope/traceChanged", {"state": "finished", "x": float("-inf")})
    protocol._send_response(9, result={"weight": 0.5})
    payloads = [w.split(b"\r\n\r\n", 1)[1] for w in writer.written]
    bodies = [json.loads(body, parse_constant=_refuse) for body in payloads]
    assert [b["id"] for b in bodies] == [7, 8, 9]
    assert bodies[0]["error"]["code"] == -32603 and "JSON" in bodies[0]["error"]["message"]
    assert bodies[1]["error"]["code"] == -32603
    assert bodies[2]["result"] == {"weight": 0.5}
    assert sum("refused to send a non-finite number" in r.getMessage() for r in caplog.records) == 3


def _refuse(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")
