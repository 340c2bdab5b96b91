"""The wire shapes of results built from engine objects (schemas in protocol/)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lmscope.graph import Node


def node_wire(node: Node) -> dict[str, Any]:
    return {"kind": node.kind, "layer": node.layer, "position": node.position}


def model_wire(loaded: Any) -> dict[str, Any]:
    """A `LoadedModel` as the protocol's ModelInfo; the model describes itself."""
    facts = loaded.facts
    mapped = {"deviceMap": dict(loaded.device_map)} if loaded.device_map else {}
    return {
        **mapped,
        "spec": facts.spec,
        "name": facts.name,
        "source": facts.source,
        "contentHash": facts.content_hash,
        "family": facts.family,
        "modelType": facts.model_type,
        "nLayers": facts.n_layers,
        "nHeads": facts.n_heads,
        "nKvHeads": facts.n_kv_heads,
        "dModel": facts.d_model,
        "dHead": facts.d_head,
        "dFfn": facts.d_ffn,
        "vocabSize": facts.vocab_size,
        "contextLength": facts.context_length,
        "parallelBlocks": facts.parallel_blocks,
        "device": loaded.device,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "parameterBytes": loaded.parameter_bytes,
    }


def summary_wire(handle: str, trace: Any, path: Path | None) -> dict[str, Any]:
    data = trace.data
    return {
        "handle": handle,
        "prompt": data.tokens.prompt,
        "tokens": list(data.tokens.strings),
        "nLayers": data.model.n_layers,
        "nHeads": data.model.n_heads,
        "dFfn": data.model.d_ffn,
        "parallelBlocks": data.model.parallel_blocks,
        "minThreshold": data.settings.min_threshold,
        "model": {
            "name": data.model.name,
            "spec": data.model.spec,
            "contentHash": data.model.content_hash,
        },
        "predictions": [
            {"token": data.vocabulary.get(int(i), ""), "id": int(i), "score": float(p)}
            for i, p in zip(data.predictions.ids[-1], data.predictions.probs[-1])
        ],
        "live": trace.live is not None,
        "path": None if path is None else str(path),
    }


def finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0
