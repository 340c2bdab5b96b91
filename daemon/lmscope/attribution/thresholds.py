"""The two threshold modes of a route (method.md, "Threshold τ and the route").

renormalise: per target representation, zero every part with c ≤ τ, then divide the survivors
by *that representation's* survivor sum (all zero, never NaN, when nothing survives).
raw: keep a part when c > τ, unchanged.
"""

from __future__ import annotations

import numpy as np


def renormalize(contributions: np.ndarray, threshold: float) -> np.ndarray:
    """contributions: [..., K] (one row per target representation) -> same shape."""
    kept = np.where(contributions > threshold, contributions, 0.0).astype(np.float32)
    total = kept.sum(-1, keepdims=True)
    safe = np.where(total > 0, total, 1.0)
    return (kept / safe).astype(np.float32)


def raw(contributions: np.ndarray, threshold: float) -> np.ndarray:
    """Keep parts above τ unchanged, zero the rest."""
    return np.where(contributions > threshold, contributions, 0.0).astype(np.float32)
