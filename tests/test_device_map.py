"""Models split over devices by accelerate: a tiny model with one layer offloaded to disk (the
weights live in accelerate's map, not on the module) traces exactly like the same model on one
device. On a machine with GPUs the same code path splits layers across them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lmscope
from lmscope.errors import ModelLoadError
from lmscope.models.loading import DeviceMap, load_model
from tests.conftest import TINY_PROMPT, save_tiny_folder

pytest.importorskip("accelerate")


def split_map(n_layers: int) -> dict[str, str]:
    """Every module on the CPU except layer 1, offloaded to disk."""
    plan = {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu",
            "lm_head": "cpu"}  # fmt: skip
    for layer in range(n_layers):
        plan[f"model.layers.{layer}"] = "disk" if layer == 1 else "cpu"
    return plan


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_folder("llama", tmp_path_factory.mktemp("tiny-llama"))


def test_a_layer_offloaded_to_disk_traces_like_the_single_device_model(folder):
    single = load_model(str(folder))
    mapped = load_model(
        str(folder), device_map=DeviceMap(split_map(single.model.config.num_hidden_layers))
    )
    assert mapped.device_map is not None and mapped.device_map["model.layers.1"] == "disk"
    # The offloaded layer's weights are not on its modules: the adapter reads accelerate's map.
    assert mapped.model.model.layers[1].self_attn.o_proj.weight.device.type == "meta"
    a = lmscope.trace(TINY_PROMPT, model=single, detail="all")
    b = lmscope.trace(TINY_PROMPT, model=mapped, detail="all")
    np.testing.assert_allclose(b.data.blocks.ffn, a.data.blocks.ffn, atol=1e-6)
    np.testing.assert_allclose(
        b.data.blocks.residual_attention, a.data.blocks.residual_attention, atol=1e-6
    )
    np.testing.assert_array_equal(b.data.edges.source, a.data.edges.source)
    np.testing.assert_allclose(
        b.data.edges.head_contributions, a.data.edges.head_contributions, atol=1e-6
    )
    for token in range(a.n_tokens):
        assert b.route(token, 0.04) == a.route(token, 0.04)
    np.testing.assert_array_equal(b.data.projections.top_ids, a.data.projections.top_ids)
    np.testing.assert_array_equal(b.data.neurons.index, a.data.neurons.index)
    # Live queries on the mapped model read the offloaded weights too.
    last = a.n_tokens - 1
    assert (
        b.ffn_neurons(1, last)["neurons"][0]["neuron"]
        == a.ffn_neurons(1, last)["neurons"][0]["neuron"]
    )


def test_auto_device_map_places_every_module_and_traces(folder):
    mapped = lmscope.load_model(str(folder), device_map="auto")
    placed = set(mapped.device_map.values())
    if torch.cuda.is_available():  # accelerate fills the GPUs first: a tiny model fits there
        assert placed and "disk" not in placed and "cpu" not in placed, placed
    else:
        assert placed == {"cpu"}
    assert lmscope.trace(TINY_PROMPT, model=mapped).route().edges


def test_unknown_device_map_plan_is_refused_with_the_choices(folder):
    with pytest.raises(ModelLoadError, match="unknown device map 'everywhere'"):
        load_model(str(folder), device_map=DeviceMap("everywhere"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [("", "no model given"), ("./no/such/folder", "unknown model './no/such/folder'")],
)
def test_a_device_map_refuses_the_specs_one_device_refuses(spec, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model(spec, device_map=DeviceMap("auto"))


def test_a_gguf_file_cannot_be_split_over_devices(tmp_path):
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF stand-in")

    with pytest.raises(ModelLoadError, match=r"not supported for \.gguf files"):
        load_model(str(gguf), device_map=DeviceMap("auto"))


def test_the_command_line_offers_exactly_the_loader_s_plans(capsys):
    from lmscope.cli import main
    from lmscope.models import devices

    with pytest.raises(SystemExit) as usage:
        main(["trace", "x", "--device-map", "bogus"])
    assert usage.value.code == 2
    offered = capsys.readouterr().err.split("choose from ")[1].split(")")[0]
    assert tuple(plan.strip(" '") for plan in offered.split(",")) == devices.PLANS


def test_trace_command_splits_the_model_with_device_map_auto(folder, tmp_path):
    from lmscope.cli import main

    out = tmp_path / "mapped.lmtrace"
    code = main(["trace", TINY_PROMPT, "--model", str(folder), "--device-map", "auto",
                 "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    assert lmscope.load_trace(out).route().edges
