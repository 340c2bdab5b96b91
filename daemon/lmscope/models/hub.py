"""Read a model and its tokenizer by Hugging Face hub id: from the local hub cache when it holds
the whole model (read as a folder: no network at all), else from the hub after asking it once
whether it is reachable and has the model.

Asking first is what keeps an unreachable hub to one line and a few seconds: left to itself,
huggingface_hub retries a failed metadata request five times with backoff (~25 s) and logs a
warning for each attempt before transformers gives up.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import torch

from lmscope.errors import ModelLoadError
from lmscope.models.devices import Placement
from lmscope.models.sources import (
    TOKENIZER_FILES,
    ProgressFn,
    check_missing,
    finish,
    first_line,
    inspect_folder,
    load_errors,
    load_folder,
    quiet_transformers,
    refuse_remote_code,
    report,
)
from lmscope.models.specs import SPEC_HELP

# How long the one question to the hub may take. Short: it is a HEAD request for config.json,
# and a user without network should not wait. HF_HUB_ETAG_TIMEOUT, huggingface_hub's own
# setting for this request, overrides it.
PROBE_TIMEOUT_S = 5.0

_SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _hub_offline() -> bool:
    """Whether the user asked for no network (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    if any(f.strip().lower() in {"1", "true", "yes", "on"} for f in flags):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def cached_snapshot(hub_id: str) -> Path | None:
    """The local hub cache's snapshot of `hub_id` (its main revision), if it holds the whole
    model: config, tokenizer and every weight file."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, "config.json")
    if not isinstance(found, str):
        return None
    snapshot = Path(found).parent
    # A cached file is a link into the cache's blobs: is_file() is False for a missing blob.
    index = next((snapshot / n for n in _SHARD_INDEXES if (snapshot / n).is_file()), None)
    if index is None:
        complete = any((snapshot / n).is_file() for n in _SINGLE_WEIGHTS)
    else:
        complete = _all_shards_cached(index)
    tokenizer = any((snapshot / n).is_file() for n in TOKENIZER_FILES)
    return snapshot if complete and tokenizer else None


def _all_shards_cached(index: Path) -> bool:
    """Whether every weight file a sharded checkpoint's index names is in its snapshot."""
    try:
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False  # an index that cannot say: let transformers fetch and report
    return bool(shards) and all((index.parent / str(s)).is_file() for s in shards)


def _unreachable(hub_id: str, why: str) -> ModelLoadError:
    return ModelLoadError(
        f"cannot reach the Hugging Face hub to fetch '{hub_id}' ({why}), and it is not in the "
        "local cache (set HF_HUB_OFFLINE=1 to work offline)"
    )


def _not_on_hub(hub_id: str) -> ModelLoadError:
    return ModelLoadError(
        f"unknown model '{hub_id}': not on the Hugging Face hub (if it is gated or private, "
        f"log in with `hf auth login`); {SPEC_HELP}"
    )


def probe(hub_id: str, timeout: float | None = None) -> None:
    """Ask the hub once, without retries, whether `hub_id` has a config.json; raise one
    ModelLoadError line if it cannot be reached or has no such model.

    The request runs on a daemon thread joined with a deadline: a name lookup that hangs
    (no DNS server answering) is not bound by the HTTP timeout.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        RepositoryNotFoundError,
    )

    if timeout is None:
        explicit = "HF_HUB_ETAG_TIMEOUT" in os.environ
        timeout = float(constants.HF_HUB_ETAG_TIMEOUT) if explicit else PROBE_TIMEOUT_S
    try:
        url = hf_hub_url(hub_id, "config.json")
    except HFValidationError as exc:
        raise ModelLoadError(f"unknown model '{hub_id}': {first_line(exc)}; {SPEC_HELP}") from None
    outcome: list[Exception | None] = []

    def ask() -> None:
        try:
            # retry_on_errors=False (the default): one request, and no warning per retry.
            get_hf_file_metadata(url, timeout=timeout)
            outcome.append(None)
        except Exception as exc:  # reported on the calling thread below
            outcome.append(exc)

    worker = threading.Thread(target=ask, name="lmscope-hub-probe", daemon=True)
    with quiet_transformers():
        worker.start()
        worker.join(timeout + 1.0)
    if not outcome:
        raise _unreachable(hub_id, f"no answer within {timeout:g} s")
    error = outcome[0]
    if error is None:
        return
    if isinstance(error, GatedRepoError):
        raise ModelLoadError(
            f"'{hub_id}' is gated on the Hugging Face hub: accept its terms on its hub page, "
            "then log in with `hf auth login`"
        )
    if isinstance(error, RepositoryNotFoundError):
        raise _not_on_hub(hub_id)
    if isinstance(error, EntryNotFoundError):
        raise ModelLoadError(
            f"'{hub_id}' on the Hugging Face hub has no config.json: not a transformers model"
        )
    if isinstance(error, HfHubHTTPError):
        raise ModelLoadError(f"the Hugging Face hub did not serve '{hub_id}': {first_line(error)}")
    # Anything else is the transport failing (name lookup, refused connection, timeout, TLS).
    raise _unreachable(hub_id, first_line(error))


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
        return _unreachable(hub_id, "the connection failed")
    return ModelLoadError(f"cannot load '{hub_id}' from the Hugging Face hub: {first_line(exc)}")


def check_hub(hub_id: str) -> None:
    """What can be known of a hub id without downloading weights: a complete cached snapshot
    that looks like a model, or else (when online) the hub's word that the model exists. One
    ModelLoadError line otherwise."""
    cached = cached_snapshot(hub_id)
    if cached is not None:
        inspect_folder(cached, f"'{hub_id}'")
    elif _hub_offline():
        raise ModelLoadError(
            f"unknown model '{hub_id}': no such folder, and not in the local Hugging Face cache "
            f"(HF_HUB_OFFLINE is set); {SPEC_HELP}"
        )
    else:
        probe(hub_id)


def load_hub(
    hub_id: str, *, dtype: torch.dtype, placement: Placement, progress: ProgressFn | None
) -> tuple[Any, Any, str]:
    """Model, tokenizer and "revision:<commit>" of the hub model `hub_id`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cached = cached_snapshot(hub_id)
    if cached is not None:
        # Read as the folder it is: transformers given a hub id builds request headers even
        # with local_files_only, and huggingface_hub fetches a registry to build them. Nor is
        # the hub asked for a newer revision: the trace names the one it used (`hf download`
        # updates the cache).
        model, tokenizer, _ = load_folder(
            cached, dtype=dtype, placement=placement, progress=progress, label=f"'{hub_id}'"
        )
        return model, tokenizer, f"revision:{cached.name}"
    offline = _hub_offline()
    if not offline:
        report(progress, f"asking the Hugging Face hub for {hub_id}")
        probe(hub_id)
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
