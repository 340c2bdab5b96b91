"""Hostile or broken input from someone else: prompts (empty, whitespace, 100k characters,
control, bidi and combining characters, unpaired surrogates, HTML/Markdown look-alikes), trace
save paths that climb out of their folder, and model folders that carry pickles or ask for
their own code. Each is traced or refused with one clear error; text reaches hover Markdown
escaped; remote code never runs; pickles load only as weights."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from markdown_it import MarkdownIt
from tokenizers import Tokenizer, models, pre_tokenizers

from lmscope.cards import component_card, md_text
from lmscope.components import ComponentRef, reference_at
from lmscope.errors import ModelLoadError
from lmscope.models.loading import LoadedModel, load_model
from lmscope.traces.trace import Trace
from lmscope.tracing.engine import run_trace
from lmscope.tracing.live import queries_for
from tests.conftest import TINY_PROMPT, build_tiny
from tests.daemon_client import RpcError
from tests.reliability.conftest import spawn_loaded

PROMPT_ERROR, LMSCOPE_ERROR, MODEL_ERROR = -32002, -32006, -32001

HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "**bold** _em_ `code` [link](javascript:alert(1)) ![i](http://x/y.png)",
    "| a | b |\n|---|---|",
    "# heading\n> quote\n- item",
    "&lt;already&gt; &amp;",
    "\u202eevil\u202c \u2066rtl\u2069 שָׁלוֹם مرحبا",
    "e\u0301\u0302\u0303 Z\u0351\u0352\u0353",
    "ctrl \x00\x07\x1b[31m\x7f \u200b\ufeff",
]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, model_folder):
    client = spawn_loaded(tmp_path_factory.mktemp("hostile"), model_folder)
    yield client
    client.check_notifications()
    assert client.close() == 0


# --- prompts ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prompt", "fragment"),
    [
        ("", "empty prompt"),
        (" \n\t\u00a0 ", "only whitespace"),
        ("mary " * 20_000, "prompt too long"),  # 100k characters, far past the context
        ("mary \ud800 john", "unpaired surrogate (U+D800 at character 5)"),
        ("\udfff", "unpaired surrogate"),
    ],
    ids=["empty", "whitespace", "100k-chars", "lone-high-surrogate", "lone-low-surrogate"],
)
def test_untraceable_prompts_are_refused_with_a_prompt_error(daemon, prompt, fragment):
    with pytest.raises(RpcError) as refused:
        daemon.request("lmscope/trace", {"prompt": prompt})
    assert refused.value.code == PROMPT_ERROR and fragment in refused.value.message
    assert "\n" not in refused.value.message
    assert daemon.request("lmscope/status", {})["state"] == "idle"


@pytest.mark.parametrize("prompt", [*HOSTILE, "x" * 100_000], ids=lambda p: repr(p[:12]))
def test_odd_but_valid_prompts_are_traced_and_given_back_unchanged(daemon, prompt):
    summary = daemon.request("lmscope/trace", {"prompt": prompt})["trace"]
    assert summary["prompt"] == prompt
    assert summary["tokens"][0] == "<bos>"


def hostile_model() -> LoadedModel:
    """A tiny model whose vocabulary *is* the hostile strings, so they reach every card."""
    words = [w for text in HOSTILE for w in text.split()] + ["<bos>", "<unk>"]
    vocab: dict[str, int] = {}
    for word in ["<bos>", "<unk>", *words]:
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", unk_token="<unk>"
    )
    loaded = build_tiny("llama")
    loaded.model.resize_token_embeddings(max(64, len(vocab)))
    return LoadedModel(
        loaded.model, tokenizer, "hostile", "<b>hostile</b>", "folder",
        loaded.content_hash, torch.float32, "cpu",
    )  # fmt: skip


# What a card's Markdown may render to: text structure, never links, images or raw HTML.
SAFE_TAGS = {"p", "strong", "em", "code", "br", "hr", "ul", "ol", "li", "h3", "h4"} | {
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
}


def test_hover_markdown_shows_hostile_tokens_as_inert_text():
    loaded = hostile_model()
    trace = Trace(run_trace(loaded, " ".join(HOSTILE)))
    assert any("<img" in s for s in trace.data.tokens.strings)  # they really are tokens
    refs = ["L1H2", "L0H0", "L1.N3", "model.layers[1].mlp", "model.layers[0].self_attn"]
    for text in refs:
        ref = reference_at(text, 1)[0]
        assert isinstance(ref, ComponentRef)
        live, notes = queries_for(loaded, trace.data)  # the saved trace's own model
        assert live is not None and notes == []
        card = component_card(ref, trace, live=live, handle="t1", threshold=0.01)
        markdown = card["markdown"]
        # Rendered as an editor that allows HTML would: tokens (inside code spans, where `<` is
        # text) make no element of their own, no link and no image.
        html = MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)
        tags = set(re.findall(r"</?([a-zA-Z][a-zA-Z0-9]*)", html))
        assert tags <= SAFE_TAGS, (text, tags - SAFE_TAGS)
        assert "href=" not in html and "src=" not in html.replace("src=x", ""), text
        assert "<strong>bold</strong>" not in html, text  # the token **bold** stays text
        for raw in ("\u202e", "\x1b", "\x00"):  # shown as escapes, never applied
            assert raw not in markdown, (text, raw)
    for text in HOSTILE:
        escaped = md_text(text)
        assert "<" not in escaped and "\n" not in escaped and "\u202e" not in escaped


def test_a_document_range_of_an_unreadable_file_is_a_clear_error(daemon, tmp_path):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\xff\xfe\x00 not text")
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as out:
        out.truncate(17 * 2**20)  # sparse: 17 MiB of nothing
    span = {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 5}}
    for path, fragment in ((binary, "not UTF-8 text"), (huge, "over 16 MiB")):
        with pytest.raises(RpcError) as refused:
            daemon.request("lmscope/trace", {"document": {"uri": path.as_uri(), "range": span}})
        assert refused.value.code == LMSCOPE_ERROR and fragment in refused.value.message


# --- save paths ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/work/proj/traces/../../../etc/x.lmtrace", "may not contain '..'"),
        ("/work/proj/traces/../x.lmtrace", "may not contain '..'"),
        ("/home/user/.bashrc", "saved as a .lmtrace file"),
        ("/work/proj/traces/.lmtrace", "saved as a .lmtrace file"),
        ("/work/proj/nul\x00.lmtrace", "not a valid file path"),
    ],
)
def test_save_paths_that_escape_or_name_other_files_are_refused_before_tracing(
    daemon, path, fragment
):
    with pytest.raises(RpcError) as refused:
        daemon.request("lmscope/trace", {"prompt": TINY_PROMPT, "savePath": path})
    assert refused.value.code == LMSCOPE_ERROR and fragment in refused.value.message
    handle = daemon.request("lmscope/trace", {"prompt": TINY_PROMPT})["trace"]["handle"]
    with pytest.raises(RpcError) as again:
        daemon.request("lmscope/saveTrace", {"handle": handle, "path": path})
    assert again.value.code == LMSCOPE_ERROR and fragment in again.value.message


# --- model specs --------------------------------------------------------------------------------
@pytest.fixture
def outside(tmp_path, model_folder) -> Path:
    """A model folder outside the workspace, as a workspace setting could name it."""
    folder = tmp_path / "elsewhere" / "model"
    shutil.copytree(model_folder, folder)
    return folder


class Payload:
    """Unpickling this runs code: writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_a_pickle_checkpoint_that_runs_code_is_refused_and_never_runs(outside, tmp_path):
    marker = tmp_path / "PWNED"
    for weights in outside.glob("*.safetensors"):
        weights.unlink()
    torch.save({"model.embed_tokens.weight": Payload(marker)}, outside / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as refused:
        load_model(str(outside))
    assert "weights_only=True" in str(refused.value) and "refused the pickle" in str(refused.value)
    assert not marker.exists()


def test_a_plain_pickle_checkpoint_loads_as_weights_only(outside, model_folder):
    reference = load_model(str(model_folder))
    for weights in outside.glob("*.safetensors"):
        weights.unlink()
    torch.save(reference.model.state_dict(), outside / "pytorch_model.bin")
    loaded = load_model(str(outside))
    assert loaded.model.config.num_hidden_layers == 3


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_a_folder_asking_for_its_own_code_never_runs_it(outside, tmp_path, where):
    marker = tmp_path / "PWNED"
    code = f"from pathlib import Path\nPath({str(marker)!r}).write_text('pwned')\n"
    (outside / "evil.py").write_text(code)
    config_path = outside / where
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    key = "AutoModelForCausalLM" if where == "config.json" else "AutoTokenizer"
    config["auto_map"] = {key: ["evil.Evil", None] if key == "AutoTokenizer" else "evil.Evil"}
    if where == "tokenizer_config.json":
        config["tokenizer_class"] = "Evil"
    config_path.write_text(json.dumps(config))
    try:
        loaded = load_model(str(outside))
    except ModelLoadError as error:
        assert "never runs remote code" in str(error)
    else:
        assert loaded.tokenizer is not None  # loaded from tokenizer.json, ignoring auto_map
    assert not marker.exists()


def test_the_daemon_refuses_a_pickle_that_runs_code_with_a_reason(daemon, outside, tmp_path):
    marker = tmp_path / "PWNED"
    for weights in outside.glob("*.safetensors"):
        weights.unlink()
    torch.save({"model.embed_tokens.weight": Payload(marker)}, outside / "pytorch_model.bin")
    with pytest.raises(RpcError) as refused:
        daemon.request("lmscope/loadModel", {"spec": str(outside)})
    assert refused.value.code == MODEL_ERROR and str(outside) in refused.value.message
    assert not marker.exists()
    assert daemon.request("lmscope/status", {})["state"] == "idle"
