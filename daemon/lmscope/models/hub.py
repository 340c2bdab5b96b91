"""Read a model and its tokenizer by Hugging Face hub id (from the local hub cache, or the hub
unless HF_HUB_OFFLINE is set), and name the revision that was read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lmscope.errors import ModelLoadError
from lmscope.models.devices import Placement
from lmscope.models.sources import (
    ProgressFn,
    check_missing,
    finish,
    first_line,
    load_errors,
    quiet_transformers,
    refuse_remote_code,
    report,
)
from lmscope.models.specs import SPEC_HELP


def _hub_offline() -> bool:
    """Whether the user asked for no network (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    if any(f.strip().lower() in {"1", "true", "yes", "on"} for f in flags):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _unreachable(hub_id: str) -> ModelLoadError:
    return ModelLoadError(
        f"cannot reach the Hugging Face hub to fetch '{hub_id}', and it is not in the local cache"
    )


def _not_on_hub(hub_id: str) -> ModelLoadError:
    return ModelLoadError(
        f"unknown model '{hub_id}': not on the Hugging Face hub (if it is gated or private, "
        f"log in with `hf auth login`); {SPEC_HELP}"
    )


def _hub_error(hub_id: str, exc: BaseException, offline: bool) -> ModelLoadError:
    text = str(exc)
    if offline and ("cached" in text or "offline" in text.lower() or "local" in text.lower()):
        return ModelLoadError(
            f"unknown model '{hub_id}': no such folder, and not in the local Hugging Face cache "
            f"(HF_HUB_OFFLINE is set); {SPEC_HELP}"
        )
    if "valid model identifier" in text or "404" in text:
        return _not_on_hub(hub_id)
    if "couldn't connect" in text.lower() or "connection" in text.lower():
        return _unreachable(hub_id)
    return ModelLoadError(f"cannot load '{hub_id}' from the Hugging Face hub: {first_line(exc)}")


def load_hub(
    hub_id: str, *, dtype: torch.dtype, placement: Placement, progress: ProgressFn | None
) -> tuple[Any, Any, str]:
    """Model, tokenizer and "revision:<commit>" of the hub model `hub_id`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    offline = _hub_offline()
    common = {"trust_remote_code": False, "local_files_only": offline}
    with quiet_transformers(progress):
        try:
            report(progress, f"fetching {hub_id}")
            config = AutoConfig.from_pretrained(hub_id, **common)
            refuse_remote_code(f"'{hub_id}'", config)
            report(progress, "loading tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(hub_id, **common)
            report(progress, "loading model")
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                hub_id,
                config=config,
                dtype=dtype,
                attn_implementation="eager",
                **placement.from_pretrained_kwargs(),
                output_loading_info=True,
                **common,
            )
            model, info = loaded
        except ModelLoadError:
            raise
        except load_errors() as exc:
            raise _hub_error(hub_id, exc, offline) from None
    check_missing(info, f"'{hub_id}'")
    return finish(model, dtype, placement, progress), tokenizer, f"revision:{_revision(hub_id)}"


def _revision(hub_id: str) -> str:
    """The commit of the cached snapshot that was loaded: its folder is snapshots/<commit>/."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, "config.json")
    return Path(found).parent.name if isinstance(found, str) else "unknown"
