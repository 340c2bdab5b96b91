"""Shared fixtures: tiny random-init models of every supported family, built from a config.

Nothing is downloaded: each model is `AutoModelForCausalLM.from_config` with a few layers and a
width of 32-64, wrapped with a tiny word-level tokenizer, loaded with eager attention.

Two tiers: `make check` runs `pytest -m "not slow"` (unit tests on tiny models, a couple of
minutes); `make test` runs everything. A test is `slow` when it is marked so, needs the
embedded default model (`default_model`), or lives in tests/reliability/ (spawned daemons,
faults, fuzzing).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from lmscope.models.loading import LoadedModel

RELIABILITY = os.path.join(os.path.dirname(__file__), "reliability")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("default_model") or str(item.path).startswith(RELIABILITY):
            item.add_marker(pytest.mark.slow)


WORDS = [
    "when",
    "mary",
    "and",
    "john",
    "went",
    "to",
    "the",
    "store",
    ",",
    "gave",
    "a",
    "drink",
    "the",
    "war",
    "lasted",
    "from",
    "year",
    "17",
    "32",
    "5",
    "+",
    "4",
    "=",
    "9",
    "2",
    "3",
    ".",
]


def tiny_tokenizer(vocab_size: int) -> transformers.PreTrainedTokenizerFast:
    vocab = {"<bos>": 0, "<unk>": 1}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    for extra in range(len(vocab), vocab_size):
        vocab[f"w{extra}"] = extra
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", unk_token="<unk>"
    )


TINY_CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(
        vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=128,
    ),
    "mistral": lambda: transformers.MistralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=128,
    ),
    "qwen2": lambda: transformers.Qwen2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    ),
    "gpt2": lambda: transformers.GPT2Config(
        vocab_size=64, n_embd=32, n_layer=3, n_head=4, n_positions=128,
    ),
    "gpt_neox": lambda: transformers.GPTNeoXConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=128, use_parallel_residual=True,
    ),
    "gpt_neox_sequential": lambda: transformers.GPTNeoXConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=128, use_parallel_residual=False,
    ),
    "opt": lambda: transformers.OPTConfig(  # gelu, not OPT's relu: tests want negative activations
        vocab_size=64, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=128, activation_function="gelu",
    ),
    "gpt_neo": lambda: transformers.GPTNeoConfig(  # a global then a local layer, window 4
        vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
        attention_types=[[["global", "local"], 1]], window_size=4, max_position_embeddings=128,
    ),
    "gptj": lambda: transformers.GPTJConfig(  # rotary on 4 of each head's 8 channels
        vocab_size=64, n_embd=32, n_inner=64, n_layer=2, n_head=4, rotary_dim=4, n_positions=128,
    ),
    "bloom": lambda: transformers.BloomConfig(  # the embedding LayerNorm makes the stream O(1):
        vocab_size=64, hidden_size=32, n_layer=2, n_head=4,  # weights of 0.2 make updates O(1)
        initializer_range=0.2,
    ),
    # The Phi configs use initializer_range=0.1: at the default 0.02, with the biases at 0.2, no
    # attention part of a Phi layer reaches min_threshold and the route tests see no heads.
    # Phi-1/1.5/2: parallel block, partial rotary (half of each head), biases; here also GQA 4/2
    # and the optional per-head q/k LayerNorm (qk_layernorm), which only shape the captured
    # probabilities (one config for both keeps the suite short; the adapter has no branch on it).
    "phi": lambda: transformers.PhiConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        initializer_range=0.1, qk_layernorm=True,
    ),
    # Phi-3/Phi-4: fused qkv (GQA 4/2) and gate_up, no biases; partial rotary as in Phi-4-mini.
    "phi3": lambda: transformers.Phi3Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        original_max_position_embeddings=128, partial_rotary_factor=0.75, initializer_range=0.1,
        bos_token_id=0, eos_token_id=None, pad_token_id=None,
    ),
}  # fmt: skip


def _randomize_biases(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Random-init models start with zero biases; make them non-zero so the tests see them."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


def build_tiny(family: str, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    config = TINY_CONFIGS[family]()
    config._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    _randomize_biases(model, torch.Generator().manual_seed(seed))
    model.eval().requires_grad_(False)
    return LoadedModel(
        model=model,
        tokenizer=tiny_tokenizer(config.vocab_size),
        spec=f"tiny-{family}",
        name=f"tiny-{family}",
        source="folder",
        content_hash="sha256:" + "0" * 64,
        dtype=torch.float32,
        device="cpu",
    )


FAMILIES = list(TINY_CONFIGS)


def save_tiny_folder(family: str, folder):
    """A tiny model of `family` saved with save_pretrained (model + tokenizer) in `folder`."""
    loaded = build_tiny(family)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory):
    """A tiny Llama saved with save_pretrained: what daemon tests load by path."""
    return save_tiny_folder("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def slow_model_folder(tmp_path_factory):
    """A wider random model with a long context: a long prompt traces for seconds."""
    folder = tmp_path_factory.mktemp("slow-llama")
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=256, intermediate_size=512, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=4096,
    )  # fmt: skip
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model.save_pretrained(folder)
    build_tiny("llama").tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(params=FAMILIES)
def tiny_model(request) -> LoadedModel:
    return build_tiny(request.param)


TINY_PROMPT = "when mary and john went to the store , john gave a drink to"
