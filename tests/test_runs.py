"""Corpus runs on a tiny model, in this process: one trace and one set of rows per prompt,
run.json, aggregates that match each trace's own shares, resume without tracing a prompt twice,
bad lines refused with their line numbers, chats, and the torch-free reader."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import lmscope
from lmscope.errors import LmscopeError
from lmscope.graph.nodes import ATTENTION_EDGE, FFN
from lmscope.graph.shares import component_shares
from lmscope.runner.corpus import RunSettings, read_checked_source, run_corpus
from lmscope.runner.local import LocalBackend
from lmscope.runs.folder import RunFolder
from lmscope.runs.table import RunError, load_run
from tests.conftest import build_tiny

FAMILY = "phi3"  # its tiny model has FFN nodes on the route at τ 0.04 (neurons to store)
CHAT_TEMPLATE = (
    "{% for m in messages %}<bos> {{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<bos> assistant :{% endif %}"
)
PROMPTS = [
    {"prompt": "when mary and john went to the store , john gave a drink to", "tags": ["ioi"]},
    {"prompt": "the war lasted from year 17 32 to", "id": "war", "tags": ["years"]},
    {"prompt": "5 + 4 = 9", "tags": ["math", "ioi"]},
    {"prompt": "john gave a drink to mary", "id": 7},
    {"prompt": "the store"},
]


@pytest.fixture(scope="module")
def loaded():
    model = build_tiny(FAMILY)
    model.tokenizer.chat_template = CHAT_TEMPLATE
    return model


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


class CountingBackend(LocalBackend):
    """The local backend, counting each prompt it traces; optionally stops (as a kill would)
    after `stop_after` prompts."""

    def __init__(self, loaded, traced: list[int], stop_after: int | None = None) -> None:
        super().__init__(loaded)
        self.traced, self.stop_after = traced, stop_after

    def trace_all(self, prompts):
        for result in super().trace_all(prompts):
            self.traced.append(result.prompt.index)
            yield result
            if self.stop_after is not None and len(self.traced) >= self.stop_after:
                raise KeyboardInterrupt


def do_run(loaded, source_path: Path, out: Path, traced: list[int] | None = None, **kw):
    source = read_checked_source(source_path, kw.pop("skip_bad", False))
    settings = RunSettings(skip_bad=bool(source.bad_lines))
    counted = traced if traced is not None else []
    return run_corpus(
        source, out, settings, lambda: CountingBackend(loaded, counted, **kw), quiet=True
    )


@pytest.fixture(scope="module")
def finished(loaded, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    source = write_jsonl(folder / "corpus.prompts.jsonl", PROMPTS)
    do_run(loaded, source, folder / "out")
    return folder / "out"


def test_a_run_writes_one_trace_and_one_set_of_rows_per_prompt(finished, loaded):
    files = sorted(p.name for p in (finished / "traces").iterdir())
    assert files == [
        "00000-when-mary-and-john-went-to-the-store-joh.lmtrace",
        "00001-the-war-lasted-from-year-17-32-to.lmtrace",
        "00002-5-4-9.lmtrace",
        "00003-john-gave-a-drink-to-mary.lmtrace",
        "00004-the-store.lmtrace",
    ]
    assert not (finished / "parts").exists()  # compacted at the end
    prompts = pq.read_table(finished / "prompts.parquet").to_pylist()
    assert [p["id"] for p in prompts] == ["line-1", "war", "line-3", "7", "line-5"]
    assert [p["tags"] for p in prompts] == [["ioi"], ["years"], ["math", "ioi"], [], []]
    assert [p["line"] for p in prompts] == [1, 2, 3, 4, 5]
    first = lmscope.load_trace(finished / prompts[0]["trace"])
    assert prompts[0]["text"] == first.prompt
    assert prompts[0]["n_tokens"] == first.n_tokens
    assert prompts[0]["prediction"] == first.predictions(-1)[0][0]
    assert prompts[0]["probability"] == pytest.approx(first.predictions(-1)[0][1], rel=1e-6)
    assert all(p["seconds"] > 0 for p in prompts)
    n_layers, n_heads = loaded.facts.n_layers, loaded.facts.n_heads
    components = pq.read_table(finished / "components.parquet")
    assert components.num_rows == len(PROMPTS) * (n_layers * n_heads + n_layers)
    neurons = pq.read_table(finished / "neurons.parquet")
    assert neurons.num_rows > 0
    assert set(neurons.column_names) == {
        "index",
        "layer",
        "position",
        "neuron",
        "contribution",
        "activation",
    }


def test_run_json_records_the_model_versions_options_and_counts(finished, loaded):
    info = json.loads((finished / "run.json").read_text())
    assert info["format"] == "lmscope-run" and info["formatVersion"] == 1
    assert info["name"] == "out"
    assert info["model"]["nLayers"] == loaded.facts.n_layers
    assert info["model"]["contentHash"] == loaded.facts.content_hash
    assert set(info["versions"]) == {"lmscope", "torch", "transformers", "python"}
    assert info["options"]["thresholds"] == [0.01, 0.04, 0.1]
    assert info["options"]["shareThreshold"] == 0.04 and info["options"]["topNeurons"] == 10
    assert (
        info["options"]["sourceSha256"]
        == read_checked_source(Path(info["options"]["source"]), False).sha256
    )
    assert info["counts"] == {"prompts": 5, "done": 5, "failed": 0, "skippedBadLines": 0}


def by_hand(folder: Path) -> dict[int, dict[str, np.ndarray]]:
    """Each prompt's shares and on-route flags from its own trace file, without lmscope.runs."""
    found = {}
    for index, path in enumerate(sorted((folder / "traces").iterdir())):
        trace = lmscope.load_trace(path)
        route = trace.route(-1, 0.04)
        shares = component_shares(route, route.flow(), trace.data.model.n_heads)
        on = {}
        for tau in (0.01, 0.04, 0.1):
            at = trace.route(-1, tau)
            flow = at.flow()
            heads = np.zeros_like(shares.heads, dtype=bool)
            for edge in at.edges_of_kind(ATTENTION_EDGE):
                heads[edge.target.layer] |= flow[edge.target] * np.asarray(edge.heads) != 0
            ffn = np.zeros(trace.n_layers, dtype=bool)
            for node in at.nodes:
                ffn[node.layer] |= node.kind == FFN
            on[tau] = (heads, ffn)
        found[index] = {"heads": shares.heads, "ffn": shares.ffn, "on": on}
    return found


def test_aggregates_equal_those_computed_from_each_trace(finished):
    hand = by_hand(finished)
    run = lmscope.load_run(finished)
    heads = np.stack([hand[i]["heads"] for i in sorted(hand)])  # [P, L, H]
    ffn = np.stack([hand[i]["ffn"] for i in sorted(hand)])  # [P, L]
    assert np.allclose(run.head_matrix("mean_share"), heads.mean(0), atol=1e-6)
    assert np.allclose(run.ffn_vector("mean_share"), ffn.mean(0), atol=1e-6)
    assert ffn.max() > 0  # the tiny model's routes do cross FFN blocks
    for tau, stat in ((0.01, "on_route_001"), (0.04, "on_route_004"), (0.1, "on_route_010")):
        on_heads = np.stack([hand[i]["on"][tau][0] for i in sorted(hand)]).mean(0)
        on_ffn = np.stack([hand[i]["on"][tau][1] for i in sorted(hand)]).mean(0)
        assert np.allclose(run.head_matrix(stat), on_heads)
        assert np.allclose(run.ffn_vector(stat), on_ffn)
    layer, head = np.unravel_index(heads.mean(0).argmax(), heads.shape[1:])
    stats = run.component_stats("head", int(layer), int(head))
    column = heads[:, layer, head]
    assert stats.n_prompts == 5
    assert stats.mean_share == pytest.approx(column.mean(), abs=1e-6)
    assert stats.std_share == pytest.approx(column.std(), abs=1e-6)
    assert stats.quartiles[1] == pytest.approx(float(np.median(column)), abs=1e-6)
    assert [i for i, *_ in stats.top_prompts] == list(np.argsort(-column, kind="stable"))
    tagged = run.component_stats("head", int(layer), int(head), tag="ioi")
    assert tagged.n_prompts == 2
    assert tagged.mean_share == pytest.approx(column[[0, 2]].mean(), abs=1e-6)
    assert run.tags() == ["ioi", "math", "years"]
    summary = run.summary()
    assert f"L{layer}H{head} " in summary.splitlines()[4]  # the first head listed
    assert "Tag ioi (2 prompts)" in summary


def test_a_stopped_run_resumes_tracing_each_prompt_once_and_gives_the_same_table(
    loaded, finished, tmp_path
):
    source = write_jsonl(tmp_path / "corpus.prompts.jsonl", PROMPTS)
    traced: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        do_run(loaded, source, tmp_path / "out", traced, stop_after=2)
    assert traced == [0, 1]
    assert RunFolder(tmp_path / "out").done_indices() == {0, 1}
    assert load_run(tmp_path / "out").n_prompts == 2  # parts read before any compaction
    # A kill between prompt 2's trace file and its rows: the file is read back, not traced.
    resumed: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        do_run(loaded, source, tmp_path / "out", resumed, stop_after=1)
    assert resumed == [2]
    RunFolder(tmp_path / "out").part_path(2, "prompts").unlink()  # as if killed before it
    last: list[int] = []
    do_run(loaded, source, tmp_path / "out", last)
    assert last == [3, 4]  # 2 came back from its trace file
    resumed_run, whole = load_run(tmp_path / "out"), load_run(finished)
    assert resumed_run.components.equals(whole.components)
    assert resumed_run.neurons.equals(whole.neurons)
    mine, theirs = resumed_run.prompts.to_pylist(), whole.prompts.to_pylist()
    assert math.isnan(mine[2]["seconds"])  # read back: its trace time is unknown
    for row in (*mine, *theirs):
        row.pop("seconds")
    assert mine == theirs
    assert json.loads((tmp_path / "out" / "run.json").read_text())["counts"]["done"] == 5


def test_a_resume_removes_the_temp_files_of_writes_a_kill_cut_short(loaded, tmp_path):
    source = write_jsonl(tmp_path / "corpus.prompts.jsonl", PROMPTS)
    with pytest.raises(KeyboardInterrupt):
        do_run(loaded, source, tmp_path / "out", [], stop_after=2)
    cut = [  # as lmscope.files.atomic_write names its temp files
        tmp_path / "out" / "parts" / ".00002.components.parquet.0a1b2c3d.tmp",
        tmp_path / "out" / "traces" / ".00002-prompt.lmtrace.deadbeef.tmp",
        tmp_path / "out" / ".run.json.01234567.tmp",
    ]
    for path in cut:
        path.write_bytes(b"half")
    kept = tmp_path / "out" / "traces" / "notes.tmp"  # not ours: left alone
    kept.write_bytes(b"mine")
    do_run(loaded, source, tmp_path / "out", [])
    assert not any(path.exists() for path in cut)
    assert kept.exists()
    assert not (tmp_path / "out" / "parts").exists()
    assert load_run(tmp_path / "out").n_prompts == len(PROMPTS)


def test_a_resume_refuses_another_file_or_other_options(loaded, finished, tmp_path):
    other = write_jsonl(tmp_path / "other.prompts.jsonl", PROMPTS[:2])
    with pytest.raises(RunError, match="another prompt file"):
        do_run(loaded, other, finished)
    source = read_checked_source(
        Path(json.loads((finished / "run.json").read_text())["options"]["source"]), False
    )
    with pytest.raises(RunError, match="topNeurons 10, not 3"):
        run_corpus(source, finished, RunSettings(top_neurons=3), lambda: LocalBackend(loaded))


def test_bad_lines_are_refused_with_their_line_numbers_before_tracing(loaded, tmp_path, capsys):
    path = tmp_path / "bad.prompts.jsonl"
    path.write_text(
        '{"prompt": "the store"}\n{"prompt": 3}\nnot json\n\n'
        '{"prompt": "5 + 4", "tags": "math"}\n{"prompt": "john gave"}\n'
    )
    with pytest.raises(LmscopeError, match=r"3 bad lines .*--skip-bad"):
        read_checked_source(path, skip_bad=False)
    err = capsys.readouterr().err
    assert 'line 2: "prompt" must be a string' in err
    assert "line 3: not valid JSON" in err
    assert 'line 5: "tags" must be a list of strings' in err
    traced: list[int] = []
    run = do_run(loaded, path, tmp_path / "out", traced, skip_bad=True)
    assert traced == [0, 1]
    rows = load_run(tmp_path / "out").prompts.to_pylist()
    assert [(r["index"], r["line"]) for r in rows] == [(0, 1), (1, 6)]
    assert json.loads((tmp_path / "out" / "run.json").read_text())["counts"] == {
        "prompts": 2,
        "done": 2,
        "failed": 0,
        "skippedBadLines": 3,
    }
    assert run.failed == 0


def test_a_chat_file_runs_through_the_chat_template(loaded, tmp_path):
    conversation = [
        {"role": "system", "content": "the war lasted"},
        {"role": "user", "content": "john gave a drink to"},
    ]
    path = write_jsonl(
        tmp_path / "c.chat.jsonl",
        [{"messages": conversation, "id": "c1", "tags": ["chat"]}, {"messages": conversation[1:]}],
    )
    do_run(loaded, path, tmp_path / "out")
    run = load_run(tmp_path / "out")
    rows = run.prompts.to_pylist()
    assert [r["id"] for r in rows] == ["c1", "line-2"]
    assert rows[0]["text"].startswith("<bos> system : the war lasted")
    assert rows[0]["trace"] == "traces/00000-john-gave-a-drink-to.lmtrace"
    assert lmscope.load_trace(tmp_path / "out" / rows[0]["trace"]).chat is not None
    assert run.tags() == ["chat"]


def test_load_run_refuses_a_missing_corrupt_or_newer_run_in_one_line(finished, tmp_path):
    with pytest.raises(RunError, match="not a run folder"):
        load_run(tmp_path)
    (tmp_path / "run.json").write_text("{")
    with pytest.raises(RunError, match="cannot read"):
        load_run(tmp_path)
    info = json.loads((finished / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps({**info, "formatVersion": 2}))
    with pytest.raises(RunError, match="upgrade lmscope"):
        load_run(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps(info))
    (tmp_path / "prompts.parquet").write_bytes(b"PAR1 nonsense")
    with pytest.raises(RunError, match="cannot read"):
        load_run(tmp_path)


def test_run_summary_prints_shares_route_frequency_spread_tags_and_top_prompts(finished, capsys):
    from lmscope.cli import main

    assert main(["run-summary", str(finished)]) == 0
    out = capsys.readouterr().out
    assert "5 of 5 prompts done" in out
    assert "Heads by mean share" in out and "FFN blocks by mean share" in out
    assert "on route τ 0.01 / 0.04 / 0.1" in out and "std" in out and "median" in out
    assert "Tag years (1 prompts)" in out
    assert main(["run-summary", str(finished), "--tag", "ioi"]) == 0
    assert "Tag ioi: 2 prompts" in capsys.readouterr().out
    assert main(["run-summary", str(finished), "--component", "L1H0"]) == 0
    report = capsys.readouterr().out
    assert report.startswith("L1H0 over 5 prompts: mean share")
    assert report.count(".lmtrace") == 5
    assert main(["run-summary", str(finished), "--component", "L0.ffn", "--tag", "years"]) == 0
    assert "L0.ffn over 1 prompts tagged years" in capsys.readouterr().out
    assert main(["run-summary", str(finished), "--component", "L0.N3"]) == 1
    assert "--component takes a head (L23H0) or an FFN block" in capsys.readouterr().err
    assert main(["run-summary", str(finished), "--tag", "nope"]) == 1
    assert "no prompt of this run has tag 'nope'" in capsys.readouterr().err


def test_lmscope_run_lists_bad_lines_and_refuses_before_loading_a_model(tmp_path, capsys):
    from lmscope.cli import main

    path = tmp_path / "bad.prompts.jsonl"
    path.write_text('{"prompt": "the store"}\n{"text": "x"}\n')
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--model", "no/such"])
    err = capsys.readouterr().err
    assert code == 1
    assert 'bad.prompts.jsonl line 2: no "prompt" field' in err
    assert "1 bad line (listed above)" in err
    assert not (tmp_path / "out").exists()
    assert main(["run", str(tmp_path / "x.prompt"), "--out", str(tmp_path / "o")]) == 1
    assert "name it *.prompts.txt, *.prompts.jsonl or *.chat.jsonl" in capsys.readouterr().err
