"""The `lmscope` command at the process boundary: exit codes, what goes to stdout and stderr,
which files are written, and one clean `lmscope: ...` line for every kind of bad input.

Most cases run the CLI as a real subprocess on tiny random-init models saved as
save_pretrained folders (no network, no default model). Each subprocess costs ~2-4 s of
imports, so the remaining error cases of the same kind call `lmscope.cli.main` in-process.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest

import lmscope
from lmscope.cli import main
from lmscope.errors import PromptError
from lmscope.models.loading import load_model
from lmscope.protocol import TRACE_SCHEMA
from lmscope.traces.lmtrace import export_json, import_json, validate_wire
from lmscope.traces.trace import Trace
from tests.conftest import TINY_PROMPT, build_tiny

THRESHOLDS = (0.01, 0.04, 0.1)
LONG_PROMPT = " ".join(["mary"] * 200)  # the tiny models' context is 128 tokens
PROGRESS_NOISE = ("\r", "%|", "resolving model", "loading model", "hashing weights", "projections…")


# --- helpers -------------------------------------------------------------------------------
def lmscope_cli(
    *args: str | os.PathLike[str], cwd: Path, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run `python -m lmscope ARGS` as its own process."""
    return subprocess.run(
        [sys.executable, "-m", "lmscope", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(rc: int, stderr: str, expected_rc: int, *fragments: str) -> str:
    """Exit code, and stderr is exactly one `lmscope: ...` line naming the problem."""
    assert "Traceback" not in stderr
    lines = stderr.strip("\n").splitlines()
    assert len(lines) == 1, f"stderr is not one line: {stderr!r}"
    line = lines[0]
    assert line.startswith("lmscope: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert rc == expected_rc, f"exit code {rc}, expected {expected_rc}: {line}"
    return line


def assert_only_files(folder: Path, *names: str) -> None:
    """The folder holds exactly these entries (no half-written output, no temp files)."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def routes_of(trace: Trace) -> list:
    return [
        trace.route(token, threshold, renormalize=renormalize)
        for token in range(trace.n_tokens)
        for threshold in THRESHOLDS
        for renormalize in (True, False)
    ]


def save_tiny_folder(family: str, folder: Path) -> Path:
    loaded = build_tiny(family)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


# --- module fixtures -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lmscope-cache")


@pytest.fixture(scope="module")
def env(cache) -> dict[str, str]:
    return {
        **os.environ,
        "LMSCOPE_CACHE_DIR": str(cache),
        "HF_HUB_OFFLINE": "1",
        "PYTHONIOENCODING": "utf-8",
    }


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory, cache) -> dict[str, Path]:
    """Tiny llama, GPT-2 and GPT-NeoX models saved with save_pretrained."""
    root = tmp_path_factory.mktemp("models")
    return {
        family: save_tiny_folder(family, root / family) for family in ("llama", "gpt2", "gpt_neox")
    }


@pytest.fixture
def in_process(monkeypatch, tmp_path, cache):
    """Run `lmscope.cli.main` here, in tmp_path, with the test cache."""
    monkeypatch.setenv("LMSCOPE_CACHE_DIR", str(cache))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@dataclass
class GoodTrace:
    folder: Path  # where the trace command ran
    trace: Path
    svg: Path
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def good_trace(tmp_path_factory, model_folders, env) -> GoodTrace:
    """`lmscope trace ... --svg` on the tiny llama; its model folder is deleted afterwards, so
    everything that reads this trace proves it needs no model."""
    folder = tmp_path_factory.mktemp("good")
    model = shutil.copytree(model_folders["llama"], tmp_path_factory.mktemp("gone") / "llama")
    result = lmscope_cli(
        "trace", TINY_PROMPT, "--model", model, "--out", "t.lmtrace", "--svg", cwd=folder, env=env
    )
    shutil.rmtree(model)
    return GoodTrace(folder, folder / "t.lmtrace", folder / "t.svg", result)


# --- trace: happy paths --------------------------------------------------------------------
def test_saved_tiny_model_folders_load_as_models(model_folders, cache, monkeypatch):
    monkeypatch.setenv("LMSCOPE_CACHE_DIR", str(cache))
    for family, folder in model_folders.items():
        loaded = load_model(str(folder))
        assert loaded.source == "folder"
        assert loaded.name == family
        assert loaded.content_hash.startswith("sha256:")
        assert loaded.model.config._attn_implementation == "eager"


def test_trace_writes_the_trace_and_svg_and_prints_a_summary(good_trace):
    result = good_trace.result
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert_only_files(good_trace.folder, "t.lmtrace", "t.svg")
    out = result.stdout
    assert "prediction after" in out
    assert "route of token 14" in out  # the last of 15 tokens (BOS + 14 words)
    assert "wrote t.lmtrace" in out and "t.svg" in out
    for noise in PROGRESS_NOISE:
        assert noise not in out, f"progress noise {noise!r} on stdout"
    assert not any(line.startswith("lmscope:") for line in out.splitlines())
    # Progress went to stderr instead, and the model was loaded once.
    assert result.stderr.count("loading model") == 1
    root = ET.parse(good_trace.svg).getroot()
    assert root.tag.endswith("svg")
    trace = lmscope.load_trace(good_trace.trace)
    assert trace.prompt == TINY_PROMPT
    assert trace.n_tokens == 15
    assert trace.data.model.source == "folder"


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_trace_of_other_families_succeeds_quietly(family, model_folders, env, tmp_path):
    result = lmscope_cli(
        "trace", TINY_PROMPT, "--model", model_folders[family], "--out", "t.lmtrace",
        "--svg", "--quiet", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --quiet: nothing on stderr
    assert "prediction after" in result.stdout and "route of token" in result.stdout
    assert_only_files(tmp_path, "t.lmtrace", "t.svg")
    ET.parse(tmp_path / "t.svg")
    trace = lmscope.load_trace(tmp_path / "t.lmtrace")
    assert trace.data.model.family == family
    assert trace.data.model.parallel_blocks == (family == "gpt_neox")


def test_trace_file_writes_one_trace_per_prompt_and_reports_the_bad_one(
    model_folders, env, tmp_path
):
    prompts = ["when mary and john went", "john gave a drink to", "the war lasted from"]
    lines = [prompts[0], "", "# a comment line", prompts[1], LONG_PROMPT, "   ", prompts[2]]
    (tmp_path / "prompts.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = lmscope_cli(
        "trace", "--file", "prompts.txt", "--out-dir", "out", "--model", model_folders["llama"],
        cwd=tmp_path, env=env,
    )  # fmt: skip

    assert result.returncode == 1  # one prompt failed
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.count("loading model") == 1  # loaded once for every prompt
    errors = [line for line in result.stderr.splitlines() if "too long" in line]
    assert len(errors) == 1
    assert errors[0].startswith("lmscope: prompts.txt line 5: prompt too long")
    written = sorted((tmp_path / "out").iterdir())
    assert all(p.suffix == ".lmtrace" for p in written), written  # no temp files
    assert [lmscope.load_trace(p).prompt for p in written] == prompts
    assert result.stdout.count("prediction after") == 3
    assert "[4/4]" in result.stdout


# --- show ----------------------------------------------------------------------------------
def test_show_prints_the_route_without_the_model(good_trace, env):
    # good_trace's model folder no longer exists.
    result = lmscope_cli("show", good_trace.trace, cwd=good_trace.folder, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "prediction after" in result.stdout

    def route_line(text: str) -> str:
        return next(line for line in text.splitlines() if line.startswith("route of token"))

    # The same route the trace command reported (τ = 0.04, last token).
    assert route_line(result.stdout) == route_line(good_trace.result.stdout)


def test_show_another_token_in_raw_mode(good_trace, env):
    result = lmscope_cli(
        "show", "t.lmtrace", "--token", "3", "--threshold", "0.1", "--raw",
        cwd=good_trace.folder, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    route = lmscope.load_trace(good_trace.trace).route(3, 0.1, renormalize=False)
    assert f"route of token 3 “and” at τ = 0.1 (raw): {len(route.edges)} edges" in result.stdout
    assert "prediction after “and”" in result.stdout


def test_show_below_the_stored_threshold_fails_with_one_line(good_trace, env):
    result = lmscope_cli(
        "show", "t.lmtrace", "--threshold", "0.005", cwd=good_trace.folder, env=env
    )
    assert_one_line_error(result.returncode, result.stderr, 1, "0.005", "0.01")
    assert result.stdout == ""


# --- export --------------------------------------------------------------------------------
def test_export_json_validates_against_the_schema_and_round_trips(good_trace, env, tmp_path):
    result = lmscope_cli("export", good_trace.trace, "--format", "json", "--out", "t.json",
                         cwd=tmp_path, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert_only_files(tmp_path, "t.json")
    text = (tmp_path / "t.json").read_text(encoding="utf-8")
    document = json.loads(text)
    schema = json.loads(TRACE_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(document)
    validate_wire(document)

    original = lmscope.load_trace(good_trace.trace)
    imported = Trace(import_json(text))
    assert routes_of(imported) == routes_of(original)
    edges = original.data.edges
    for row in range(len(edges.layer)):
        args = (int(edges.layer[row]), int(edges.target[row]), int(edges.source[row]))
        assert imported.edge_heads(*args) == original.edge_heads(*args)


def test_export_svg_writes_a_parseable_svg(good_trace, env, tmp_path):
    result = lmscope_cli(
        "export", good_trace.trace, "--format", "svg", "--out", "r.svg", cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    assert_only_files(tmp_path, "r.svg")
    assert ET.parse(tmp_path / "r.svg").getroot().tag.endswith("svg")


def test_export_json_without_out_writes_to_stdout(good_trace, env, tmp_path):
    result = lmscope_cli("export", good_trace.trace, "--format", "json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert_only_files(tmp_path)
    document = json.loads(result.stdout)
    validate_wire(document)
    assert document["tokens"]["prompt"] == TINY_PROMPT


# --- bad input: subprocesses ----------------------------------------------------------------
def test_empty_prompt_fails_with_one_line_and_writes_nothing(model_folders, env, tmp_path):
    result = lmscope_cli("trace", "", "--model", model_folders["llama"], "--out", "t.lmtrace",
                         "--svg", "--quiet", cwd=tmp_path, env=env)  # fmt: skip
    assert_one_line_error(result.returncode, result.stderr, 1, "empty prompt")
    assert_only_files(tmp_path)


def test_failed_trace_leaves_an_existing_trace_intact(good_trace, model_folders, env, tmp_path):
    shutil.copy(good_trace.trace, tmp_path / "t.lmtrace")
    before = (tmp_path / "t.lmtrace").read_bytes()
    result = lmscope_cli("trace", LONG_PROMPT, "--model", model_folders["llama"],
                         "--out", "t.lmtrace", "--quiet", cwd=tmp_path, env=env)  # fmt: skip
    assert_one_line_error(result.returncode, result.stderr, 1, "too long", "201", "128")
    assert (tmp_path / "t.lmtrace").read_bytes() == before
    assert_only_files(tmp_path, "t.lmtrace")


def test_unknown_model_fails_with_one_error_line_after_the_progress(env, tmp_path):
    result = lmscope_cli("trace", TINY_PROMPT, "--model", "no-such-model-xyz",
                         "--out", "t.lmtrace", cwd=tmp_path, env=env)  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip("\n").splitlines()
    # Without --quiet, stage lines ("· loading model…") come first; the error is the last line
    # and the only one that starts with the program's name.
    assert [line for line in lines if line.startswith("lmscope: ")] == lines[-1:], lines
    assert "unknown model 'no-such-model-xyz'" in lines[-1]
    assert sum("no-such-model-xyz'" in line for line in lines) == 1
    assert result.stdout == ""
    assert_only_files(tmp_path)


def test_show_of_random_bytes_fails_with_one_line(env, tmp_path):
    (tmp_path / "noise.lmtrace").write_bytes(random.Random(0).randbytes(3000))
    result = lmscope_cli("show", "noise.lmtrace", cwd=tmp_path, env=env)
    assert_one_line_error(result.returncode, result.stderr, 1, "noise.lmtrace")
    assert result.stdout == ""


def test_threshold_outside_zero_to_one_is_a_usage_error(good_trace, env):
    result = lmscope_cli("show", "t.lmtrace", "--threshold", "2", cwd=good_trace.folder, env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert_one_line_error(result.returncode, result.stderr, 2, "threshold must be within [0, 1]")
    assert result.stdout == ""


# --- bad input: in-process (same code path, no process start) -------------------------------
def run_main(capsys, *argv: str | os.PathLike[str]) -> tuple[int, str, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.mark.parametrize(
    ("prompt", "message"),
    [("", "empty prompt"), ("   ", "only whitespace"), (" \n\t\u00a0\x00 ", "only whitespace")],
)
def test_an_untraceable_prompt_is_refused_before_any_model_loads(
    in_process, capsys, prompt, message
):
    # The model does not exist: the prompt's error comes first, so no load was tried.
    rc, out, err = run_main(capsys, "trace", prompt, "--model", in_process / "no-such-model",
                            "--out", "p.lmtrace", "--quiet")  # fmt: skip
    assert (rc, out) == (1, "")
    assert err.startswith("lmscope: ") and message in err and err.count("\n") == 1
    assert not (in_process / "p.lmtrace").exists()
    with pytest.raises(PromptError, match=message):
        lmscope.trace(prompt, model=str(in_process / "no-such-model"))


def test_bad_lines_of_a_prompt_file_are_reported_before_the_model_loads(in_process, capsys):
    prompts = in_process / "p.prompts.txt"
    prompts.write_text("# a comment\n\x00\x00\n", encoding="utf-8")
    rc, out, err = run_main(capsys, "trace", "--file", prompts,
                            "--model", in_process / "no-such-model", "--quiet")  # fmt: skip
    assert (rc, out) == (1, "")
    assert (
        err
        == f"lmscope: {prompts} line 2: the prompt is only whitespace: there is nothing to trace\n"
    )


def test_folder_without_weights_fails_with_one_line(in_process, capsys):
    empty = in_process / "no-weights"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
    rc, out, err = run_main(capsys, "trace", TINY_PROMPT, "--model", empty, "--out", "t.lmtrace",
                            "--quiet")  # fmt: skip
    assert_one_line_error(rc, err, 1, "no model weights", "no-weights")
    assert out == ""
    assert_only_files(in_process, "no-weights")
    assert_only_files(empty, "config.json")


@pytest.mark.parametrize("damage", ["truncated", "empty", "json", "missing"])
def test_show_of_a_damaged_trace_fails_with_one_line(damage, good_trace, in_process, capsys):
    path = in_process / "bad.lmtrace"
    good = good_trace.trace.read_bytes()
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
        expected = "truncated"
    elif damage == "empty":
        path.write_bytes(b"")
        expected = "is empty"
    elif damage == "json":
        path.write_text(export_json(lmscope.load_trace(good_trace.trace).data), encoding="utf-8")
        expected = "JSON"
    else:
        expected = "does not exist"
    for command in (["show", path], ["export", path, "--format", "json", "--out", "x.json"]):
        rc, out, err = run_main(capsys, *command)
        assert_one_line_error(rc, err, 1, "bad.lmtrace", expected)
        assert out == ""
    assert not (in_process / "x.json").exists()


def test_trace_without_prompt_or_file_fails_with_one_line(in_process, capsys):
    rc, out, err = run_main(capsys, "trace", "--model", "no-such-model-xyz")
    assert_one_line_error(rc, err, 2, "PROMPT", "--file", "lmscope trace --help")
    assert out == ""


def test_prompt_and_file_together_fail_with_one_line(in_process, capsys):
    rc, _, err = run_main(capsys, "trace", "hello", "--file", "prompts.txt")
    assert_one_line_error(rc, err, 2, "PROMPT", "--file")


def test_an_svg_out_path_with_svg_is_refused_before_tracing(in_process, capsys):
    rc, _, err = run_main(capsys, "trace", "hello", "--out", "x.svg", "--svg")
    assert_one_line_error(rc, err, 2, "--out must be the .lmtrace file")
    assert not (in_process / "x.svg").exists()


def test_usage_errors_exit_2(in_process, capsys):
    for argv in (
        ["trace", TINY_PROMPT, "--threshold", "2"],
        ["show", "t.lmtrace", "--threshold", "-0.1"],
        ["show", "t.lmtrace", "--threshold", "abc"],
        ["export", "t.lmtrace"],  # --format is required
        [],
    ):
        rc, out, err = run_main(capsys, *argv)
        assert rc == 2, argv
        assert "Traceback" not in err
        assert out == ""


# --- chats and generations -----------------------------------------------------------------
@pytest.fixture(scope="module")
def chat_model_folder(tmp_path_factory) -> Path:
    """The tiny llama with a chat template in its tokenizer files."""
    loaded = build_tiny("llama")
    loaded.tokenizer.chat_template = (
        "{% for m in messages %}<bos> {{ m['role'] }} : {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<bos> assistant :{% endif %}"
    )
    folder = tmp_path_factory.mktemp("chat-llama")
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


def test_a_chat_file_traces_each_conversation_and_show_prints_it(
    chat_model_folder, in_process, capsys
):
    conversation = [{"role": "user", "content": "when mary and john went to the store"}]
    chats = in_process / "ioi.chat.jsonl"
    chats.write_text(
        json.dumps({"messages": conversation, "id": "a"}) + "\n"
        '{"messages": [{"role": "robot", "content": "x"}]}\n',
        encoding="utf-8",
    )
    rc, out, err = run_main(capsys, "trace", "--file", chats, "--model", chat_model_folder,
                            "--out-dir", "out", "--generate", "2", "--seed", "3",
                            "--quiet")  # fmt: skip
    assert rc == 1  # the robot's line
    assert f"lmscope: {chats} line 2: message 1: role must be one of" in err
    (written,) = sorted((in_process / "out").iterdir())
    traced = lmscope.load_trace(written)
    assert traced.chat is not None and traced.generation is not None
    assert traced.generation.seed == 3 and traced.generation.generated == 2
    rc, out, _ = run_main(capsys, "show", written)
    assert rc == 0
    assert "chat of 1 messages (6 tokens added by the chat template):" in out
    assert "  user: 'when mary and john went to the store'" in out
    assert "generated 2 tokens (sampled, seed 3), positions 14..15" in out


def test_messages_on_a_model_without_a_chat_template_fail_with_one_line(
    model_folders, in_process, capsys
):
    rc, _, err = run_main(capsys, "trace", "--messages", '[{"role": "user", "content": "hi"}]',
                          "--model", model_folders["llama"], "--quiet")  # fmt: skip
    assert_one_line_error(rc, err, 1, "has no chat template")
    rc, _, err = run_main(capsys, "trace", "--messages", '[{"role": "user"}]', "--quiet")
    assert_one_line_error(rc, err, 1, "message 1 has no 'content'")
    rc, _, err = run_main(capsys, "trace", "hello", "--seed", "3")
    assert_one_line_error(rc, err, 2, "--seed samples the generated tokens")
