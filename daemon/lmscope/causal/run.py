"""One ablation, end to end: the plain pass, the reference pass a mean or patch needs, the
ablated pass, and what changed for the traced prediction (`traces.causal.AblationResult`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmscope.causal.ablate import Plan, ablated_logits, forward_logits, record
from lmscope.causal.targets import AblationError, AblationKind, Target, check_targets
from lmscope.models.adapter import ArchitectureAdapter
from lmscope.traces.causal import AblationResult, TokenProb

TOP = 8  # new top tokens reported


def top_tokens(
    logprobs: torch.Tensor, token_text: Callable[[int], str], k: int = TOP
) -> list[TokenProb]:
    """The k most probable tokens of log-probabilities [V]."""
    values, ids = logprobs.topk(k)
    return [TokenProb(token_text(int(i)), int(i), float(v.exp())) for v, i in zip(values, ids)]


def run_ablation(
    adapter: ArchitectureAdapter,
    ids: list[int],
    targets: list[Target],
    kind: AblationKind,
    position: int,
    token_id: int,
    token_text: Callable[[int], str],
    patch_ids: list[int] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> AblationResult:
    """Ablate `targets` on prompt `ids` and report log p(token_id) at `position` before and
    after. `patch_ids` (kind "patch" only) is the other prompt, of the same token count."""
    check_targets(targets, adapter.n_layers, adapter.n_heads, len(ids), adapter.d_ffn)
    if kind == "patch":
        if patch_ids is None:
            raise AblationError("a patch ablation needs a second prompt to patch from")
        if len(patch_ids) != len(ids):
            raise AblationError(
                f"the patch prompt has {len(patch_ids)} tokens, the traced prompt {len(ids)}: "
                "activation patching needs the same token count"
            )
    elif patch_ids is not None:
        raise AblationError(f"a patch prompt is only used by kind 'patch', not {kind!r}")
    plan = Plan.of_targets(targets, len(ids), adapter.n_heads)
    clean = torch.log_softmax(forward_logits(adapter.model, ids)[position], -1)
    reference = None
    if kind == "patch" and patch_ids is not None:
        reference = record(adapter, patch_ids, plan, patch=True)
    elif kind == "mean":
        reference = record(adapter, ids, plan, patch=False)
    logits = ablated_logits(adapter, ids, plan, kind, reference, should_cancel)
    ablated = torch.log_softmax(logits[position], -1)
    return AblationResult(
        targets=[target.label() for target in targets],
        kind=kind,
        position=position,
        token=token_text(token_id),
        token_id=token_id,
        logprob=float(clean[token_id]),
        ablated_logprob=float(ablated[token_id]),
        top=top_tokens(ablated, token_text),
    )
