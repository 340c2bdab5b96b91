"""On a GPU the detail stages cost kernel launches, not arithmetic (a few hundred rows of width
d are nothing to it, a launch per row is): the projections build their vectors in a fixed
number of batched steps, however many layers and nodes they read. Counted on the CPU with a
dispatch mode: every aten op that is not a view is one launch on a GPU."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lmscope.graph.nodes import NODE_KINDS, RESIDUAL, Node
from lmscope.models.adapter import adapter_for
from lmscope.tracing.capture import capture_layers
from lmscope.tracing.layers import LayerState
from lmscope.tracing.projections import project_nodes
from lmscope.tracing.tokens import tokenize
from tests.conftest import TINY_PROMPT, build_tiny


class CountLaunches(TorchDispatchMode):
    """The aten ops run inside it that would launch work on a GPU (views only make metadata)."""

    def __init__(self) -> None:
        super().__init__()
        self.launches = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.launches += 1
        return func(*args, **(kwargs or {}))


def layer_states(family: str, prompt: str = TINY_PROMPT):
    loaded = build_tiny(family)
    adapter = adapter_for(loaded.model)
    ids = torch.tensor(tokenize(loaded, prompt, True, adapter.context_length))
    captured = []
    with torch.inference_mode(), capture_layers(adapter, captured.append):
        loaded.model(input_ids=ids[None], use_cache=False)
    return adapter, [LayerState.compact(c, torch.float32) for c in captured], len(ids)


def launches(adapter, states, nodes) -> int:
    project_nodes(adapter, states, nodes, 5)  # the first call also caches a bf16 unembedding
    counted = CountLaunches()
    with counted:
        project_nodes(adapter, states, nodes, 5)
    return counted.launches


@pytest.mark.parametrize("family", ["llama", "gptj", "gemma2", "opt"])
def test_projecting_every_layer_takes_no_more_launches_than_projecting_one(family):
    """gptj: parallel blocks (no post-attention residual); gemma2: post-norms; opt: biases."""
    adapter, states, n = layer_states(family)
    assert len(states) >= 2
    one_layer = {Node(kind, 0, p) for kind in NODE_KINDS for p in range(n)}
    every_layer = {Node(kind, layer, p) for kind in NODE_KINDS for layer in range(len(states))
                   for p in range(n)}  # fmt: skip
    many, few = launches(adapter, states, every_layer), launches(adapter, states, one_layer)
    assert many <= few


def test_projecting_a_longer_prompt_s_nodes_takes_no_more_launches():
    """Every residual node of a prompt three times as long: the same batched steps."""
    adapter, states, n = layer_states("llama")
    nodes = {Node(RESIDUAL, layer, p) for layer in range(len(states)) for p in range(n)}
    adapter, long_states, long_n = layer_states("llama", " ".join([TINY_PROMPT] * 3))
    long_nodes = {Node(RESIDUAL, layer, p) for layer in range(len(states)) for p in range(long_n)}
    assert long_n > 2 * n
    longer, shorter = launches(adapter, long_states, long_nodes), launches(adapter, states, nodes)
    assert longer <= shorter


def test_stacked_rows_are_the_rows_each_read_alone():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(5, 4, generator=generator)
    b = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    c = torch.randn(7, 4, generator=generator, dtype=torch.bfloat16)
    picks = [(b, 2), (a, 0), (c, 6), (a, 0), (b, 1)]
    stacked = LayerState.stacked_rows(picks, torch.device("cpu"))
    assert stacked.dtype == torch.float32 and stacked.shape == (len(picks), 4)
    for slot, (tensor, row) in enumerate(picks):
        assert torch.equal(stacked[slot], tensor[row].float())


COUNTER = pathlib.Path(__file__).parent.parent / "tools" / "launch-count" / "count.py"


@pytest.mark.slow
def test_a_trace_on_the_gpu_paths_launches_per_chunk_not_per_row():
    """tools/launch-count/count.py: a trace of a 32-layer Llama-3-shaped model down the GPU's
    code paths. Its projections take a fixed handful of launches and one sync (they took ~1,770
    and ~100); each attention chunk (one per layer at this length) at most two syncs."""
    run = subprocess.run(
        [sys.executable, str(COUNTER), "24"], capture_output=True, text=True, check=True
    )
    counts = {
        stage: (int(launches), int(syncs))
        for stage, launches, syncs in re.findall(r"^(\w+) +launches +(\d+) +syncs +(\d+)$",
                                                 run.stdout, re.MULTILINE)
    }  # fmt: skip
    assert counts.keys() >= {"forward", "attention", "routes", "neurons", "projections", "total"}
    projections_launches, projections_syncs = counts["projections"]
    assert projections_launches <= 100 and projections_syncs <= 1
    assert counts["attention"][1] <= 2 * 32
    assert re.search(r"^digest [0-9a-f]{16}$", run.stdout, re.MULTILINE)
