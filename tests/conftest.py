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
    # Gemma 1: the Llama layout with (1 + γ) RMSNorms, sqrt(d)-scaled embeddings, GeGLU, MQA.
    "gemma": lambda: transformers.GemmaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=8, max_position_embeddings=128,
        initializer_range=0.1,  # at 0.02 the FFN updates are too small to be on any route
        bos_token_id=0, eos_token_id=None, pad_token_id=None,  # Gemma's pad id 0 has a zero row
    ),
    # Gemma 2: output norms on both blocks, soft-capping that bites on this model (its logits
    # reach ~0.9 > 0.5), a sliding layer (window 4 < the prompt) then a global one, biases.
    "gemma2": lambda: transformers.Gemma2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
        query_pre_attn_scalar=8, sliding_window=4, attn_logit_softcapping=2.0,
        final_logit_softcapping=0.5, attention_bias=True, initializer_range=0.1,
        bos_token_id=0, eos_token_id=None, pad_token_id=None,
    ),
    # Gemma 3 (text): Gemma 2's output norms plus QK-norm; a sliding layer, then a global one.
    "gemma3_text": lambda: transformers.Gemma3TextConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
        query_pre_attn_scalar=8, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        bos_token_id=0, eos_token_id=None, pad_token_id=None,
    ),
    # OLMo-2: output norms only (no pre-norms), QK-norm.
    "olmo2": lambda: transformers.Olmo2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=0, eos_token_id=None, pad_token_id=None,
    ),
    # OLMo: non-parametric LayerNorms; clip_qkv small enough to clamp some values.
    "olmo": lambda: transformers.OlmoConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, clip_qkv=0.05,
        bos_token_id=0, eos_token_id=None, pad_token_id=None,
    ),
    # Mixtures of experts (docs/method.md, "Experts"): 4 experts, top-2, experts 32 wide;
    # initializer_range=0.1, else no FFN node reaches a route and the expert tests see none.
    "mixtral": lambda: transformers.MixtralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        num_local_experts=4, num_experts_per_tok=2, initializer_range=0.1,
    ),
    # Qwen2-MoE: layer 0 dense (decoder_sparse_step 2), layer 1 sparse with a sigmoid-gated
    # shared expert; gates not renormalised (norm_topk_prob False, as Qwen1.5-MoE).
    "qwen2_moe": lambda: transformers.Qwen2MoeConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=32,
        shared_expert_intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, num_experts=4,
        num_experts_per_tok=2, decoder_sparse_step=2, norm_topk_prob=False,
        initializer_range=0.1,
    ),
    "qwen3_moe": lambda: transformers.Qwen3MoeConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        max_position_embeddings=128, num_experts=4, num_experts_per_tok=2, norm_topk_prob=True,
        initializer_range=0.1,
    ),
    "olmoe": lambda: transformers.OlmoeConfig(  # QK-norm, and clip_qkv (clamps the values)
        vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
        num_experts=4, num_experts_per_tok=2, clip_qkv=4.0, initializer_range=0.1,
        bos_token_id=0, eos_token_id=None, pad_token_id=None,
    ),
}  # fmt: skip


def _randomize_biases(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Random-init models start with zero biases; make them non-zero so the tests see them."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


# Families whose norm gains build_tiny perturbs. Only these: the other families' tests were
# written against init gains, and new numbers there expose float32 batch-size rounding (a gpt2
# neuron page read live vs stored differs in the last bit) rather than anything about gains.
RANDOM_NORM_GAINS = {"gemma", "gemma2", "gemma3_text", "olmo2"}


def _randomize_norm_weights(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Norm gains start at their identity (1, or 0 in Gemma's 1 + γ); perturb them so that a
    forgotten or wrong gain γ' (final norm, Gemma's offset, the output norms of post-norm
    blocks: docs/method.md asks for non-trivial norm weights) shows in the tests. A few of
    Gemma's 1 + γ come out negative, as real ones can."""
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if "norm" in type(module).__name__.lower() and isinstance(weight, torch.nn.Parameter):
                weight.add_(torch.randn(weight.shape, generator=generator) * 0.5)


def build_tiny(family: str, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    config = TINY_CONFIGS[family]()
    config._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    _randomize_biases(model, torch.Generator().manual_seed(seed))
    if family in RANDOM_NORM_GAINS:
        _randomize_norm_weights(model, torch.Generator().manual_seed(seed + 1))
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
