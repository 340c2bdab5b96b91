"""Count what a trace would launch on a GPU, per stage, without one.

A GPU trace of a few hundred tokens is bound by kernel launches and host syncs, not arithmetic,
and both can be counted on the CPU: this plays the GPU code paths there (the GPU's chunk budget,
torch loops, torch.sort, the Triton kernel replaced by its torch form and counted as one launch)
and counts, under a torch dispatch mode, every aten op that is not a view (a launch) and every
op that makes the host wait for the device (nonzero, item, unique, ...: a sync). Copies of
results to the host are no-ops on the CPU, so their waits are counted only on a GPU. The results
are hashed so two versions of the code can be compared: equal digests, equal traces.

    .venv/bin/python tools/launch-count/count.py [TOKENS] [--sites STAGE]

The model is Llama-3-8B-shaped in depth, heads and vocabulary (32 layers, 32/8 heads, 128,256
tokens) but 512 wide, random-init, float32: the counts depend on the shape's depth and the
prompt's length, not its width, and it fits this machine. Counts, not times.

With `--device cuda` (tools/gpu-check/run.sh) the real GPU paths run, Triton kernel included,
and the same counts are printed beside what the CUDA profiler saw the trace launch and wait
for: the check that an aten op is a launch, and that the CPU's count is the GPU's (there the
Triton kernel is no aten op: only the profiler sees its launches).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import sys
import traceback

import numpy as np
import torch
import transformers
from torch.utils._python_dispatch import TorchDispatchMode

# Ops after which the host holds a value computed on the device (it waits for the stream).
SYNCS = ("nonzero", "_local_scalar_dense", "item", "unique", "_unique", "equal", "is_nonzero")
NOT_LAUNCHES = ("detach", "lift_fresh")  # metadata only, like views


def _to_the_host(op: str, args: tuple, out: object) -> bool:
    """A copy from a GPU into host memory (`.cpu()`, `.to("cpu")`): the CPU never sees one."""
    copies = op.startswith(("aten._to_copy", "aten.copy_"))
    sources = [a for a in args if isinstance(a, torch.Tensor)]
    outs = [out] if isinstance(out, torch.Tensor) else []
    if op.startswith("aten.copy_"):  # copy_(self, src): self is written
        outs, sources = sources[:1], sources[1:]
    return copies and any(t.is_cuda for t in sources) and any(t.device.type == "cpu" for t in outs)


class Launches(TorchDispatchMode):
    """Per stage: launches, syncs and (for --sites) where in lmscope each launch came from."""

    def __init__(self, sites_of: str | None) -> None:
        super().__init__()
        self.launches: collections.Counter[str] = collections.Counter()
        self.syncs: collections.Counter[str] = collections.Counter()
        self.sites: collections.Counter[tuple[str, int, str]] = collections.Counter()
        self.sites_of = sites_of
        self.pending: collections.Counter[tuple[str, int, str]] = collections.Counter()
        self.paused = False

    def count(self, op: str) -> None:
        self.launches["pending"] += 1
        if op.split(".")[1].startswith(SYNCS):
            self.syncs["pending"] += 1
        if self.sites_of:
            for frame in reversed(traceback.extract_stack()[:-2]):
                if "/lmscope/" in frame.filename:
                    where = frame.filename.split("/lmscope/")[-1]
                    self.pending[where, frame.lineno or 0, op] += 1
                    break

    def mark(self, stage: str) -> None:
        """engine.run_trace's StageTimes: what was counted since the last mark is `stage`'s."""
        self.launches[stage] += self.launches.pop("pending", 0)
        self.syncs[stage] += self.syncs.pop("pending", 0)
        if stage == self.sites_of:
            self.sites.update(self.pending)
        self.pending.clear()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        op = str(func)
        if not self.paused and not func.is_view and op.split(".")[1] not in NOT_LAUNCHES:
            self.count(op)
            if _to_the_host(op, args, out):  # on a GPU: the host waits for the copy
                self.syncs["pending"] += 1
        return out


def play_the_gpu_paths(counter: Launches) -> None:
    """The CPU takes the code paths a GPU would: its budget, torch.sort, and the kernel (one
    launch, computed by its torch form uncounted)."""
    from lmscope.attribution import budget, overshoot, proximity

    class OneLaunchKernel:
        @staticmethod
        def proximities(*args):
            counter.count("aten.triton_kernel")
            counter.paused = True
            try:
                return overshoot.torch_proximities(*args)
            finally:
                counter.paused = False

        @staticmethod
        def is_triton_error(_error: BaseException) -> bool:
            return False

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("lmscope") and hasattr(module, "budget_for"):
            module.budget_for = lambda _device: budget.GPU
    overshoot._kernels = lambda _device: OneLaunchKernel
    proximity._ascending = lambda values: values.sort(dim=1)


NARROW = "narrow-llama3-8b"


def narrow_llama3() -> transformers.PretrainedConfig:
    return transformers.LlamaConfig(
        vocab_size=128256,
        hidden_size=512,
        intermediate_size=1792,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        rms_norm_eps=1e-5,
    )


# What the CUDA profiler records the host calling: a kernel launched, the host waiting.
CUDA_LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
CUDA_WAITS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def profiled(run) -> str:
    """One run under the CUDA profiler: the launches and waits it saw the host make."""
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as profile:
        run()
    events = profile.events()
    calls = collections.Counter(event.name for event in events)
    launches = sum(calls[name] for name in CUDA_LAUNCHES)
    waits = sum(calls[name] for name in CUDA_WAITS)
    copies = calls["cudaMemcpyAsync"]
    on_gpu = sum(event.device_type == torch.autograd.DeviceType.CUDA for event in events)
    return (
        f"CUDA profiler: {launches} kernel launches, {waits} waits, {copies} cudaMemcpyAsync;"
        f" {on_gpu} kernels, copies and fills ran on the GPU"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tokens", nargs="?", type=int, default=200)
    parser.add_argument("--sites", metavar="STAGE", help="list the top launch sites of a stage")
    parser.add_argument("--device", default="cpu", help="cpu (the GPU's paths, played) | cuda")
    parser.add_argument("--shape", default=NARROW, help="a shape of lmscope bench --shape")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    on_cpu = torch.device(args.device).type == "cpu"
    if on_cpu:  # before lmscope reads it: no numba loops, as on a GPU
        os.environ["LMSCOPE_LOOPS"] = "torch"
    from lmscope.benchmark import shapes
    from lmscope.tracing import engine

    counter = Launches(args.sites)
    if on_cpu:
        play_the_gpu_paths(counter)
    shapes.SHAPES[NARROW] = shapes.Shape(
        "Llama-3-8B's depth, heads, vocabulary; 512 wide", narrow_llama3
    )
    text = " ".join(f"w{i % 97}" for i in range(args.tokens))
    loaded = shapes.shaped_model(args.shape, getattr(torch, args.dtype), args.device, text)
    options = engine.TraceOptions(prepend_bos=False)
    engine.run_trace(loaded, text, options)  # caches (bf16 unembedding) built outside the count
    with counter:
        data = engine.run_trace(loaded, text, options, times=counter)
    print(f"tokens {len(data.tokens.ids)}, projections {len(data.projections.kind)}")
    for stage, launches in counter.launches.items():
        print(f"{stage:12s} launches {launches:6d}  syncs {counter.syncs[stage]:4d}")
    print(f"{'total':12s} launches {counter.launches.total():6d}  syncs {counter.syncs.total():4d}")
    for (where, line, op), times in counter.sites.most_common(30):
        print(f"{times:6d}  {where}:{line}  {op}")
    if not on_cpu:
        print(profiled(lambda: engine.run_trace(loaded, text, options)))
    digest = hashlib.sha256()
    for table in (data.projections, data.edges, data.neurons):
        for value in vars(table).values():
            if isinstance(value, np.ndarray):
                digest.update(np.ascontiguousarray(value).tobytes())
    print("digest", digest.hexdigest()[:16])


if __name__ == "__main__":
    main()
