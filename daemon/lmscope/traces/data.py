"""What a trace holds: the plain-numpy record written to and read from `.lmtrace` files.

`TraceData` is everything a saved trace can answer without the model. The engine fills it, the
file module (`traces.lmtrace`) writes and reads it, and `traces.trace.Trace` answers queries
from it. Its wire form is defined once, in `protocol/lmtrace.schema.json`; field names here are
the snake_case of the schema's camelCase keys.

Shapes use: L layers, n prompt tokens (BOS included when prepended), H query heads,
E stored attention edges, F stored FFN nodes, K stored neurons per FFN node, P stored
projections, k tokens per projection list.

Contributions are stored when they can matter for a route at any threshold
`tau >= settings.min_threshold` (see ARCHITECTURE.md, "What a trace stores"):
- every residual and FFN contribution (dense `[L, n]`);
- every attention edge `(layer, target i, source j)` whose summed head contribution exceeds
  `min_threshold`, with the contribution and attention weight of *every* head (so raw-mode edge
  weights and renormalised head survivors are both exact);
- the top neurons of every FFN node reachable from some output token at `min_threshold`;
- the vocabulary projections of every node reachable from some output token at `min_threshold`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmscope.graph.nodes import EMBEDDING, FFN, POST_ATTENTION, RESIDUAL

FORMAT_VERSION = 1

# Projection kinds, as on the wire.
PROJ_LENS = "lens"  # logit lens of a residual node (embedding, post_attention, residual)
PROJ_ATTENTION_UPDATE = "attention_update"  # direct logit attribution of the attention update
PROJ_FFN_UPDATE = "ffn_update"  # direct logit attribution of the FFN update (node M(l,i))
PROJECTION_KINDS = (PROJ_LENS, PROJ_ATTENTION_UPDATE, PROJ_FFN_UPDATE)

# extra["lmscope.logitSoftcap"]: c, when the model soft-caps its final logits as c·tanh(ℓ/c)
# (Gemma 2). Predictions are then capped and every projection is pre-cap (docs/method.md,
# "Soft-capping"); views say so. Absent: the model does not cap.
LOGIT_SOFTCAP_KEY = "lmscope.logitSoftcap"


def logit_softcap(extra: dict[str, Any]) -> float | None:
    """The final-logit cap c recorded in a trace's `extra`, or None (absent, or not a positive
    finite number: an unknown writer's value is ignored, not trusted)."""
    value = extra.get(LOGIT_SOFTCAP_KEY)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 < value < float("inf") else None


def projection_applies(kind: str, node_kind: str, parallel_blocks: bool) -> bool:
    """Whether a node of `node_kind` has a projection of `kind`: residual nodes have a lens; the
    attention update belongs to A(l,i) (sequential) or R(l,i) (parallel, no A node); the FFN
    update to M(l,i)."""
    if kind == PROJ_LENS:
        return node_kind in (EMBEDDING, POST_ATTENTION, RESIDUAL)
    if kind == PROJ_ATTENTION_UPDATE:
        return node_kind == (RESIDUAL if parallel_blocks else POST_ATTENTION)
    return kind == PROJ_FFN_UPDATE and node_kind == FFN


@dataclass
class AdapterFacts:
    """The PEFT/LoRA adapter merged into the base weights before tracing (models/peft_adapters)."""

    spec: str  # the adapter folder, absolute
    name: str  # display name: the folder's name
    content_hash: str  # sha256 of adapter_config.json + adapter_model.safetensors
    peft_type: str  # peft's PeftType: "LORA"
    dora: bool  # weight-decomposed LoRA (use_dora)
    rank: int  # r
    alpha: float  # lora_alpha (the update is scaled by alpha / r, or alpha / sqrt(r) for rsLoRA)
    target_modules: list[str]  # module names (or one regex) the adapter targets
    base_spec: str  # the base model's spec (adapter_config's base_model_name_or_path or --model)
    base_hash: str  # the base model's own content hash


@dataclass
class ModelFacts:
    """Identity and architecture of the traced model.

    With an adapter, spec is what the user asked for (the adapter folder, or the base with
    --adapter), name reads "base + adapter", source is the base's, and content_hash identifies
    the merged weights (base and adapter hashes together; each alone is in `adapter`).
    """

    spec: str  # what the user asked for: "default", a hub id, a folder, a .gguf path
    name: str  # display name, e.g. "SmolLM2-135M-Instruct"
    source: str  # "default" | "hub" | "folder" | "gguf"
    content_hash: str  # sha256 of the weight files (or the hub revision), for reproducibility
    family: str  # adapter family: protocol ModelFamily ("llama", "gpt2", "gpt_neox", "opt", ...)
    model_type: str  # transformers' config.model_type
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_ffn: int
    vocab_size: int
    context_length: int
    parallel_blocks: bool  # attention and FFN read the same residual (GPT-NeoX, GPT-J, Phi)
    adapter: AdapterFacts | None = None  # the merged PEFT adapter; None: the base alone


@dataclass
class Settings:
    """How the trace was made; decides what the file can answer."""

    bos_prepended: bool
    min_threshold: float  # routes are answerable for every tau >= this
    top_neurons: int  # neurons stored per FFN node (K)
    projection_top_k: int  # tokens per projection list (k)
    prediction_top_k: int


@dataclass
class Environment:
    lmscope_version: str
    torch_version: str
    transformers_version: str
    python_version: str
    dtype: str  # "float32" | "float16" | "bfloat16"
    device: str  # "cpu", "cuda:0", or a device-map description
    created: str  # ISO 8601 UTC


@dataclass
class Tokens:
    prompt: str
    ids: np.ndarray  # int32 [n]
    strings: list[str]  # display string of each prompt token (decoded alone), length n


@dataclass
class Predictions:
    """Top next-token predictions of the model at every prompt position."""

    ids: np.ndarray  # int32 [n, k_pred]
    probs: np.ndarray  # float32 [n, k_pred]


@dataclass
class BlockContributions:
    """Dense per-(layer, position) contributions of the block steps.

    Sequential blocks: `residual_attention` is c of x_i at the attention step, `ffn` and
    `residual_ffn` are c of f_i and x~_i at the FFN step.
    Parallel blocks: one step; `residual_attention` is c of x_i, `ffn` is c of f_i, and
    `residual_ffn` is None.
    """

    residual_attention: np.ndarray  # float32 [L, n]
    ffn: np.ndarray  # float32 [L, n]
    residual_ffn: np.ndarray | None  # float32 [L, n], None for parallel blocks


@dataclass
class AttentionEdges:
    """Attention edges j -> i at layer l with summed contribution > min_threshold.

    Sorted by (layer, target, source). Per-head values are unthresholded.
    """

    layer: np.ndarray  # int32 [E]
    target: np.ndarray  # int32 [E]
    source: np.ndarray  # int32 [E]
    head_contributions: np.ndarray  # float32 [E, H]   c_att[l, i, j, h]
    head_attention: np.ndarray  # float32 [E, H]       A[h, i, j]


@dataclass
class NeuronTable:
    """Top neurons of FFN nodes, by contribution at the neuron step (docs/method.md)."""

    layer: np.ndarray  # int32 [F]
    position: np.ndarray  # int32 [F]
    index: np.ndarray  # int32 [F, K] neuron ids, top contribution first
    contribution: np.ndarray  # float32 [F, K]  normalised over all neurons + the rest part
    activation: np.ndarray  # float32 [F, K]    a[i, k], signed
    rest_contribution: np.ndarray  # float32 [F]  c of the non-neuron part (x'_i - f_i)


@dataclass
class Projections:
    """Vocabulary projections of graph nodes.

    Row p describes node (node_kind[p], layer[p], position[p]) projected as kind[p].
    `top_*` are the highest logits, `bottom_*` the lowest (for lens rows too).
    `top_prev_rank[p, r]` is the 0-based rank of `top_ids[p, r]` in the lens of the previous
    residual node (-1 where there is none: embeddings and update projections).
    """

    kind: list[str]  # [P] PROJECTION_KINDS
    node_kind: list[str]  # [P] NODE_KINDS
    layer: np.ndarray  # int32 [P]
    position: np.ndarray  # int32 [P]
    top_ids: np.ndarray  # int32 [P, k]
    top_logits: np.ndarray  # float32 [P, k]
    bottom_ids: np.ndarray  # int32 [P, k]
    bottom_logits: np.ndarray  # float32 [P, k]
    top_prev_rank: np.ndarray  # int32 [P, k]


@dataclass
class TraceData:
    """One traced prompt: everything a `.lmtrace` file holds."""

    model: ModelFacts
    settings: Settings
    environment: Environment
    tokens: Tokens
    predictions: Predictions
    blocks: BlockContributions
    edges: AttentionEdges
    neurons: NeuronTable
    projections: Projections
    # token id -> display string, for every id referenced anywhere in this trace
    vocabulary: dict[int, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # reserved for later format additions

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.ids.shape[0])
