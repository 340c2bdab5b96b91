"""The run view's daemon side: `lmscope/run` and `lmscope/setActiveRun` answered from a run
folder's tables (no model), and the hover cards' run line (cards/runs.py).

The run folder is built here with pyarrow, as the run folder contract lays it out (run.json, the
three Parquet tables, per-prompt parts while a run is going), with component rows chosen by hand
so every statistic has an exact expected value; its traces are real .lmtrace files of a tiny
Llama, so a card of one of them is a card of the run's model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lmscope
from lmscope import protocol
from lmscope.cards import component_card, md_text
from lmscope.components import ComponentRef
from lmscope.errors import LmscopeError
from lmscope.server.runs import RunShelf, run, set_active_run, shelf_of
from lmscope.traces.wire import to_wire
from tests.conftest import build_tiny

RUN_NAME = "demo"
N_LAYERS, N_HEADS = 3, 6  # the tiny Llama's
PROMPTS = [  # (id, tags, text)
    ("p-mary", ["names"], "when mary and john went to the store , john gave a drink to"),
    ("line-2", ["names", "long"], "when john and mary went to the store , mary gave a drink to"),
    ("p-war", ["dates"], "the war lasted from year 17 32 to 17"),
]
# (kind, layer, head) -> per prompt: (share, on_route_001, on_route_004, on_route_010); every
# other component has share 0 and is on no route.
T, F = True, False
ROWS: dict[tuple[str, int, int], list[tuple[float, bool, bool, bool]]] = {
    ("head", 1, 0): [(0.30, T, T, T), (0.05, T, T, F), (0.10, T, F, F)],
    ("head", 0, 5): [(0.0, F, F, F), (0.0, T, F, F), (0.60, T, T, T)],
    ("ffn", 2, -1): [(0.20, T, T, T), (0.40, T, T, T), (0.0, F, F, F)],
}
PROMPT_SCHEMA = pa.schema(
    [("index", pa.int32()), ("id", pa.string()), ("line", pa.int32()),
     ("tags", pa.list_(pa.string())), ("text", pa.string()), ("trace", pa.string()),
     ("n_tokens", pa.int32()), ("prediction", pa.string()), ("probability", pa.float32()),
     ("seconds", pa.float32())]
)  # fmt: skip
COMPONENT_SCHEMA = pa.schema(
    [("index", pa.int32()), ("kind", pa.string()), ("layer", pa.int32()), ("head", pa.int32()),
     ("share", pa.float32()), ("on_route_001", pa.bool_()), ("on_route_004", pa.bool_()),
     ("on_route_010", pa.bool_())]
)  # fmt: skip
NEURON_SCHEMA = pa.schema(
    [("index", pa.int32()), ("layer", pa.int32()), ("position", pa.int32()),
     ("neuron", pa.int32()), ("contribution", pa.float32()), ("activation", pa.float32())]
)  # fmt: skip


def trace_name(index: int) -> str:
    return f"traces/{index:05d}-prompt.lmtrace"


def prompt_rows(indices: list[int]) -> pa.Table:
    rows: dict[str, list[Any]] = {name: [] for name in PROMPT_SCHEMA.names}
    for i in indices:
        prompt_id, tags, text = PROMPTS[i]
        values = (i, prompt_id, i + 1, tags, text, trace_name(i), 12, " to", 0.25, 0.1)
        for name, value in zip(PROMPT_SCHEMA.names, values):
            rows[name].append(value)
    return pa.table(rows, schema=PROMPT_SCHEMA)


def component_rows(indices: list[int]) -> pa.Table:
    rows: dict[str, list[Any]] = {name: [] for name in COMPONENT_SCHEMA.names}
    every = [("head", layer, h) for layer in range(N_LAYERS) for h in range(N_HEADS)]
    every += [("ffn", layer, -1) for layer in range(N_LAYERS)]
    for i in indices:
        for kind, layer, head in every:
            share, *flags = ROWS.get((kind, layer, head), [(0.0, False, False, False)] * 3)[i]
            for name, value in zip(COMPONENT_SCHEMA.names, (i, kind, layer, head, share, *flags)):
                rows[name].append(value)
    return pa.table(rows, schema=COMPONENT_SCHEMA)


def write_info(folder: Path, model: dict[str, Any], done: int) -> None:
    info = {
        "format": "lmscope-run", "formatVersion": 1, "name": folder.name, "model": model,
        "versions": {"lmscope": "0.1.0", "torch": "2", "transformers": "5", "python": "3.12"},
        "options": {"thresholds": [0.01, 0.04, 0.1], "shareThreshold": 0.04, "renormalize": True,
                    "topNeurons": 64, "generate": 0, "source": "prompts.jsonl",
                    "sourceSha256": "0" * 64},
        "counts": {"prompts": len(PROMPTS), "done": done, "failed": 0, "skippedBadLines": 0},
        "created": "2026-12-05T09:00:00+00:00", "updated": f"2026-12-05T09:00:0{done}+00:00",
    }  # fmt: skip
    # As the runner writes it: whole, then renamed over the old one.
    (folder / "run.json.tmp").write_text(json.dumps(info), encoding="utf-8")
    (folder / "run.json.tmp").replace(folder / "run.json")


def trace_prompts(folder: Path) -> Path:
    """The tiny Llama's traces of the prompts, `<index>.lmtrace` in `folder`."""
    loaded = build_tiny("llama")
    for index, (_, _, text) in enumerate(PROMPTS):
        lmscope.trace(text, model=loaded).save(folder / f"{index}.lmtrace")
    return folder


@pytest.fixture(scope="module")
def traced(tmp_path_factory) -> Path:
    return trace_prompts(tmp_path_factory.mktemp("run-traces"))


def build_run(folder: Path, traced: Path, done: list[int]) -> Path:
    """A run folder of the prompts `done`, compacted (the three tables, no parts)."""
    (folder / "traces").mkdir(parents=True)
    for index in done:
        shutil.copy(traced / f"{index}.lmtrace", folder / trace_name(index))
    model = to_wire(lmscope.load_trace(traced / "0.lmtrace").data, binary=False)["model"]
    write_info(folder, model, len(done))
    pq.write_table(prompt_rows(done), folder / "prompts.parquet")
    pq.write_table(component_rows(done), folder / "components.parquet")
    pq.write_table(NEURON_SCHEMA.empty_table(), folder / "neurons.parquet")
    return folder


def make_demo_run(folder: Path) -> Path:
    """A finished run folder of the three prompts, traces included: the fixture of the
    in-VS-Code suite (tests/integration/harness.mjs), which opens it in the run view."""
    with tempfile.TemporaryDirectory() as scratch:
        return build_run(folder, trace_prompts(Path(scratch)), [0, 1, 2])


@pytest.fixture
def run_folder(tmp_path, traced) -> Path:
    return build_run(tmp_path / RUN_NAME, traced, [0, 1, 2])


class Server:
    """What the run handlers use of the daemon: a key for its run shelf."""


def ask(server: Server, params: dict[str, Any]) -> dict[str, Any]:
    """lmscope/run as the daemon runs it: params validated and defaulted, the result checked."""
    protocol.validate_params("lmscope/run", params)
    result = run(server, protocol.with_defaults("lmscope/run", params))
    protocol.validate_result("lmscope/run", result)
    return result


# --- lmscope/run -----------------------------------------------------------------------------
def test_run_answers_every_head_and_ffn_block_s_mean_share_without_a_model(run_folder):
    result = ask(Server(), {"path": str(run_folder)})
    info = result["run"]
    assert (info["name"], info["nLayers"], info["nHeads"]) == (RUN_NAME, N_LAYERS, N_HEADS)
    assert info["counts"] == {"prompts": 3, "done": 3, "failed": 0, "skippedBadLines": 0}
    assert info["tags"] == ["dates", "long", "names"]
    assert info["model"]["name"] == "tiny-llama"
    assert (result["stat"], result["tag"], result["nPrompts"]) == ("meanShare", None, 3)
    heads = result["heads"]
    assert len(heads) == N_LAYERS and all(len(row) == N_HEADS for row in heads)
    assert heads[1][0] == pytest.approx(0.15, abs=1e-6)
    assert heads[0][5] == pytest.approx(0.20, abs=1e-6)
    assert heads[2][3] == 0.0
    assert result["ffn"] == pytest.approx([0.0, 0.0, 0.20], abs=1e-6)
    assert result["component"] is None


def test_run_on_route_frequency_follows_the_threshold_and_the_tag(run_folder):
    server = Server()
    at = {tau: ask(server, {"path": str(run_folder), "stat": "onRoute", "threshold": tau})
          for tau in (0.01, 0.04, 0.1)}  # fmt: skip
    assert [at[tau]["heads"][1][0] for tau in (0.01, 0.04, 0.1)] == pytest.approx([1, 2 / 3, 1 / 3])
    assert at[0.04]["ffn"][2] == pytest.approx(2 / 3)
    names = ask(server, {"path": str(run_folder / "run.json"), "tag": "names"})
    assert (names["tag"], names["nPrompts"]) == ("names", 2)
    assert names["heads"][1][0] == pytest.approx(0.175, abs=1e-6)
    assert names["heads"][0][5] == 0.0


def test_run_component_lists_its_top_prompts_with_text_and_trace(run_folder):
    component = {"kind": "head", "layer": 1, "index": 0}
    stats = ask(Server(), {"path": str(run_folder), "component": component})["component"]
    assert stats["component"] == component
    assert stats["nPrompts"] == 3
    assert stats["onRouteFraction"] == pytest.approx(2 / 3)
    assert stats["meanShare"] == pytest.approx(0.15, abs=1e-6)
    top = stats["topPrompts"]
    assert [p["index"] for p in top] == [0, 2, 1]
    assert [p["id"] for p in top] == ["p-mary", "p-war", "line-2"]
    assert top[0]["text"] == PROMPTS[0][2]
    assert top[0]["share"] == pytest.approx(0.30, abs=1e-6)
    assert all((run_folder / p["trace"]).is_file() for p in top)
    ffn = ask(Server(), {"path": str(run_folder), "component": {"kind": "ffn", "layer": 2}})
    assert [p["id"] for p in ffn["component"]["topPrompts"]][:2] == ["line-2", "p-mary"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tag": "poems"},
         "run demo has no prompt tagged 'poems' (its tags: 'dates', 'long', 'names')"),
        ({"component": {"kind": "head", "layer": 3, "index": 0}},
         "L3H0: layer 3 is out of range: run demo's model has 3 layers (0-2)"),
        ({"component": {"kind": "head", "layer": 0, "index": 6}},
         "L0H6: head 6 is out of range: run demo's model has 6 heads per layer (0-5)"),
    ],
)  # fmt: skip
def test_run_refuses_what_the_run_does_not_have_in_one_line(run_folder, params, message):
    with pytest.raises(LmscopeError) as refused:
        ask(Server(), {"path": str(run_folder), **params})
    assert str(refused.value) == message


def test_run_refuses_a_relative_path_and_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(LmscopeError, match=r"^a run is named by an absolute path, got 'runs/x'$"):
        ask(Server(), {"path": "runs/x"})
    with pytest.raises(LmscopeError, match=r"is not a run folder \(no run\.json\)"):
        ask(Server(), {"path": str(tmp_path)})


def test_an_incomplete_run_json_is_named_with_the_field_it_lacks(run_folder):
    info = json.loads((run_folder / "run.json").read_text(encoding="utf-8"))
    del info["model"]["contentHash"]
    (run_folder / "run.json").write_text(json.dumps(info), encoding="utf-8")
    with pytest.raises(LmscopeError) as refused:
        ask(Server(), {"path": str(run_folder)})
    assert (
        str(refused.value) == f"{run_folder / 'run.json'} is incomplete: model has no 'contentHash'"
    )


def test_a_run_in_progress_is_read_again_once_it_wrote_more(tmp_path, traced):
    folder = build_run(tmp_path / RUN_NAME, traced, [0, 1])
    shelf, server = RunShelf(), Server()
    first = shelf.table(folder)
    assert shelf.table(folder) is first  # nothing written: the table read is kept
    assert ask(server, {"path": str(folder)})["nPrompts"] == 2
    # The runner's order: the trace, the components part, the prompts part, then run.json.
    shutil.copy(traced / "2.lmtrace", folder / trace_name(2))
    (folder / "parts").mkdir()
    pq.write_table(component_rows([2]), folder / "parts" / "00002.components.parquet")
    pq.write_table(NEURON_SCHEMA.empty_table(), folder / "parts" / "00002.neurons.parquet")
    pq.write_table(prompt_rows([2]), folder / "parts" / "00002.prompts.parquet")
    write_info(folder, first.info["model"], 3)
    assert shelf.table(folder) is not first
    now = ask(server, {"path": str(folder)})
    assert (now["nPrompts"], now["run"]["counts"]["done"]) == (3, 3)
    assert now["heads"][0][5] == pytest.approx(0.20, abs=1e-6)


# --- the active run and the cards' run line --------------------------------------------------
def test_set_active_run_checks_the_run_and_null_clears_it(run_folder, tmp_path):
    server = Server()
    answer = set_active_run(server, {"path": str(run_folder / "run.json")})
    protocol.validate_result("lmscope/setActiveRun", answer)
    assert answer["run"]["name"] == RUN_NAME and answer["run"]["path"] == str(run_folder)
    assert shelf_of(server).cited() is not None
    with pytest.raises(LmscopeError, match="is not a run folder"):
        set_active_run(server, {"path": str(tmp_path / "nothing")})
    assert shelf_of(server).active == run_folder  # kept
    assert set_active_run(server, {"path": None}) == {"run": None}
    assert shelf_of(server).cited() is None


def test_card_of_a_head_and_an_ffn_block_cites_the_run_of_its_model(run_folder):
    table = RunShelf().table(run_folder)
    trace = lmscope.load_trace(run_folder / trace_name(0))
    head = component_card(ComponentRef("head", 1, 0), trace, run=table)
    line = "across run demo: on the route in 67% of 3 prompts, mean share 15.0%"
    assert md_text(line) in head["markdown"]
    ffn = component_card(ComponentRef("ffn", 2), trace, run=table)
    line = "across run demo: on the route in 67% of 3 prompts, mean share 20.0%"
    assert md_text(line) in ffn["markdown"]
    for other in (ComponentRef("neuron", 1, 3), ComponentRef("attention", 1)):
        assert "across run" not in component_card(other, trace, run=table)["markdown"]
    assert "across run" not in component_card(ComponentRef("head", 1, 0), trace)["markdown"]


def test_card_of_another_model_says_the_run_is_of_another_model(run_folder, tmp_path):
    info = json.loads((run_folder / "run.json").read_text(encoding="utf-8"))
    info["model"]["contentHash"] = "sha256:" + "1" * 64
    (run_folder / "run.json").write_text(json.dumps(info), encoding="utf-8")
    table = RunShelf().table(run_folder)
    trace = lmscope.load_trace(run_folder / trace_name(0))
    markdown = component_card(ComponentRef("head", 1, 0), trace, run=table)["markdown"]
    assert md_text("run demo is of another model (tiny-llama): no statistics here") in markdown
    assert "across run" not in markdown


def test_run_name_in_a_card_is_inert_markdown(tmp_path, traced):
    folder = build_run(tmp_path / "<img src=x>", traced, [0])
    table = RunShelf().table(folder)
    trace = lmscope.load_trace(folder / trace_name(0))
    markdown = component_card(ComponentRef("ffn", 2), trace, run=table)["markdown"]
    assert "<img" not in markdown and "across run &lt;img src\\=x&gt;\\:" in markdown


@pytest.mark.parametrize("path", ["/runs/a\x00b", "/runs/a\ud800"])
def test_a_path_the_file_system_cannot_name_is_refused_in_one_line(path):
    with pytest.raises(LmscopeError, match=r"^not a path the file system can name"):
        ask(Server(), {"path": path})
    with pytest.raises(LmscopeError, match=r"^not a path the file system can name"):
        set_active_run(Server(), {"path": path})


# --- through a spawned daemon ----------------------------------------------------------------
@pytest.mark.slow
def test_a_daemon_without_a_model_answers_the_run_and_cites_it_on_cards(tmp_path, traced):
    from tests.daemon_client import DaemonClient

    folder = build_run(tmp_path / RUN_NAME, traced, [0, 1, 2])
    client = DaemonClient(tmp_path / "daemon.log")
    client.initialize(root=tmp_path)
    assert client.request("lmscope/status", {})["model"] is None  # read from the tables alone
    component = {"kind": "head", "layer": 1, "index": 0}
    answer = client.request("lmscope/run", {"path": str(folder), "component": component})
    assert answer["heads"][1][0] == pytest.approx(0.15, abs=1e-6)
    assert [p["id"] for p in answer["component"]["topPrompts"]] == ["p-mary", "p-war", "line-2"]
    assert client.request("lmscope/setActiveRun", {"path": str(folder)})["run"]["name"] == RUN_NAME
    handle = client.request("lmscope/openTrace", {"path": str(folder / trace_name(0))})
    card = client.request(
        "lmscope/component", {"component": component, "handle": handle["trace"]["handle"]}
    )
    assert md_text("across run demo: on the route in 67% of 3 prompts") in card["markdown"]
    client.check_notifications()
    assert client.close() == 0
