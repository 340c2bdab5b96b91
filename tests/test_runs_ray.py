"""`lmscope run --ray`: a local Ray cluster of 2 CPU workers, each loading the model once, gives
the table of the single-process run, row for row (Ray starts in seconds: one test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmscope.api import load_model
from lmscope.runner.corpus import RunSettings, read_checked_source, run_corpus
from lmscope.runner.local import LocalBackend
from lmscope.runs.table import load_run
from tests.conftest import TINY_PROMPT

pytestmark = pytest.mark.slow


def assert_same_rows(a, b) -> None:
    """Equal tables: strings, integers and flags exactly, floats to float32 rounding (the two
    runs use different thread counts)."""
    assert a.column_names == b.column_names and a.num_rows == b.num_rows
    for name in a.column_names:
        left, right = a[name].to_pylist(), b[name].to_pylist()
        if left and isinstance(left[0], float):
            assert np.allclose(left, right, rtol=1e-4, atol=1e-6), name
        else:
            assert left == right, name


def test_a_ray_run_on_two_workers_gives_the_single_process_table(model_folder, tmp_path):
    import ray

    from lmscope.runner.ray_workers import RayBackend

    words = TINY_PROMPT.split()
    path = tmp_path / "corpus.prompts.txt"
    path.write_text("".join(" ".join(words[i : i + 4 + i % 3]) + "\n" for i in range(8)))
    source = read_checked_source(path, False)
    settings = RunSettings()
    run_corpus(
        source,
        tmp_path / "local",
        settings,
        lambda: LocalBackend(load_model(str(model_folder))),
        quiet=True,
    )
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        backend: list[RayBackend] = []

        def open_ray() -> RayBackend:
            backend.append(RayBackend("auto", model=str(model_folder)))
            return backend[0]

        run_corpus(source, tmp_path / "ray", settings, open_ray, quiet=True)
        assert len(backend[0].actors) == 0  # closed: the actors are gone
    finally:
        ray.shutdown()
    local, sharded = load_run(tmp_path / "local"), load_run(tmp_path / "ray")
    assert sharded.n_prompts == 8
    assert_same_rows(sharded.components, local.components)
    assert_same_rows(sharded.neurons, local.neurons)
    assert_same_rows(sharded.prompts.drop(["seconds"]), local.prompts.drop(["seconds"]))
    assert sharded.info["model"] == local.info["model"]
    assert sorted(p.name for p in Path(tmp_path / "ray" / "traces").iterdir()) == sorted(
        p.name for p in Path(tmp_path / "local" / "traces").iterdir()
    )


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    import builtins

    from lmscope.errors import LmscopeError
    from lmscope.runner import ray_workers

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(LmscopeError, match=r"pip install 'lmscope\[ray\]'"):
        ray_workers.import_ray()
