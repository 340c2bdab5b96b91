"""The dense reference: the same contributions computed the LM-TT way, for the benchmark.

For every layer it materialises the whole decomposition of the attention update, z[i, j, h, :]
= A[h, i, j] · u[h, j, :] for all target/source pairs ([n, n, H, d] float32, what LM-TT builds
per layer), and scores each part with the literal L1 proximity (docs/method.md): no chunking, no
causal skipping, no rewrite. Behind a post-norm (Gemma 2/3, OLMo-2) every part of target i is
multiplied by the output norm's frozen scale D_i, coordinate by coordinate, as the parts the
residual receives (docs/method.md, "Post-norm blocks"). Its only job is to be obviously right
and to cost what the naive method costs, so `lmscope bench` can report both the speed-up and
the agreement.
Shapes: n tokens, d width, H heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmscope.attribution.decompose import LayerContributions, head_source_outputs
from lmscope.attribution.proximity import EPSILON
from lmscope.models.adapter import ArchitectureAdapter
from lmscope.tracing.capture import LayerCapture


def dense_bytes(n_tokens: int, n_heads: int, d_model: int) -> int:
    """Peak scratch of one dense layer: the [n, n, H, d] float32 parts (scored in place)."""
    return n_tokens * n_tokens * n_heads * d_model * 4


def _proximity(whole: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """Literal floored L1 proximity: whole [..., d], parts [..., K, d] -> [..., K]."""
    return (
        (whole.unsqueeze(-2).abs() - (whole.unsqueeze(-2) - parts).abs()).sum(-1).clamp_min(EPSILON)
    )


@dataclass
class DenseLayer:
    """One layer's contributions, dense: every (target, source, head)."""

    heads: torch.Tensor  # [n, n, H]  c_att[i, j, h] (0 where j > i)
    residual_attention: torch.Tensor  # [n]
    ffn: torch.Tensor  # [n]
    residual_ffn: torch.Tensor | None  # [n]


def dense_layer(adapter: ArchitectureAdapter, captured: LayerCapture) -> DenseLayer:
    """The contributions of one captured layer, by materialising [n, n, H, d]."""
    kv_of_head = torch.tensor(
        [adapter.kv_head_of(h) for h in range(adapter.n_heads)], device=captured.values.device
    )
    w_o = adapter.head_output_weights(captured.layer).to(captured.values.device)
    u = head_source_outputs(captured.values, w_o, kv_of_head)  # [H, n, d]
    probs = captured.attn_probs.float()  # [H, n, n]
    n = probs.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool, device=probs.device).tril()  # [i, j]
    # z[i, j, h, :] = A[h, i, j] · u[h, j, :]  -> [n, n, H, d], all of it at once.
    parts = probs.permute(1, 2, 0).unsqueeze(-1) * u.permute(1, 0, 2).unsqueeze(0)
    if captured.attn_scale is not None:  # z'[i, j, h, :] = D_i ⊙ z[i, j, h, :]
        parts.mul_(captured.attn_scale[:, None, None, :])
    if adapter.parallel_blocks:
        whole = captured.resid_out
        others = _proximity(whole, torch.stack([captured.ffn_out, captured.resid_in], dim=1))
    else:
        whole = captured.resid_in + captured.attn_out
        others = _proximity(whole, captured.resid_in.unsqueeze(1))
    # |y| − |y − z| coordinate by coordinate, in place in the parts tensor (one [n, n, H, d]).
    y = whole[:, None, None, :]
    parts.neg_().add_(y).abs_().neg_().add_(y.abs())
    heads = parts.sum(-1).clamp_min(EPSILON)  # [n, n, H]
    del parts
    heads = heads * causal.unsqueeze(-1)
    total = heads.sum((1, 2)) + others.sum(-1)
    heads = heads / total[:, None, None]
    if adapter.parallel_blocks:
        return DenseLayer(heads, others[:, 1] / total, others[:, 0] / total, None)
    mid = whole
    ffn = _proximity(captured.resid_out, torch.stack([captured.ffn_out, mid], dim=1))
    ffn = ffn / ffn.sum(-1, keepdim=True)
    return DenseLayer(heads, others[:, 0] / total, ffn[:, 0], ffn[:, 1])


def max_abs_difference(dense: DenseLayer, sparse: LayerContributions) -> float:
    """Largest |dense − lmscope| over every contribution of the layer. `sparse` must list every
    causal edge (attribute_layer with keep_above < 0)."""
    n = dense.heads.shape[0]
    causal = torch.ones(n, n, dtype=torch.bool, device=dense.heads.device).tril()
    if len(sparse.edge_target) != int(causal.sum()):
        raise ValueError("the lmscope side must list every causal edge (keep_above < 0)")
    gaps = [
        (dense.heads[sparse.edge_target, sparse.edge_source] - sparse.edge_heads).abs().max(),
        (dense.residual_attention - sparse.residual_attention).abs().max(),
        (dense.ffn - sparse.ffn).abs().max(),
    ]
    if dense.residual_ffn is not None and sparse.residual_ffn is not None:
        gaps.append((dense.residual_ffn - sparse.residual_ffn).abs().max())
    return float(torch.stack(gaps).max())
