"""Chats and generations on tiny models: a conversation is traced through its chat template with
the template's tokens marked, generated tokens are the model's own continuation (greedy: the
argmax of plain forward passes; seeded: reproducible), and every length counts against the
model's context (never a sliding window)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import lmscope
from lmscope.chats import (
    CHAT_KEY,
    GENERATION_KEY,
    MAX_GENERATE,
    MAX_MESSAGES,
    MAX_SEED,
    TEMPLATE,
    check_messages,
)
from lmscope.errors import PromptError, TraceFileError
from lmscope.models.loading import LoadedModel
from lmscope.traces.lmtrace import read_trace, write_trace
from lmscope.tracing import chat as chat_module
from lmscope.tracing.capture import run_forward
from tests.conftest import build_tiny, tiny_tokenizer

PROTOCOL = Path(__file__).resolve().parent.parent / "protocol"
# A template in the shape of real ones: a BOS-like special token opens every turn, then the
# role, then the content; the generation prompt opens the assistant's turn.
TEMPLATE_JINJA = (
    "{% for m in messages %}<bos> {{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<bos> assistant :{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "the war lasted"},
    {"role": "user", "content": "when mary and john went to the store , john gave a drink to"},
]


@pytest.fixture
def chat_llama() -> LoadedModel:
    loaded = build_tiny("llama")
    loaded.tokenizer.chat_template = TEMPLATE_JINJA
    return loaded


def test_a_chat_traces_the_template_ids_and_marks_what_the_template_added(chat_llama):
    traced = lmscope.trace(messages=CONVERSATION, model=chat_llama)
    expected = chat_llama.tokenizer.apply_chat_template(
        CONVERSATION, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert traced.data.tokens.ids.tolist() == list(expected)
    chat = traced.chat
    assert chat is not None and chat.exact
    words = traced.tokens
    for position, (word, message) in enumerate(zip(words, chat.token_message)):
        in_content = message != TEMPLATE
        if in_content:
            assert word in CONVERSATION[message]["content"].split(), (position, word)
        else:  # role headers (unknown words here), separators and turn openers
            assert word in ("<bos>", "<unk>", ":"), (position, word)
    assert chat.token_message.count(0) == 3 and chat.token_message.count(1) == 14
    assert words[0] == "<bos>" and words.count("<bos>") == 3  # no second BOS prepended
    assert not traced.data.settings.bos_prepended
    assert [m.content for m in chat.messages] == [m["content"] for m in CONVERSATION]


def test_a_template_without_a_bos_gets_one_marked_as_added(chat_llama):
    chat_llama.tokenizer.chat_template = TEMPLATE_JINJA.replace("<bos> ", "")
    traced = lmscope.trace(messages=CONVERSATION[1:], model=chat_llama)
    assert traced.tokens[0] == "<bos>" and traced.data.settings.bos_prepended
    assert traced.chat is not None and traced.chat.token_message[:3] == [
        TEMPLATE,
        TEMPLATE,
        TEMPLATE,
    ]
    unprepended = lmscope.trace(messages=CONVERSATION[1:], model=chat_llama, prepend_bos=False)
    assert unprepended.n_tokens == traced.n_tokens - 1


def test_without_offsets_the_mask_is_decoded_and_said_to_be_approximate(chat_llama, monkeypatch):
    exact = lmscope.trace(messages=CONVERSATION, model=chat_llama).chat
    monkeypatch.setattr(chat_module, "_offsets", lambda *_: None)
    approximate = lmscope.trace(messages=CONVERSATION, model=chat_llama).chat
    assert exact is not None and approximate is not None
    assert approximate.exact is False
    assert approximate.token_message == exact.token_message


def test_a_model_without_a_chat_template_is_refused_naming_the_model():
    with pytest.raises(PromptError, match="model tiny-llama has no chat template"):
        lmscope.trace(messages=CONVERSATION, model=build_tiny("llama"))


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([], "messages is empty"),
        ("hello", "must be a list"),
        ([{"role": "user"}], "message 1 has no 'content'"),
        ([{"role": "robot", "content": "hi"}], "role must be one of system, user, assistant"),
        ([{"role": "user", "content": 3}], "message 1: content must be text, not a number"),
        ([{"role": "user", "content": "hi"}, {"role": "user", "content": " "}], "message 2"),
        ([{"role": "user", "content": "hi", "name": "x"}], "unknown field 'name'"),
        (["hi"], "message 1 must be an object"),
    ],
)
def test_bad_messages_are_refused_with_the_message_and_the_problem(messages, fragment):
    with pytest.raises(PromptError, match=fragment):
        check_messages(messages)


def test_a_trace_takes_exactly_one_of_prompt_and_messages(chat_llama):
    with pytest.raises(PromptError, match="exactly one of prompt"):
        lmscope.trace("when mary", chat_llama, messages=CONVERSATION)
    with pytest.raises(PromptError, match="exactly one of prompt"):
        lmscope.trace(model=chat_llama)


def test_chat_and_generation_records_survive_a_save_and_are_checked_on_read(chat_llama, tmp_path):
    traced = lmscope.trace(messages=CONVERSATION, model=chat_llama, generate=2)
    loaded = lmscope.load_trace(traced.save(tmp_path / "chat.lmtrace"))
    assert loaded.chat == traced.chat and loaded.generation == traced.generation
    # Generated tokens lie in no message.
    assert loaded.chat is not None and loaded.chat.token_message[-2:] == [TEMPLATE, TEMPLATE]
    broken = read_trace(tmp_path / "chat.lmtrace")
    broken.extra[CHAT_KEY]["tokenMessage"] = [0]
    with pytest.raises(TraceFileError, match=r"extra\.lmscope\.chat: tokenMessage must list"):
        write_trace(broken, tmp_path / "broken.lmtrace")


# --- generation --------------------------------------------------------------------------------
def _argmax_continuation(loaded: LoadedModel, ids: list[int], count: int) -> list[int]:
    """What greedy generation must give: the argmax of a full forward pass, token by token."""
    ids = list(ids)
    for _ in range(count):
        ids.append(int(run_forward(loaded.model, torch.tensor(ids)).argmax(dim=-1)[-1]))
    return ids


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_greedy_generation_is_the_models_argmax_continuation_traced_in_one_pass(family):
    loaded = build_tiny(family)
    prompt = "when mary and john went to the store"
    traced = lmscope.trace(prompt, loaded, generate=4)
    prompt_ids = [loaded.tokenizer.bos_token_id, *loaded.tokenizer.encode(prompt)]
    assert traced.data.tokens.ids.tolist() == _argmax_continuation(loaded, prompt_ids, 4)
    generation = traced.generation
    assert generation is not None
    assert (generation.prompt_tokens, generation.generated, generation.seed) == (9, 4, None)
    assert not generation.stopped_at_eos
    # Position P+k-1 predicted generated token k, and its top prediction is that token (greedy).
    for k in range(4):
        position = generation.prompt_tokens + k - 1
        assert generation.predicted_index(position) == k
        assert traced.data.predictions.ids[position, 0] == traced.data.tokens.ids[position + 1]
    assert generation.predicted_index(generation.prompt_tokens + 3) is None


def test_a_seed_samples_reproducibly_and_is_recorded():
    loaded = build_tiny("llama")
    first = lmscope.trace("when mary", loaded, generate=6, seed=7)
    again = lmscope.trace("when mary", loaded, generate=6, seed=7)
    other = lmscope.trace("when mary", loaded, generate=6, seed=8)
    assert first.data.tokens.ids.tolist() == again.data.tokens.ids.tolist()
    assert first.data.tokens.ids.tolist() != other.data.tokens.ids.tolist()
    assert first.generation is not None and first.generation.seed == 7


def test_generation_stops_at_the_end_of_sequence_token_and_says_so():
    loaded = build_tiny("llama")
    greedy = _argmax_continuation(loaded, [0, *loaded.tokenizer.encode("when mary")], 5)
    eos = greedy[4]  # the second generated token
    if eos in greedy[3:4]:
        pytest.skip("the tiny model repeats itself: no distinct end token to choose")
    loaded.model.generation_config.eos_token_id = eos
    traced = lmscope.trace("when mary", loaded, generate=5)
    assert traced.data.tokens.ids.tolist() == greedy[:5]
    assert traced.generation is not None
    assert traced.generation.stopped_at_eos and traced.generation.generated == 2
    assert traced.data.extra[GENERATION_KEY]["requested"] == 5


def test_a_generation_past_the_context_is_refused_with_the_counts():
    loaded = build_tiny("llama")  # context 128
    prompt = " ".join(["mary"] * 120)
    with pytest.raises(PromptError) as refused:
        lmscope.trace(prompt, loaded, generate=10)
    assert str(refused.value) == (
        "prompt too long to generate 10 tokens: 121 prompt tokens + 10 = 131, "
        "but the model's context is 128 tokens"
    )
    with pytest.raises(PromptError, match=r"generate must be a whole number in 0\.\.1024"):
        lmscope.trace("when mary", loaded, generate=-1)


def test_a_chat_past_the_context_is_refused_with_its_token_count(chat_llama):
    long = [{"role": "user", "content": " ".join(["mary"] * 130)}]
    with pytest.raises(PromptError, match="prompt too long: 136 tokens, but the model's context"):
        lmscope.trace(messages=long, model=chat_llama)


# --- long inputs -------------------------------------------------------------------------------
def test_a_sliding_window_limits_attention_not_the_prompt_length():
    torch.manual_seed(0)
    config = transformers.MistralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=128,
        sliding_window=4,
    )  # fmt: skip
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    loaded = LoadedModel(
        model=model.eval().requires_grad_(False),
        tokenizer=tiny_tokenizer(64),
        spec="tiny-mistral-window",
        name="tiny-mistral-window",
        source="folder",
        content_hash="sha256:" + "0" * 64,
        dtype=torch.float32,
        device="cpu",
    )
    traced = lmscope.trace("when mary and john went to the store , john gave", loaded)
    n = traced.n_tokens
    assert n == 12 > config.sliding_window
    distance = np.subtract.outer(np.arange(n), np.arange(n))  # [n, n]: query - key
    for layer in range(2):
        pattern = traced.attention_pattern(layer, 0)  # [n, n]
        assert np.all(pattern[distance >= 4] == 0)
        assert np.all(pattern[(distance >= 0) & (distance < 4)] > 0)
    edges = traced.data.edges
    assert np.all(edges.target - edges.source < 4)


def test_a_card_on_the_route_of_a_generated_token_names_that_token():
    from lmscope.cards import component_card
    from lmscope.components import ComponentRef

    traced = lmscope.trace("when mary and john", build_tiny("llama"), generate=3)
    generation = traced.generation
    assert generation is not None
    position = generation.prompt_tokens + 1  # predicted generated token 3 (1-based)
    card = component_card(ComponentRef("head", 0, 0), traced, token=position, threshold=0.01)
    third = traced.tokens[position + 1]
    assert f"route of the prediction of generated token 3 “{third}”" in card["notes"]
    last = component_card(ComponentRef("head", 0, 0), traced, token=-1, threshold=0.01)
    assert not any("generated token" in note for note in last["notes"])


def test_the_svg_of_a_chat_marks_the_template_tokens_only(chat_llama):
    from lmscope.render.svg import trace_route_svg

    traced = lmscope.trace(messages=CONVERSATION[1:], model=chat_llama, generate=1)
    text = trace_route_svg(traced, traced.route(-1, 0.04))
    template = {int(p) for p in re.findall(r'class="token template" data-position="(\d+)"', text)}
    assert template == {0, 1, 2, 17, 18, 19}  # turn opener, role, ":", generation prompt
    assert text.count("added by the chat template") == 6


def test_the_protocol_bounds_are_the_engines():
    schema = json.loads((PROTOCOL / "schemas" / "trace.params.schema.json").read_text())
    assert schema["properties"]["generate"]["maximum"] == MAX_GENERATE
    assert schema["properties"]["seed"]["maximum"] == MAX_SEED
    assert schema["properties"]["messages"]["maxItems"] == MAX_MESSAGES
