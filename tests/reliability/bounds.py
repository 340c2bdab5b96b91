"""Trace files at and past the bounds of protocol/lmtrace.schema.json, for the reliability tests
(test_trace_file_bounds.py) and for the golden file of the TypeScript reader
(tests/fixtures/export_route_golden.py), which checks that both readers say the same of each.

`quiet_trace` is a valid trace whose shares are all 0, so one value can be pushed to a bound
without breaking the sum of its step; `cases(wire)` damages a wire dict one bound at a time.
Every case is a msgpack payload (bytes), so nesting deeper than msgpack-python packs is possible.

The bounds are read here from the checkout's protocol/lmtrace.schema.json (`SCHEMA`), not
through lmscope, so the tests hold the reader to the schema (and fail on a reader that ignores
it).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from lmscope.traces import data as D
from lmscope.traces.wire import to_wire

SCHEMA: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "protocol" / "lmtrace.schema.json").read_text("utf-8")
)
DEFS = SCHEMA["$defs"]
SHARE_MAX: float = DEFS["shareArray"]["properties"]["values"]["items"]["maximum"]
MAX_NESTING: int = SCHEMA["x-maxNesting"]
SECTIONS = ("predictions", "blocks", "edges", "neurons", "projections")


def float_ranges() -> dict[str, tuple[float, float]]:
    """Every float array field and its [low, high], as the schema's $refs say."""
    out = {}
    for section in SECTIONS:
        for key, node in DEFS[section]["properties"].items():
            for option in node.get("oneOf", [node]):
                name = option.get("$ref", "").split("/")[-1]
                if name in ("shareArray", "magnitudeArray"):
                    items = DEFS[name]["properties"]["values"]["items"]
                    out[f"{section}.{key}"] = (float(items["minimum"]), float(items["maximum"]))
    return out


def most_items(section: str) -> int:
    """maxItems of tokens.strings or vocabulary.strings."""
    return int(DEFS[section]["properties"]["strings"]["maxItems"])


# model.* and settings.* integers with a maximum in the schema (read from it by the test).
MODEL_DIMENSIONS = (
    "nLayers",
    "nHeads",
    "nKvHeads",
    "dModel",
    "dHead",
    "dFfn",
    "vocabSize",
    "contextLength",
)
SETTINGS_COUNTS = ("topNeurons", "projectionTopK", "predictionTopK")
TEXT_FIELDS = (
    ("model", "spec"),
    ("model", "name"),
    ("model", "contentHash"),
    ("model", "modelType"),
    *(
        ("environment", key)
        for key in (
            "lmscopeVersion",
            "torchVersion",
            "transformersVersion",
            "pythonVersion",
            "device",
            "created",
        )
    ),
)


def quiet_trace(
    *,
    L: int = 2,
    n: int = 3,
    H: int = 2,
    parallel: bool = False,
    d_ffn: int = 4,
    V: int = 10,
    top_neurons: int = 2,
    projection_top_k: int = 2,
    prediction_top_k: int = 2,
    share: float = 0.0,
    all_edges: bool = True,
) -> D.TraceData:
    """A valid trace with every kind of row. Shares are `share` (0: any one value may go up to
    the share maximum); with `share` > 0 the blocks carry it and the heads split 0.4 of each
    step, so every node is on a route. Edges: every (l, i, j <= i), or (all_edges False) only
    those into the last token at the top layer, one per source."""
    rows = (
        [(ly, i, j) for ly in range(L) for i in range(n) for j in range(i + 1)]
        if all_edges
        else [(L - 1, n - 1, j) for j in range(n)]
    )
    edges = np.array(rows, dtype=np.int32).reshape(-1, 3)
    per_head = 0.4 / (n * H) if share else 0.0
    K, k, k_pred = min(top_neurons, d_ffn), min(projection_top_k, V), min(prediction_top_k, V)
    mid = "residual" if parallel else "post_attention"
    kinds = [("lens", "residual", L - 1, n - 1), ("ffn_update", "ffn", 0, 0)]
    kinds += [("attention_update", mid, 0, n - 1), ("lens", "embedding", 0, 0)]
    P = len(kinds)
    ids = np.arange(n, dtype=np.int32) % V
    block = np.full((L, n), share / 2 if parallel else share, np.float32)
    return D.TraceData(
        model=D.ModelFacts(
            spec="quiet",
            name="quiet",
            source="folder",
            content_hash="sha256:0",
            family="gpt_neox" if parallel else "llama",
            model_type="gpt_neox" if parallel else "llama",
            n_layers=L,
            n_heads=H,
            n_kv_heads=1,
            d_model=8,
            d_head=4,
            d_ffn=d_ffn,
            vocab_size=V,
            context_length=max(64, n),
            parallel_blocks=parallel,
        ),
        settings=D.Settings(True, 0.01, top_neurons, projection_top_k, prediction_top_k),
        environment=D.Environment("0.1.0", "2", "4", "3.11", "float32", "cpu", "2025-01-01T00:00Z"),
        tokens=D.Tokens("quiet prompt", ids, [f"t{i}" for i in range(n)]),
        predictions=D.Predictions(
            np.zeros((n, k_pred), np.int32), np.zeros((n, k_pred), np.float32)
        ),
        blocks=D.BlockContributions(block, block.copy(), None if parallel else block.copy()),
        edges=D.AttentionEdges(
            edges[:, 0].copy(),
            edges[:, 1].copy(),
            edges[:, 2].copy(),
            np.full((len(edges), H), per_head, np.float32),
            np.zeros((len(edges), H), np.float32),
        ),
        neurons=D.NeuronTable(
            np.zeros(1, np.int32),
            np.zeros(1, np.int32),
            np.zeros((1, K), np.int32),
            np.zeros((1, K), np.float32),
            np.zeros((1, K), np.float32),
            np.zeros(1, np.float32),
        ),
        projections=D.Projections(
            [kind for kind, *_ in kinds],
            [node for _, node, *_ in kinds],
            np.array([layer for *_, layer, _ in kinds], np.int32),
            np.array([position for *_, position in kinds], np.int32),
            np.zeros((P, k), np.int32),
            np.zeros((P, k), np.float32),
            np.zeros((P, k), np.int32),
            np.zeros((P, k), np.float32),
            np.full((P, k), -1, np.int32),
        ),
        vocabulary={int(i): f"v{i}" for i in {0, *ids.tolist()}},
        extra={"lmscope.note": "quiet"},
    )


def wire_of(trace: D.TraceData) -> dict[str, Any]:
    return to_wire(trace, binary=True)


def pack(wire: dict[str, Any]) -> bytes:
    return msgpack.packb(wire, use_bin_type=True)


def set_value(wire: dict[str, Any], path: str, value: float, at: int = 0) -> dict[str, Any]:
    """A copy of `wire` whose float array `path` holds `value` at flat index `at`."""
    out = copy.deepcopy(wire)
    section, key = path.split(".")
    arr = out[section][key]
    data = np.frombuffer(arr["data"], "<f4").copy()
    data[at] = value
    arr["data"] = data.tobytes()
    return out


def set_values(wire: dict[str, Any], path: str, values: dict[int, float]) -> dict[str, Any]:
    out = wire
    for at, value in values.items():
        out = set_value(out, path, value, at)
    return out


def edited(wire: dict[str, Any], edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    out = copy.deepcopy(wire)
    edit(out)
    return out


def past(bound: float, direction: float) -> float:
    """The float32 nearest `bound` on its far side (direction +1: above it, -1: below)."""
    value = np.float32(bound)
    while (float(value) - bound) * direction <= 0:
        value = np.nextafter(value, np.float32(direction * np.inf))
    return float(value)


def within(bound: float, direction: float) -> float:
    """The float32 nearest `bound` on its near side: the most extreme value still allowed."""
    value = np.float32(bound)
    while (float(value) - bound) * direction > 0:
        value = np.nextafter(value, np.float32(-direction * np.inf))
    return float(value)


def nested(wire: dict[str, Any], depth: int, where: tuple[str, str] = ("extra", "x")) -> bytes:
    """`wire` packed with a chain of one-item arrays at `where` (a nil at the bottom) such that
    maps and arrays nest `depth` deep in the whole document (the top-level map is 1)."""
    section, key = where
    parent_depth = 2  # the top-level map, then the section (`extra` or another map)
    out = edited(wire, lambda w: w[section].__setitem__(key, "PLACEHOLDER-NEST"))
    packed = pack(out)
    marker = b"\xb0PLACEHOLDER-NEST"  # fixstr of 16 bytes
    assert packed.count(marker) == 1
    chain = b"\x91" * (depth - parent_depth) + b"\xc0"
    return packed.replace(marker, chain)


def value_cases(wire: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
    """Every float array with one value past its range (huge, tiny negative, just past either
    end), and at the very edges of it."""
    for path, (low, high) in float_ranges().items():
        section, key = path.split(".")
        if wire[section][key] is None or not wire[section][key]["shape"][0]:
            continue
        bad = {
            "huge": 3e38,
            "minus huge": -3e38,
            "past the top": past(high, 1),
            "past the bottom": past(low, -1),
            "tiny negative": -1e-6,
        }
        for name, value in bad.items():
            yield f"{path} {name}", pack(set_value(wire, path, value))
        yield f"{path} at the top", pack(set_value(wire, path, within(high, 1)))
        yield f"{path} at the bottom", pack(set_value(wire, path, within(low, -1)))


def sum_cases(wire: dict[str, Any], parallel: bool) -> Iterator[tuple[str, bytes]]:
    """Each kind of step whose shares sum just past the share maximum, and just at it; on a
    quiet trace (all shares 0) only the values set here count."""
    most = SHARE_MAX
    over, at = past(most, 1) - 0.5, 0.5  # two parts: 0.5 and just over (or at) most - 0.5
    at_most = within(most - 0.5, 1)
    for name, last in (("over", over), ("at", at_most)):
        probs = set_values(wire, "predictions.probs", {0: at, 1: last})
        yield f"predictions row {name}", pack(probs)
        yield (
            f"neurons row {name}",
            pack(
                set_value(
                    set_value(wire, "neurons.contribution", at), "neurons.restContribution", last
                )
            ),
        )
        step = set_value(wire, "blocks.residualAttention", at)  # layer 0, token 0
        yield f"attention step {name}", pack(set_value(step, "edges.headContributions", last))
        if not parallel:
            ffn = set_value(wire, "blocks.ffn", at)
            yield f"ffn step {name}", pack(set_value(ffn, "blocks.residualFfn", last))
        else:
            both = set_value(step, "blocks.ffn", last / 2)
            yield f"block step {name}", pack(set_value(both, "edges.headContributions", last / 2))


def count_cases(
    wire: dict[str, Any], schema: dict[str, Any] = SCHEMA
) -> Iterator[tuple[str, bytes]]:
    """Each model dimension and settings count past its maximum (and the issue's 300,000
    layers)."""
    for section, keys in (("model", MODEL_DIMENSIONS), ("settings", SETTINGS_COUNTS)):
        properties = schema["$defs"][section]["properties"]
        for key in keys:
            most = properties[key]["maximum"]
            for value in (most + 1, 300_000, 2**31 - 1):
                if value > most:
                    out = edited(wire, lambda w, k=key, v=value, s=section: w[s].__setitem__(k, v))
                    yield f"{section}.{key} = {value}", pack(out)


def text_cases(
    wire: dict[str, Any], schema: dict[str, Any] = SCHEMA
) -> Iterator[tuple[str, bytes]]:
    """Each text field, the prompt and a token string one character past its maxLength and at
    it (astral characters count once, as Python counts them); the string lists one item past
    their maxItems."""
    defs = schema["$defs"]
    longest = defs["text"]["maxLength"]
    prompt = defs["tokens"]["properties"]["prompt"]["maxLength"]
    token = defs["tokenText"]["maxLength"]

    def put(section: str, key: str, text: str, at: int | None = None) -> bytes:
        def edit(w: dict[str, Any]) -> None:
            if at is None:
                w[section][key] = text
            else:
                w[section][key][at] = text

        return pack(edited(wire, edit))

    for section, key in TEXT_FIELDS:
        yield f"{section}.{key} past", put(section, key, "x" * (longest + 1))
    yield "model.name at", put("model", "name", "x" * longest)
    yield "model.name astral past", put("model", "name", "😀" * (longest + 1))
    yield "model.name astral at", put("model", "name", "😀" * longest)
    yield "tokens.prompt past", put("tokens", "prompt", "p" * (prompt + 1))
    yield "tokens.prompt at", put("tokens", "prompt", "p" * prompt)
    for section in ("tokens", "vocabulary"):
        last = len(wire[section]["strings"]) - 1
        yield f"{section}.strings past", put(section, "strings", "s" * (token + 1), last)
        yield f"{section}.strings at", put(section, "strings", "s" * token, last)
        yield f"{section}.strings astral past", put(section, "strings", "😀" * (token + 1), 0)
        most = most_items(section)
        yield f"{section}.strings items past", put(section, "strings", [""] * (most + 1))  # type: ignore[arg-type]


def nesting_cases(wire: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
    """`extra` nested below, at and above the limit, past msgpack-python's own stack (1024),
    and another field nested too deep."""
    most = MAX_NESTING
    for depth in (most - 1, most, most + 1, 500, 1024, 1025, 5000):
        yield f"extra nested {depth} deep", nested(wire, depth)
    yield "model.spec nested 150 deep", nested(wire, 150, ("model", "spec"))


def cases(
    wire: dict[str, Any], schema: dict[str, Any], parallel: bool
) -> Iterator[tuple[str, bytes]]:
    """Every case of this module on `wire`."""
    yield from value_cases(wire)
    yield from sum_cases(wire, parallel)
    yield from count_cases(wire, schema)
    yield from text_cases(wire, schema)
    yield from nesting_cases(wire)
