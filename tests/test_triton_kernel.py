"""The Triton kernel of the overshoot correction (lmscope.attribution.kernels) computes what the
torch form and the numba loop compute, and a trace through it has the same routes.

Where a GPU is present the kernel is compiled and run on it. Without one (CI), Triton's
interpreter runs the same kernel on CPU tensors; it must be switched on (TRITON_INTERPRET=1)
before triton is imported, so `test_the_kernel_is_checked_by_the_interpreter_without_a_gpu`
runs this file again in a child pytest with it set, and requires every check there to pass.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmscope.attribution import loops, overshoot
from lmscope.attribution.proximity import EPSILON, scaled_parts_proximity
from lmscope.tracing.engine import run_trace
from tests.conftest import TINY_PROMPT, build_tiny
from tests.test_compiled_loops import literal, random_case

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu" if INTERPRETED else None

kernel_checks = pytest.mark.skipif(
    KERNEL_DEVICE is None, reason="runs on a GPU, or in the child pytest under the interpreter"
)


@pytest.fixture
def with_kernel(monkeypatch):
    """The kernel runs (LMSCOPE_LOOPS unset) and is the one `overshoot.proximities` picks."""
    monkeypatch.delenv(loops.FORCE_TORCH_ENV, raising=False)
    assert overshoot._kernels(torch.device(KERNEL_DEVICE)) is not None, "triton must import"


def proximity_inputs(seed: int, b: int, groups: int, n: int, used: int, d: int, scaled: bool):
    """Random arguments of `overshoot.proximities` on CPU (epsilon and first_row left out):
    wholes spread over five decades, weights with zeros, negatives and a row of zeros,
    optionally a row scale with gains < 0."""
    g, whole, table = random_case(seed, b=b, groups=groups, n=n, d=d)
    coef = torch.rand(b, groups * used, generator=g) ** 4
    coef[:, ::5] *= -2.0
    coef[min(1, b - 1)] = 0.0
    sign = torch.where(whole >= 0, 1.0, -1.0)
    row_max = torch.ones(b)
    if scaled:
        scale = torch.rand(b, d, generator=g) * 2 - 0.5
        sign, row_max = sign * scale, scale.abs().amax(1)
    linear = torch.einsum("bd,gjd->bgj", sign, table[:, :used]).reshape(b, -1)
    magnitude, order = whole.abs().sort(dim=1)
    part_max = table.abs().amax(-1)[:, :used]
    return table, used, coef, linear, part_max, row_max, magnitude, sign.gather(1, order), order


def on_kernel_device(args):
    return [a.to(KERNEL_DEVICE) if isinstance(a, torch.Tensor) else a for a in args]


@kernel_checks
@pytest.mark.parametrize(
    ("b", "groups", "n", "used", "d", "scaled", "first_row"),
    [
        (9, 3, 17, 11, 48, False, 3),  # fewer parts than a block, a prefix of N, causal
        (5, 2, 150, 150, 37, True, 140),  # several blocks of parts, an odd width, a row scale
        (3, 4, 70, 65, 20, False, None),  # one part past a block, no mask
        (1, 1, 1, 1, 1, True, 0),  # one row, one part, one coordinate
    ],
)
def test_the_kernel_writes_what_the_torch_form_computes(
    with_kernel, b, groups, n, used, d, scaled, first_row
):
    """The proximities max(coef · linear − 2 · correction, ε), 0 past the causal bound."""
    from lmscope.attribution import kernels

    args = (*proximity_inputs(b * 7 + d, b, groups, n, used, d, scaled), EPSILON, first_row)
    expected = overshoot.torch_proximities(*args)
    got = kernels.proximities(*on_kernel_device(args)).cpu()
    assert got.shape == expected.shape
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6 * scale)
    zero_row = got[min(1, b - 1)].view(groups, used)  # zero weights: floored, or masked
    if first_row is None:
        assert (zero_row == EPSILON).all()
    else:
        sources = torch.arange(used)
        read = sources <= first_row + min(1, b - 1)
        assert (zero_row[:, read] == EPSILON).all() and (zero_row[:, ~read] == 0).all()


@kernel_checks
@pytest.mark.parametrize("d", [1, 37, 64, 65, 192])
def test_the_kernel_counts_every_prefix_of_a_row(with_kernel, d):
    """A program corrects the coordinates whose |y| lies below its parts' largest reach:
    one part per group, with reaches falling on, between, below and past every |y| of a row
    (so every count from 0 to d, and the ends of the kernel's two-level count, are met). No
    linear term and no floor: the kernel writes −2 · the correction itself."""
    from lmscope.attribution import kernels

    magnitude = torch.arange(d, dtype=torch.float32)[None]  # [1, d] ascending |y|
    reach = torch.cat([torch.arange(d + 1) - 0.5, torch.arange(d) + 0.0, torch.tensor([1e30])])
    groups = len(reach)
    # part g is reach_g in every coordinate: it overshoots exactly the |y| below its reach
    table = reach[:, None, None].expand(groups, 1, d).contiguous()
    order = torch.randperm(d, generator=torch.Generator().manual_seed(d))[None]
    args = (table, 1, torch.ones(1, groups), torch.zeros(1, groups), reach[:, None])
    args = (*args, torch.ones(1), magnitude, torch.ones(1, d), order, float("-inf"))
    expected = overshoot.torch_proximities(*args)
    got = kernels.proximities(*on_kernel_device(args)).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    counts = torch.searchsorted(magnitude[0], reach.clamp_max(1e30))
    assert set(counts.tolist()) == set(range(d + 1))  # every prefix length was met


@kernel_checks
def test_the_kernel_reads_a_strided_table_in_place(with_kernel):
    """The neuron step passes W_out transposed, a view: the kernel follows its strides."""
    from lmscope.attribution import kernels

    table, *rest = proximity_inputs(3, 6, 1, 90, 90, 40, False)
    strided = table[0].t().contiguous().t().unsqueeze(0)  # same values, strides (1, d)
    assert strided.stride() != table.stride()
    args = (*rest, EPSILON)
    got = kernels.proximities(strided.to(KERNEL_DEVICE), *on_kernel_device(args)).cpu()
    torch.testing.assert_close(got, overshoot.torch_proximities(table, *args))


@kernel_checks
def test_proximities_through_the_kernel_equal_the_literal_sum(with_kernel):
    _, whole, table = random_case(11, b=12, groups=3, n=30, d=64)
    coef = torch.rand(12, 3 * 30) ** 3
    scale = torch.rand(12, 64) * 2 - 0.5
    device = KERNEL_DEVICE
    got = scaled_parts_proximity(
        whole.to(device), coef.to(device), table.to(device), scale.to(device), used=30
    )
    expected = literal(whole, coef, table.reshape(-1, 64), scale)
    norm = whole.abs().sum(-1, keepdim=True).double()
    assert ((got.cpu().double() - expected).abs() / norm).max() < 1e-6
    assert got.min() >= torch.tensor(EPSILON)  # floored in float32


@kernel_checks
def test_a_kernel_triton_cannot_build_falls_back_to_the_torch_form(with_kernel, monkeypatch):
    from triton.errors import TritonError

    from lmscope.attribution import kernels

    def broken(*_args):
        raise TritonError("no such instruction on this GPU")

    monkeypatch.setattr(kernels, "proximities", broken)
    monkeypatch.setattr(overshoot, "_triton_missing", False)  # restored after the test
    args = (*proximity_inputs(5, 4, 2, 20, 20, 16, False), EPSILON, 2)
    with pytest.warns(RuntimeWarning, match="using the torch form"):
        got = overshoot.proximities(*on_kernel_device(args)).cpu()
    torch.testing.assert_close(got, overshoot.torch_proximities(*args))
    assert overshoot._kernels(torch.device(KERNEL_DEVICE)) is None  # not tried again


@kernel_checks
def test_the_block_sweep_of_the_gpu_check_runs_and_agrees(with_kernel):
    """tools/gpu-check/kernel_sweep.py (timed on a GPU to tune the block shapes) builds a
    chunk of a layer and gets the shipped configuration's proximities from every other."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "tools" / "gpu-check" / "kernel_sweep.py"
    spec = importlib.util.spec_from_file_location("kernel_sweep", path)
    assert spec is not None and spec.loader is not None
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    grid = [(32, 8, 4), (128, 32, 2)]
    rows = sweep.sweep([40], sweep.TINY, grid, KERNEL_DEVICE, repeats=1, rows_cap=3)
    assert len(rows) == 2 and all(row["same"] and row["rows"] == 3 for row in rows)
    args = sweep.chunk_inputs(3, 40, 2, 24, KERNEL_DEVICE)
    got = sweep.launch(args, 64, 16, 4).cpu()  # what the trace's own launch writes
    from lmscope.attribution import kernels

    table, used, coef, linear, part_max, row_max, magnitude, sign, order, first_row = args
    expected = kernels.proximities(
        table, used, coef, linear, part_max, row_max, magnitude, sign, order, EPSILON, first_row
    )
    assert torch.equal(got, expected.cpu())


@kernel_checks
@pytest.mark.parametrize("family", ["llama", "gemma2", "mixtral"])
def test_a_trace_through_the_kernel_has_the_routes_of_the_cpu_loops(family, monkeypatch):
    """The CPU loops' trace against one whose correction runs in the kernel (under the
    interpreter the trace stays on the CPU, so only the correction differs)."""
    monkeypatch.setattr(overshoot, "_kernels", lambda device: None)
    reference = run_trace(build_tiny(family), TINY_PROMPT)
    monkeypatch.undo()
    monkeypatch.delenv(loops.FORCE_TORCH_ENV, raising=False)
    loaded = build_tiny(family)
    if KERNEL_DEVICE == "cuda":
        import dataclasses

        loaded.model.to("cuda")
        loaded = dataclasses.replace(loaded, device="cuda:0")
    from lmscope.attribution import kernels

    layouts: list[tuple[int, tuple[int, ...]]] = []
    proximities = kernels.proximities

    def spy(table, *args):
        layouts.append((table.shape[0], table.stride()))
        return proximities(table, *args)

    monkeypatch.setattr(kernels, "proximities", spy)
    traced = run_trace(loaded, TINY_PROMPT)
    # the attention step's tables (one group per head) are laid out sources-fastest, so a
    # program's loads at one coordinate are adjacent
    heads = [
        stride for groups, stride in layouts if groups == loaded.model.config.num_attention_heads
    ]
    assert heads and all(stride[1] == 1 for stride in heads)
    reference_edges = set(
        zip(reference.edges.layer, reference.edges.target, reference.edges.source)
    )
    traced_edges = set(zip(traced.edges.layer, traced.edges.target, traced.edges.source))
    if KERNEL_DEVICE == "cpu":  # the same forward: the same edges, contributions to rounding
        assert traced_edges == reference_edges
        np.testing.assert_allclose(
            traced.edges.head_contributions, reference.edges.head_contributions, atol=1e-6
        )
    else:  # a GPU's forward rounds differently: edges right at the threshold may differ
        assert len(traced_edges & reference_edges) >= 0.95 * len(reference_edges)
    np.testing.assert_allclose(traced.blocks.ffn, reference.blocks.ffn, atol=1e-4)


@pytest.mark.skipif(INTERPRETED, reason="the interpreter has no compiler")
@pytest.mark.parametrize("capability", [80, 90])  # A100, H100/H200
@pytest.mark.parametrize("causal", [True, False])  # the attention step, the neuron step
def test_the_kernel_compiles_to_a_cuda_binary_without_a_gpu(capability, causal):
    """Triton's own compiler (the wheel carries ptxas) builds the kernel for a GPU that is not
    here: what the interpreter cannot check (types of loop-carried values, lowering) is."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from lmscope.attribution import kernels

    pointers = ("table_ptr", "coef_ptr", "linear_ptr", "part_max_ptr", "row_max_ptr")
    signature = {name: "*fp32" for name in (*pointers, "mag_ptr", "sign_ptr", "out_ptr")}
    signature.update({"order_ptr": "*i64", "used": "i32", "width": "i32"})
    signature.update({"epsilon": "fp32", "first_row": "i32"})
    signature.update({f"table_stride_{axis}": "i64" for axis in "gnd"})
    constants = {
        "CAUSAL": causal,
        "SAMPLES": kernels.SAMPLES,
        "STRIDE": kernels.sample_stride(4096),
        "BLOCK_J": kernels.BLOCK_J,
        "BLOCK_Q": kernels.BLOCK_Q,
    }
    signature.update(dict.fromkeys(constants, "constexpr"))
    source = ASTSource(fn=kernels._proximities, signature=signature, constexprs=constants)
    compiled = triton.compile(
        source, target=GPUTarget("cuda", capability, 32), options={"enable_fp_fusion": False}
    )
    assert compiled.asm["cubin"]  # a binary for that architecture
    assert ".entry _proximity_kernel" in compiled.asm["ptx"]


@pytest.mark.skipif(INTERPRETED, reason="this is the parent run")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the checks themselves")
def test_the_kernel_is_checked_by_the_interpreter_without_a_gpu():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop(loops.FORCE_TORCH_ENV, None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__))],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # Every kernel check ran and passed; only this test and the GPU-only ones are skipped.
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) == 16, summary
    assert "failed" not in summary and "error" not in summary, summary
