"""The wire shapes of results built from engine objects (schemas in protocol/), and the last
check before anything is written: JSON numbers are finite (`FiniteJson`)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from lsprotocol.types import ResponseErrorMessage
from pygls.exceptions import JsonRpcInternalError

from lmscope.graph import Node

log = logging.getLogger("lmscope.server")


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


class FiniteJson:
    """Mixed into the server's protocol class: every message is checked to be valid JSON before
    it is written, so no NaN or infinity ever reaches the client (JSON has neither; Python's
    json writes `Infinity`, which VS Code's JSON-RPC client cannot parse: it waits forever).

    Results are finite by construction (the trace readers refuse out-of-range values, so every
    sum is bounded); this is the last line of defence. A response that is not valid JSON is
    answered instead with an internal error naming the problem, anything else (a notification,
    a request to the client) is dropped; both are logged, as the bugs they are. Costs one more
    `json.dumps` of each message."""

    def _send_data(self, data: Any) -> None:
        try:
            json.dumps(data, default=self._serialize_message, allow_nan=False)  # type: ignore[attr-defined]
        except ValueError as exc:  # NaN or infinity (or circular data)
            log.error("not sent, not valid JSON (%s): %.300r", exc, data)
            msg_id = getattr(data, "id", None)
            if msg_id is None or hasattr(data, "method"):
                return
            error = JsonRpcInternalError(
                f"internal error: the answer held a number JSON cannot carry ({exc}); "
                "nothing was sent"
            )
            data = ResponseErrorMessage(id=msg_id, error=error.to_response_error())
        super()._send_data(data)  # type: ignore[misc]
