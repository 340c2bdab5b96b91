"""Behaviour of the .lmtrace file: exact round trips, atomic writes, and one clear
`TraceFileError` for every kind of damaged, foreign or too-new file."""

from __future__ import annotations

import copy
import dataclasses
import errno
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import msgpack
import numpy as np
import pytest

from lmscope import graph
from lmscope.errors import TraceFileError
from lmscope.protocol import SCHEMAS, TRACE_SCHEMA
from lmscope.traces import data as D
from lmscope.traces import lmtrace
from lmscope.traces.wire import to_wire


def make_trace(
    seed: int = 0,
    *,
    L: int = 3,
    n: int = 5,
    H: int = 4,
    K: int = 6,
    k: int = 5,
    parallel: bool = False,
) -> D.TraceData:
    """A small random trace that satisfies every invariant of the format."""
    rng = np.random.default_rng(seed)
    V, d_ffn, k_pred = 50, 32, 3

    def f32(*shape: int) -> np.ndarray:
        return np.asarray(rng.standard_normal(shape), dtype=np.float32)

    def share(*shape: int, most: float = 1.0) -> np.ndarray:
        """Shares in [0, most): each step's parts below sum to at most 1, as the format asks."""
        return np.asarray(rng.random(shape) * most, dtype=np.float32)

    def ids(*shape: int) -> np.ndarray:
        return np.asarray(rng.integers(0, V, shape), dtype=np.int32)

    edges = [
        (ly, i, j) for ly in range(L) for i in range(n) for j in range(i + 1) if rng.random() < 0.5
    ]
    e_layer, e_target, e_source = (np.array(c, dtype=np.int32) for c in zip(*edges, strict=True))
    nodes = [(ly, i) for ly in range(L) for i in range(n) if rng.random() < 0.6]
    mid = graph.RESIDUAL if parallel else graph.POST_ATTENTION
    rows = [(D.PROJ_LENS, graph.EMBEDDING, 0, 0), (D.PROJ_LENS, graph.RESIDUAL, L - 1, n - 1)]
    rows += [(D.PROJ_FFN_UPDATE, graph.FFN, 1, 2), (D.PROJ_ATTENTION_UPDATE, mid, 0, 3)]
    prev_rank = rng.integers(-1, V, (len(rows), k)).astype(np.int32)
    prev_rank[[0, 2, 3]] = -1  # no previous lens for embeddings and update projections

    trace = D.TraceData(
        model=D.ModelFacts(
            spec="default",
            name="Tiny",
            source="default",
            content_hash="ab" * 32,
            family="gpt_neox" if parallel else "llama",
            model_type="llama",
            n_layers=L,
            n_heads=H,
            n_kv_heads=H // 2,
            d_model=16,
            d_head=4,
            d_ffn=d_ffn,
            vocab_size=V,
            context_length=64,
            parallel_blocks=parallel,
        ),
        settings=D.Settings(
            bos_prepended=True,
            min_threshold=0.01,
            top_neurons=K,
            projection_top_k=k,
            prediction_top_k=k_pred,
        ),
        environment=D.Environment(
            lmscope_version="0.1.0",
            torch_version="2.4.0",
            transformers_version="5.0.0",
            python_version="3.11.7",
            dtype="float32",
            device="cpu",
            created="2025-01-01T00:00:00Z",
        ),
        tokens=D.Tokens(
            prompt="When Mary and John", ids=ids(n), strings=[f"t{i}" for i in range(n)]
        ),
        predictions=D.Predictions(ids=ids(n, k_pred), probs=share(n, k_pred, most=1 / k_pred)),
        blocks=D.BlockContributions(
            share(L, n, most=0.3),
            share(L, n, most=0.3),
            None if parallel else share(L, n, most=0.3),
        ),
        edges=D.AttentionEdges(
            e_layer,
            e_target,
            e_source,
            share(len(edges), H, most=0.4 / (n * H)),
            share(len(edges), H),
        ),
        neurons=D.NeuronTable(
            layer=np.array([ly for ly, _ in nodes], np.int32),
            position=np.array([i for _, i in nodes], np.int32),
            index=rng.integers(0, d_ffn, (len(nodes), K)).astype(np.int32),
            contribution=share(len(nodes), K, most=0.5 / K),
            activation=f32(len(nodes), K),
            rest_contribution=share(len(nodes), most=0.5),
        ),
        projections=D.Projections(
            kind=[r[0] for r in rows],
            node_kind=[r[1] for r in rows],
            layer=np.array([r[2] for r in rows], np.int32),
            position=np.array([r[3] for r in rows], np.int32),
            top_ids=ids(len(rows), k),
            top_logits=f32(len(rows), k),
            bottom_ids=ids(len(rows), k),
            bottom_logits=f32(len(rows), k),
            top_prev_rank=prev_rank,
        ),
        extra={"lmscope.note": "test"},
    )
    used = np.concatenate(
        [
            trace.tokens.ids,
            trace.predictions.ids.ravel(),
            trace.projections.top_ids.ravel(),
            trace.projections.bottom_ids.ravel(),
        ]
    )
    trace.vocabulary = {int(i): f"<{i}> ü" for i in np.unique(used)}
    return trace


def assert_same(a: Any, b: Any, path: str = "trace") -> None:
    """Field-by-field equality, arrays included (dtype and shape too)."""
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert np.array_equal(a, b), path
    else:
        assert a == b and type(a) is type(b), path


def write_wire(path: Path, wire: dict[str, Any]) -> Path:
    path.write_bytes(msgpack.packb(wire, use_bin_type=True))
    return path


def read_error(path: Path) -> str:
    with pytest.raises(TraceFileError) as info:
        lmtrace.read_trace(path)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    return lmtrace.write_trace(make_trace(), tmp_path / "t.lmtrace")


# ---- round trips and the schema ------------------------------------------------------------------


@pytest.mark.parametrize("parallel", [False, True])
def test_write_then_read_gives_identical_fields_and_arrays(tmp_path, parallel):
    trace = make_trace(1, parallel=parallel)
    path = lmtrace.write_trace(trace, tmp_path / "sub" / "dir" / "x.lmtrace")
    assert path == tmp_path / "sub" / "dir" / "x.lmtrace"
    assert_same(trace, lmtrace.read_trace(path))
    assert [p.name for p in path.parent.iterdir()] == ["x.lmtrace"]


def test_json_export_validates_against_the_schema_and_imports_back():
    trace = make_trace(2)
    text = lmtrace.export_json(trace)
    schema = json.loads(TRACE_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(text), schema, cls=jsonschema.Draft202012Validator)
    assert_same(trace, lmtrace.import_json(text))
    assert text == lmtrace.export_json(trace)  # deterministic
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_binary_arrays_are_little_endian_row_major_bytes():
    trace = make_trace()
    wire = to_wire(trace, binary=True)
    heads = wire["edges"]["headContributions"]
    assert heads["dtype"] == "float32"
    assert heads["shape"] == list(trace.edges.head_contributions.shape)
    assert heads["data"] == trace.edges.head_contributions.astype("<f4").tobytes(order="C")


def test_engine_values_of_other_numeric_types_are_stored_as_int32_and_float32(tmp_path):
    trace = make_trace()
    trace.tokens.ids = trace.tokens.ids.astype(np.int64)
    trace.blocks.ffn = trace.blocks.ffn.astype(np.float64)
    trace.model.n_layers = np.int64(trace.model.n_layers)  # type: ignore[assignment]
    loaded = lmtrace.read_trace(lmtrace.write_trace(trace, tmp_path / "t.lmtrace"))
    assert loaded.tokens.ids.dtype == np.int32 and loaded.blocks.ffn.dtype == np.float32
    assert type(loaded.model.n_layers) is int


def _schema_keys(schema: dict, node: dict, path: str, out: set[str]) -> None:
    """Every property path the schema defines, not descending into arrays or `extra`."""
    if "$ref" in node and not node["$ref"].endswith(("Array", "ndarray")):
        _schema_keys(schema, schema["$defs"][node["$ref"].split("/")[-1]], path, out)
    for key, sub in node.get("properties", {}).items():
        out.add(f"{path}{key}")
        if key != "extra":
            _schema_keys(schema, sub, f"{path}{key}.", out)


def _wire_keys(obj: Any, path: str, out: set[str]) -> None:
    if isinstance(obj, dict) and "shape" not in obj:  # an ndarray has shape; sections do not
        for key, value in obj.items():
            out.add(f"{path}{key}")
            if key != "extra":
                _wire_keys(value, f"{path}{key}.", out)


def test_every_schema_property_is_produced_by_to_wire_and_nothing_else():
    schema = json.loads(TRACE_SCHEMA.read_text())
    expected: set[str] = set()
    _schema_keys(schema, schema, "", expected)
    # model.adapter is optional: a trace of a model with an adapter merged in produces it
    with_adapter = make_trace()
    with_adapter.model.adapter = D.AdapterFacts(
        "/loras/poems", "poems", "sha256:1", "LORA", False, 4, 8.0, ["q_proj"], "base", "sha256:0"
    )
    for binary in (True, False):
        produced: set[str] = set()
        _wire_keys(to_wire(make_trace(), binary=binary), "", produced)
        _wire_keys(to_wire(with_adapter, binary=binary), "", produced)
        assert produced == expected


def test_schema_enums_match_the_constants_of_the_graph_and_data_py():
    defs = json.loads(TRACE_SCHEMA.read_text())["$defs"]
    assert tuple(defs["nodeKind"]["enum"]) == graph.NODE_KINDS
    assert tuple(defs["projectionKind"]["enum"]) == D.PROJECTION_KINDS
    common = SCHEMAS["common.schema.json"]["$defs"]
    assert tuple(common["NodeKind"]["enum"]) == graph.NODE_KINDS
    assert tuple(common["EdgeKind"]["enum"]) == graph.EDGE_KINDS
    assert tuple(common["ThresholdMode"]["enum"]) == graph.THRESHOLD_MODES


# ---- atomic writes -------------------------------------------------------------------------------


def test_a_failure_mid_write_leaves_the_previous_file_and_no_temp_file(tmp_path, monkeypatch):
    path = lmtrace.write_trace(make_trace(0), tmp_path / "t.lmtrace")
    before = path.read_bytes()
    real_write = os.write

    def write_some_then_fail(fd, buf):
        real_write(fd, bytes(buf[:100]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", write_some_then_fail)
    with pytest.raises(TraceFileError, match="No space left on device"):
        lmtrace.write_trace(make_trace(1), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.lmtrace"]


def test_a_failed_first_write_leaves_no_file_at_all(tmp_path, monkeypatch):
    def fail(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(TraceFileError, match="Input/output error"):
        lmtrace.write_trace(make_trace(), tmp_path / "t.lmtrace")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_during_the_write_propagates_and_cleans_up(tmp_path, monkeypatch):
    def interrupt(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        lmtrace.write_trace(make_trace(), tmp_path / "t.lmtrace")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_a_read_only_folder_is_a_trace_file_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(TraceFileError, match=r"cannot write trace file .*Permission denied"):
            lmtrace.write_trace(make_trace(), folder / "t.lmtrace")
    finally:
        folder.chmod(0o755)


def test_a_refused_temp_file_is_a_trace_file_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(TraceFileError, match=r"cannot write trace file .*Permission denied"):
        lmtrace.write_trace(make_trace(), tmp_path / "t.lmtrace")


def test_a_folder_at_the_final_name_is_a_trace_file_error_and_no_temp_is_left(tmp_path):
    (tmp_path / "t.lmtrace").mkdir()
    with pytest.raises(TraceFileError, match="cannot write trace file"):
        lmtrace.write_trace(make_trace(), tmp_path / "t.lmtrace")
    assert [p.name for p in tmp_path.iterdir()] == ["t.lmtrace"]


def test_a_parent_that_is_a_file_is_a_trace_file_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(TraceFileError, match="cannot write trace file"):
        lmtrace.write_trace(make_trace(), tmp_path / "f" / "t.lmtrace")


def test_invalid_in_memory_data_is_refused_before_anything_is_written(tmp_path):
    trace = make_trace()
    trace.blocks.ffn[0, 0] = np.nan
    with pytest.raises(TraceFileError, match=r"blocks\.ffn contains non-finite values"):
        lmtrace.write_trace(trace, tmp_path / "t.lmtrace")
    assert list(tmp_path.iterdir()) == []


# ---- damaged and foreign files -------------------------------------------------------------------


def test_missing_empty_and_non_file_paths(tmp_path):
    assert "does not exist" in read_error(tmp_path / "nope.lmtrace")
    assert "is not a file" in read_error(tmp_path)
    (tmp_path / "empty.lmtrace").write_bytes(b"")
    assert "is empty" in read_error(tmp_path / "empty.lmtrace")


def test_files_over_the_size_limit_are_refused_unread(trace_file, monkeypatch):
    monkeypatch.setattr(lmtrace, "MAX_TRACE_BYTES", 100)
    assert "over the 100-byte limit" in read_error(trace_file)


def test_truncated_files_fail_at_every_cut_point(trace_file, tmp_path):
    raw = trace_file.read_bytes()
    cut = tmp_path / "cut.lmtrace"
    for end in sorted({*range(1, len(raw), max(1, len(raw) // 200)), 1, 2, 3, len(raw) - 1}):
        cut.write_bytes(raw[:end])
        message = read_error(cut)
        assert "truncated" in message or "not an lmscope trace" in message, (end, message)


def test_random_bit_flips_raise_trace_file_errors_or_load_a_valid_trace(trace_file, tmp_path):
    raw = trace_file.read_bytes()
    rng = np.random.default_rng(1234)
    flipped = tmp_path / "flip.lmtrace"
    outcomes = {"error": 0, "loaded": 0}
    for _ in range(400):
        data = bytearray(raw)
        for _ in range(rng.integers(1, 4)):
            data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        flipped.write_bytes(bytes(data))
        try:
            trace = lmtrace.read_trace(flipped)
        except TraceFileError as e:
            assert "\n" not in str(e)
            outcomes["error"] += 1
        else:
            lmtrace.validate_wire(to_wire(trace, binary=True))  # what loads is valid
            outcomes["loaded"] += 1
    assert outcomes["error"] > 0 and outcomes["loaded"] > 0


def test_garbage_bytes_are_not_a_trace(tmp_path):
    path = tmp_path / "g.lmtrace"
    path.write_bytes(b"\xc1" + os.urandom(64))  # 0xc1 is never used by msgpack
    assert "is not an lmscope trace (not a msgpack map)" in read_error(path)


def test_a_map_with_garbage_inside_is_not_valid_msgpack(tmp_path):
    path = tmp_path / "g.lmtrace"
    path.write_bytes(b"\x81\xc1" + os.urandom(64))  # a one-entry map whose key is invalid
    assert "not valid msgpack" in read_error(path)


def test_another_file_type_is_named_as_not_a_trace(tmp_path):
    path = tmp_path / "route.svg"
    path.write_text("<svg xmlns='http://www.w3.org/2000/svg'></svg>")
    assert "is not an lmscope trace" in read_error(path)


def test_a_json_export_renamed_to_lmtrace_is_named_as_json(tmp_path):
    path = tmp_path / "renamed.lmtrace"
    path.write_text(lmtrace.export_json(make_trace()))
    assert "holds JSON" in read_error(path)


@pytest.mark.parametrize("payload", [{"foo": 1}, [1, 2, 3], "lmscope-trace", {"magic": "other"}])
def test_msgpack_that_is_not_a_trace_is_named_so(tmp_path, payload):
    path = tmp_path / "other.lmtrace"
    path.write_bytes(msgpack.packb(payload))
    assert "is not an lmscope trace" in read_error(path)


def test_a_newer_format_asks_to_upgrade_even_with_unknown_fields(tmp_path):
    wire = to_wire(make_trace(), binary=True)
    wire["formatVersion"] = 2
    wire["somethingNew"] = {"x": 1}
    message = read_error(write_wire(tmp_path / "new.lmtrace", wire))
    assert "written by a newer lmscope (format 2)" in message
    assert "this lmscope reads format 1" in message and "upgrade lmscope" in message
    with pytest.raises(TraceFileError, match="upgrade lmscope"):
        lmtrace.import_json(json.dumps({**to_wire(make_trace(), binary=False), "formatVersion": 7}))


def _damaged(tmp_path: Path, change) -> str:
    wire = to_wire(make_trace(), binary=True)
    change(wire)
    return read_error(write_wire(tmp_path / "bad.lmtrace", wire))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda w: w["edges"].__setitem__("layer", "abc"), "edges.layer: 'abc' is not of type"),
        (lambda w: w["tokens"].__setitem__("strings", 5), "tokens.strings: 5 is not of type"),
        (lambda w: w["model"].__setitem__("family", "bert"), "model.family: 'bert' is not one of"),
        (  # enumerated lists are checked by their distinct values; errors keep the item's index
            lambda w: w["projections"]["kind"].__setitem__(-1, "logit"),
            "projections.kind[{last}]: 'logit' is not one of",
        ),
        (lambda w: w.__setitem__("formatVersion", "1"), "formatVersion is '1'"),
        (lambda w: w["model"].__setitem__("name", b"xx"), "model.name: <binary, 2 bytes> is not"),
        (lambda w: w["model"].__setitem__("extraKey", 1), "'extraKey' was unexpected"),
        (lambda w: w.pop("neurons"), "'neurons' is a required property"),
        (lambda w: w["blocks"]["ffn"].__setitem__("dtype", "int32"), "blocks.ffn.dtype"),
        (
            lambda w: w["blocks"]["ffn"].__setitem__("values", [1.0]),
            "blocks.ffn: an ndarray needs exactly one of",
        ),
    ],
)
def test_wrong_types_name_the_field(tmp_path, change, expected):
    message = _damaged(tmp_path, change)
    expected = expected.replace("{last}", str(len(make_trace().projections.kind) - 1))
    assert message.startswith(f"corrupt trace file {tmp_path / 'bad.lmtrace'}: ")
    assert expected in message


def test_a_huge_declared_shape_with_tiny_data_is_refused_without_allocating(tmp_path):
    def huge(wire):
        wire["edges"]["headContributions"]["shape"] = [2**31 - 1, 2**31 - 1]

    message = _damaged(tmp_path, huge)
    assert "edges.headContributions declares shape [2147483647, 2147483647]" in message
    assert "but holds" in message


def test_too_many_shape_dimensions_is_a_schema_error(tmp_path):
    message = _damaged(tmp_path, lambda w: w["blocks"]["ffn"].__setitem__("shape", [1] * 9))
    assert "blocks.ffn.shape" in message


def _reshaped(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.zeros(shape, arr.dtype)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda t: setattr(t.edges, "head_contributions", t.edges.head_contributions[:, :3]),
            "edges.headContributions has shape [{E}, 3], expected [{E}, 4] [E, H]",
        ),
        (
            lambda t: setattr(t.blocks, "ffn", np.zeros((3, 4), np.float32)),
            "blocks.ffn has shape [3, 4], expected [3, 5] [L, n]",
        ),
        (lambda t: t.edges.source.__setitem__(-1, 4) or t.edges.target.__setitem__(-1, 3), ""),
        (lambda t: t.edges.layer.__setitem__(0, 3), "edges.layer holds 3, outside [0, 3)"),
        (lambda t: setattr(t.blocks, "residual_ffn", None), "blocks.residualFfn must be null"),
        (lambda t: t.vocabulary.pop(int(t.tokens.ids[0])), "vocabulary lacks token id"),
        (lambda t: t.neurons.index.__setitem__((0, 0), 32), "neurons.index holds 32"),
        (lambda t: t.projections.kind.__setitem__(2, "lens"), "a lens projection of a ffn node"),
        (lambda t: t.projections.top_prev_rank.__setitem__((0, 0), 3), "topPrevRank must be -1"),
        (lambda t: setattr(t.tokens, "strings", ["a"]), "tokens.strings has 1 items, expected 5"),
        (lambda t: setattr(t.model, "n_kv_heads", 3), "not a multiple of nKvHeads"),
    ],
)
def test_inconsistent_traces_are_refused_with_the_field_and_the_problem(tmp_path, change, expected):
    trace = make_trace()
    E = trace.edges.layer.size
    change(trace)
    wire = to_wire(trace, binary=True)
    message = read_error(write_wire(tmp_path / "bad.lmtrace", wire))
    assert expected.format(E=E) in message
    assert message.startswith("corrupt trace file")
    with pytest.raises(TraceFileError, match="invalid trace data"):
        lmtrace.validate_wire(wire)


def test_edges_out_of_order_or_with_source_after_target_are_refused(tmp_path):
    trace = make_trace()
    trace.edges.source[[0, 1]] = trace.edges.source[[1, 0]]
    trace.edges.target[[0, 1]] = trace.edges.target[[1, 0]]
    trace.edges.layer[[0, 1]] = trace.edges.layer[[1, 0]]
    with pytest.raises(TraceFileError, match=r"edges row 1 is out of .* order"):
        lmtrace.validate_wire(to_wire(trace, binary=True))
    trace = make_trace()
    trace.edges.source[0] = trace.edges.target[0] + 1
    with pytest.raises(TraceFileError, match="edges row 0: source > target"):
        lmtrace.validate_wire(to_wire(trace, binary=True))


def test_json_form_checks_lengths_and_finiteness():
    wire = to_wire(make_trace(), binary=False)
    bad = copy.deepcopy(wire)
    bad["blocks"]["ffn"]["values"].pop()
    with pytest.raises(TraceFileError, match=r"blocks\.ffn declares shape \[3, 5\] \(15 values\)"):
        lmtrace.import_json(json.dumps(bad))
    bad = copy.deepcopy(wire)
    bad["blocks"]["ffn"]["values"][0] = 1e300  # overflows float32
    with pytest.raises(TraceFileError, match="non-finite"):
        lmtrace.import_json(json.dumps(bad))
    for field, value, problem in [
        ("ffn", "1.5", "other than numbers"),
        ("ffn", True, "other than numbers"),
        ("ffn", [1.0], "other than numbers"),
    ]:
        bad = copy.deepcopy(wire)
        bad["blocks"][field]["values"][0] = value
        with pytest.raises(TraceFileError, match=problem):
            lmtrace.import_json(json.dumps(bad))
    for value in (1.5, 2**31):
        bad = copy.deepcopy(wire)
        bad["tokens"]["ids"]["values"][0] = value
        with pytest.raises(TraceFileError, match=r"tokens\.ids\.values holds numbers that are not"):
            lmtrace.import_json(json.dumps(bad))
    with pytest.raises(TraceFileError, match="not a JSON trace"):
        lmtrace.import_json("{not json")


def test_deeply_nested_hostile_values_are_a_trace_file_error(tmp_path):
    nested: Any = "x"
    for _ in range(900):
        nested = [nested]
    message = _damaged(tmp_path, lambda w: w["model"].__setitem__("spec", nested))
    assert message.endswith("values are nested more than 100 deep")
