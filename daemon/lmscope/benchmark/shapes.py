"""Random-init models of real shapes, for `lmscope bench --shape`: the benchmark's figures for a
Llama-3-8B or a Llama-2-7B reproduced anywhere, with no weights to fetch.

A shape is the architecture config of a published model (layers, widths, heads, vocabulary,
context), built with transformers' own random initialisation directly on the device and in the
dtype asked for. The tokenizer is synthetic: word-level over the benchmark's text, so prompts
of any length map to varied token ids inside every vocabulary. Speed and memory depend on the
shapes alone; what the routes mean does not matter to a benchmark (random weights give near
uniform attention, so these figures are, if anything, pessimistic for the sparse steps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from lmscope.benchmark.memory import available_bytes
from lmscope.errors import LmscopeError
from lmscope.models.loading import LoadedModel

MEMORY_SHARE = 0.9  # refuse a shape whose weights need more than this share of free memory


@dataclass(frozen=True)
class Shape:
    """A published architecture: what it is, and its config."""

    model: str  # the model it has the shape of
    config: Callable[[], transformers.PretrainedConfig]


def _rope(theta: float) -> dict[str, object]:
    return {"rope_type": "default", "rope_theta": theta}


def _llama(**fields: Any) -> Callable[[], transformers.PretrainedConfig]:
    return lambda: transformers.LlamaConfig(**fields)


SHAPES: dict[str, Shape] = {
    "llama3-8b": Shape(
        "Meta-Llama-3-8B",
        _llama(
            vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
            rope_parameters=_rope(500000.0), rms_norm_eps=1e-5,
        ),
    ),
    "llama2-7b": Shape(
        "Llama-2-7b",
        _llama(
            vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
            rms_norm_eps=1e-5,
        ),
    ),
    "mistral-7b": Shape(
        "Mistral-7B-v0.1",
        lambda: transformers.MistralConfig(
            vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
            sliding_window=4096,
        ),
    ),
    "qwen2.5-7b": Shape(
        "Qwen2.5-7B",
        lambda: transformers.Qwen2Config(
            vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
            num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
            rope_parameters=_rope(1000000.0), rms_norm_eps=1e-6,
        ),
    ),
    "smollm2": Shape(
        "SmolLM2-135M",
        _llama(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
            rope_parameters=_rope(100000.0), rms_norm_eps=1e-5, tie_word_embeddings=True,
        ),
    ),
    "gpt2": Shape(
        "gpt2",
        lambda: transformers.GPT2Config(
            vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024
        ),
    ),
}  # fmt: skip


def parameter_bytes(config: transformers.PretrainedConfig, dtype: torch.dtype) -> int:
    """What the weights of `config` take in `dtype`, without building them."""
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters()) * dtype.itemsize


def shaped_model(name: str, dtype: torch.dtype, device: str, text: str) -> LoadedModel:
    """A random-init model of the shape `name` on `device` in `dtype`, with a word-level
    tokenizer that knows the words of `text` (the benchmark's prompt text)."""
    if name not in SHAPES:
        raise LmscopeError(f"unknown shape {name!r}; the shapes are: {', '.join(SHAPES)}")
    shape = SHAPES[name]
    config = shape.config()
    target = torch.device(device)
    need = parameter_bytes(config, dtype)
    free = available_bytes(target)
    if need > MEMORY_SHARE * free:
        raise LmscopeError(
            f"shape {name} in {str(dtype).removeprefix('torch.')} needs "
            f"{need / 2**30:.1f} GiB of weights; {free / 2**30:.1f} GiB free on {device}"
            " (try --dtype bfloat16, or a GPU with --device cuda)"
        )
    torch.manual_seed(0)
    with target:
        model = transformers.AutoModelForCausalLM.from_config(
            config, attn_implementation="eager", dtype=dtype
        )
    model.eval().requires_grad_(False)
    return LoadedModel(
        model=model,
        tokenizer=word_tokenizer(config.vocab_size, text),
        spec=f"shape:{name}",
        name=f"{shape.model}-shaped (random init)",
        source="folder",
        content_hash="sha256:" + "0" * 64,
        dtype=dtype,
        device=f"{target.type}:0" if target.type == "cuda" and target.index is None else device,
    )


def word_tokenizer(vocab_size: int, text: str) -> transformers.PreTrainedTokenizerFast:
    """Word-level: BOS, UNK, the words of `text`, then filler words up to `vocab_size`."""
    vocab = {"<bos>": 0, "<unk>": 1}
    for word in text.split():
        if len(vocab) < vocab_size:
            vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", unk_token="<unk>"
    )
