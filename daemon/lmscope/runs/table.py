"""Read a run folder without torch: `load_run(folder) -> RunTable`.

The run view of the editor, the hover cards' run line, `lmscope run-summary` and
`lmscope.load_run` all read runs through here. It reads a finished run and one still going (or
killed) alike, and never writes (`runs.folder`: only the runner compacts). Statistics use numpy
on the Parquet columns; pandas is optional (`RunTable.to_pandas`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmscope.errors import LmscopeError
from lmscope.runs.folder import RunError, RunFolder
from lmscope.runs.parquet import COMPONENTS, NEURONS, PROMPTS

HEAD_STATS = ("mean_share", "on_route_004", "on_route_001", "on_route_010")
TOP_PROMPTS = 10


@dataclass(frozen=True)
class ComponentStats:
    """One head or FFN block over the prompts of a run (or of one tag)."""

    n_prompts: int
    on_route_fraction: float  # at τ 0.04
    mean_share: float
    std_share: float  # population std over the prompts
    top_prompts: list[tuple[int, str, float, str]]  # (index, id, share, trace relpath), top 10
    quartiles: tuple[float, float, float] = (0.0, 0.0, 0.0)  # 25th, 50th, 75th percentiles


def load_run(folder: str | Path) -> RunTable:
    """Open a run folder; RunError (one line) when it is missing, corrupt or newer."""
    run = RunFolder(Path(folder))
    info = run.read_info()
    try:
        tables = run.read_tables()
    except RunError:
        raise
    except LmscopeError as exc:
        raise RunError(str(exc)) from None
    return RunTable(run.path, info, tables)


class RunTable:
    """The rows of a run: its prompts, components and neurons, and statistics over them."""

    def __init__(self, folder: Path, info: dict[str, Any], tables: dict[str, pa.Table]) -> None:
        self.folder = folder
        self.info = info
        self.prompts = tables[PROMPTS]
        self.components = tables[COMPONENTS]
        self.neurons = tables[NEURONS]
        model = info.get("model", {})
        self.n_layers = int(model.get("nLayers", 0))
        self.n_heads = int(model.get("nHeads", 0))
        self._ids = dict(
            zip(self.prompts["index"].to_pylist(), self.prompts["id"].to_pylist(), strict=True)
        )
        self._traces = dict(
            zip(self.prompts["index"].to_pylist(), self.prompts["trace"].to_pylist(), strict=True)
        )
        self._tags = dict(
            zip(self.prompts["index"].to_pylist(), self.prompts["tags"].to_pylist(), strict=True)
        )
        # The component columns as numpy, once: every statistic below slices these.
        columns = self.components
        self._index = columns["index"].to_numpy()  # [R]
        self._kind = np.asarray(columns["kind"].to_pylist())  # [R]
        self._layer = columns["layer"].to_numpy()  # [R]
        self._head = columns["head"].to_numpy()  # [R]
        self._share = columns["share"].to_numpy().astype(np.float64)  # [R]
        self._on = {
            name: columns[name].to_numpy(zero_copy_only=False)
            for name in ("on_route_001", "on_route_004", "on_route_010")
        }

    @property
    def n_prompts(self) -> int:
        return self.prompts.num_rows

    def tags(self) -> list[str]:
        """Every tag of the run's prompts, sorted."""
        return sorted({tag for tags in self._tags.values() for tag in tags})

    def indices(self, tag: str | None = None) -> list[int]:
        """The indices of the done prompts (with `tag`, only those tagged so)."""
        return sorted(i for i, tags in self._tags.items() if tag is None or tag in tags)

    def _rows(self, kind: str, layer: int | None, head: int | None, tag: str | None) -> np.ndarray:
        """Row mask [R] of component rows of `kind` (and layer/head), for prompts of `tag`."""
        mask = self._kind == kind
        if layer is not None:
            mask &= self._layer == layer
        if head is not None:
            mask &= self._head == head
        if tag is not None:
            mask &= np.isin(self._index, self.indices(tag))
        return mask

    def component_stats(
        self, kind: str, layer: int, head: int | None = None, tag: str | None = None
    ) -> ComponentStats:
        """Statistics of one head (`kind` "head", `head` given) or FFN block (`kind` "ffn")."""
        if kind not in ("head", "ffn"):
            raise LmscopeError(f'component kind must be "head" or "ffn", not {kind!r}')
        if kind == "head" and head is None:
            raise LmscopeError("a head's statistics need its head number")
        if not 0 <= layer < self.n_layers:
            raise LmscopeError(f"layer {layer} is out of range: the model has {self.n_layers}")
        if kind == "head" and not 0 <= int(head or 0) < self.n_heads:
            raise LmscopeError(f"head {head} is out of range: the model has {self.n_heads} heads")
        mask = self._rows(kind, layer, head if kind == "head" else -1, tag)
        shares, indices = self._share[mask], self._index[mask]
        if len(shares) == 0:
            return ComponentStats(0, 0.0, 0.0, 0.0, [])
        top = np.argsort(-shares, kind="stable")[:TOP_PROMPTS]
        q1, q2, q3 = np.percentile(shares, [25, 50, 75])
        return ComponentStats(
            n_prompts=len(shares),
            on_route_fraction=float(self._on["on_route_004"][mask].mean()),
            mean_share=float(shares.mean()),
            std_share=float(shares.std()),
            quartiles=(float(q1), float(q2), float(q3)),
            top_prompts=[
                (
                    int(indices[i]),
                    self._ids[int(indices[i])],
                    float(shares[i]),
                    self._traces[int(indices[i])],
                )
                for i in top
            ],
        )

    def _per_component(self, kind: str, stat: str, tag: str | None) -> np.ndarray:
        """`stat` of each component of `kind`, [L, H] for heads and [L] for FFN blocks."""
        if stat not in HEAD_STATS:
            raise LmscopeError(f"unknown statistic {stat!r} (one of {', '.join(HEAD_STATS)})")
        mask = self._rows(kind, None, None, tag)
        values = self._share[mask] if stat == "mean_share" else self._on[stat][mask]
        width = self.n_heads if kind == "head" else 1
        slot = self._layer[mask] * width + (self._head[mask] if kind == "head" else 0)  # [R']
        n_slots = self.n_layers * width
        counts = np.bincount(slot, minlength=n_slots)
        sums = np.bincount(slot, weights=values.astype(np.float64), minlength=n_slots)
        means = np.divide(sums, counts, out=np.zeros(n_slots), where=counts > 0)
        return means.reshape(self.n_layers, width) if kind == "head" else means

    def head_matrix(self, stat: str = "mean_share", tag: str | None = None) -> list[list[float]]:
        """[layers][heads]: each head's mean share, or the fraction of prompts it is on the
        route at one τ ("on_route_004", "on_route_001", "on_route_010")."""
        return self._per_component("head", stat, tag).tolist()

    def ffn_vector(self, stat: str = "mean_share", tag: str | None = None) -> list[float]:
        """[layers]: each FFN block's `stat` (as `head_matrix`)."""
        return self._per_component("ffn", stat, tag).tolist()

    def top_neurons(self, layer: int, limit: int = 10) -> list[tuple[int, float, int]]:
        """The neurons of FFN block `layer` most often among a route's top neurons: (neuron,
        summed contribution, how many (prompt, position) rows list it), strongest first."""
        rows = self.neurons.filter(pc.equal(self.neurons["layer"], layer))
        neuron = rows["neuron"].to_numpy()
        weight = rows["contribution"].to_numpy().astype(np.float64)
        found: dict[int, tuple[float, int]] = {}
        for k, c in zip(neuron.tolist(), weight.tolist()):
            total, count = found.get(k, (0.0, 0))
            found[k] = (total + c, count + 1)
        ranked = sorted(found.items(), key=lambda item: (-item[1][0], item[0]))[:limit]
        return [(k, total, count) for k, (total, count) in ranked]

    def to_pandas(self, table: str = COMPONENTS) -> Any:
        """One table ("prompts", "components" or "neurons") as a pandas DataFrame (needs pandas,
        which lmscope does not install)."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise LmscopeError("to_pandas needs pandas: pip install pandas") from None
        tables = {PROMPTS: self.prompts, COMPONENTS: self.components, NEURONS: self.neurons}
        if table not in tables:
            raise LmscopeError(f"no table {table!r}: prompts, components or neurons")
        return tables[table].to_pandas()

    def summary(self, tag: str | None = None, top: int = 10) -> str:
        """The text `lmscope run-summary` prints."""
        from lmscope.runs.summary import run_summary

        return run_summary(self, tag=tag, top=top)

    def __repr__(self) -> str:
        model = self.info.get("model", {}).get("name", "?")
        return f"RunTable({str(self.folder)!r}, model={model!r}, prompts={self.n_prompts})"


__all__ = ["ComponentStats", "RunError", "RunTable", "load_run"]
