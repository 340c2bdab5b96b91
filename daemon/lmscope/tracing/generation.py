"""Generate tokens after a prompt, before the trace: a plain loop with the KV cache.

Greedy (argmax) without a seed; with one, sampling at temperature 1 from a `torch.Generator`
seeded with it, on the CPU, so a seed gives the same tokens on any device. The loop stops after
`count` tokens or at an end-of-sequence token (kept: it was generated), and checks for
cancellation between tokens. The engine then traces prompt + generation in one pass, so the
generated tokens are traced exactly like prompt tokens (`extra["lmscope.generation"]` says which).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lmscope.models.devices import input_device
from lmscope.models.loading import LoadedModel


@dataclass(frozen=True)
class Generated:
    ids: list[int]  # the generated tokens only
    stopped_at_eos: bool


def generate_tokens(
    loaded: LoadedModel,
    prompt_ids: list[int],
    count: int,
    seed: int | None,
    should_stop: Callable[[], None] | None = None,
    report: Callable[[str, float | None], None] | None = None,
) -> Generated:
    """`count` tokens after `prompt_ids` (fewer at an end-of-sequence token). `should_stop`
    raises to cancel; it runs before each token."""
    eos = eos_ids(loaded)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    device = input_device(loaded.model)
    step_ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # [1, n] then [1, 1]
    past: Any = None
    generated: list[int] = []
    with torch.inference_mode():
        for k in range(count):
            if should_stop is not None:
                should_stop()
            output = loaded.model(input_ids=step_ids, past_key_values=past, use_cache=True)
            logits = output.logits[0, -1].float()  # [V]
            past = output.past_key_values
            if generator is None:
                token = int(logits.argmax())
            else:
                probs = torch.softmax(logits, dim=-1).cpu()  # [V]
                token = int(torch.multinomial(probs, 1, generator=generator))
            generated.append(token)
            if report is not None:
                report(f"generated {k + 1}/{count}", None)
            if token in eos:
                return Generated(generated, True)
            step_ids = torch.tensor([[token]], dtype=torch.long, device=device)
    return Generated(generated, False)


def eos_ids(loaded: LoadedModel) -> set[int]:
    """The end-of-sequence ids: the model's generation config's, and the tokenizer's."""
    found: set[int] = set()
    config = getattr(loaded.model, "generation_config", None)
    for value in (getattr(config, "eos_token_id", None), loaded.tokenizer.eos_token_id):
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, (list, tuple)):
            found.update(int(v) for v in value)
    return found
