"""What text can be traced: the one rule every entry point applies before any work.

The command line and the API check a prompt before they load a model, the daemon before it
queues a trace, and the engine again before it tokenizes, all with `check_prompt`, so a prompt
is refused the same way, with the same message, everywhere and at once.
"""

from __future__ import annotations

from lmscope.errors import PromptError


def check_prompt(prompt: str) -> None:
    """Refuse text no model can trace: empty, only whitespace or NULs (nothing would be traced
    but the BOS token), or not valid Unicode (an unpaired surrogate, which JSON's `\\ud800`
    escapes can carry). The context length is the engine's check (it needs the tokenizer)."""
    if not isinstance(prompt, str):
        raise PromptError(f"a prompt is text, not {type(prompt).__name__}")
    if not prompt:
        raise PromptError("empty prompt: there is nothing to trace")
    if not prompt.replace("\x00", " ").strip():
        raise PromptError("the prompt is only whitespace: there is nothing to trace")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PromptError(
            f"the prompt holds an unpaired surrogate (U+{ord(prompt[exc.start]):04X} at "
            f"character {exc.start}): it is not valid Unicode text"
        ) from None
