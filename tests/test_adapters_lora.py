"""PEFT/LoRA adapters as models: an adapter folder loads over its base (as the model, or with
`adapter=` / --adapter / loadModel's adapter), merged into the base weights before tracing, and
the trace records base, adapter and their hashes.

The adapters are tiny LoRAs made with peft over a tiny Llama; peft initialises B to zero (a
no-op adapter), so B is set randomly, or no test here could tell base from adapter.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tests.test_engine_invariants as invariants
from lmscope import api
from lmscope.cli import main
from lmscope.errors import ModelLoadError
from lmscope.models.hashing import merged_hash, weights_hash
from lmscope.models.loading import check_loadable, load_model
from lmscope.models.peft_adapters import merge_adapter, read_adapter
from lmscope.traces.lmtrace import read_trace, write_trace
from lmscope.traces.wire import to_wire
from lmscope.tracing.engine import TraceOptions, run_trace
from tests.conftest import TINY_PROMPT, build_tiny, save_tiny_folder
from tests.daemon_client import DaemonClient, RpcError

TARGETS = ["q_proj", "v_proj", "o_proj", "down_proj"]
IDS = torch.tensor([[1, 5, 9, 3, 7, 2, 11]])


@pytest.fixture(autouse=True)
def _offline_cache(monkeypatch, tmp_path_factory):
    """Hashes cached in a test folder; the hub never asked (a hub id fails at once)."""
    monkeypatch.setenv("LMSCOPE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "lora-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def make_lora(base_folder: Path, folder: Path, *, dora: bool = False, seed: int = 1) -> Path:
    """A rank-4 LoRA (or DoRA) over the tiny Llama in `base_folder`, with random B matrices,
    saved by peft's save_pretrained; adapter_config.json names `base_folder` as its base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_folder, attn_implementation="eager")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, use_dora=dora)
    config.base_model_name_or_path = str(base_folder)
    wrapped = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in wrapped.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    wrapped.save_pretrained(folder)
    return folder


def peft_logits(base_folder: Path, lora_folder: Path) -> torch.Tensor:
    """Logits of peft's own PeftModel forward (unmerged): the reference."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_folder, attn_implementation="eager")
    with torch.no_grad():
        return PeftModel.from_pretrained(base, lora_folder).eval()(input_ids=IDS).logits


def logits(loaded) -> torch.Tensor:
    with torch.no_grad():
        return loaded.model(input_ids=IDS).logits


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory) -> Path:
    return save_tiny_folder("llama", tmp_path_factory.mktemp("lora-base") / "tiny-base")


@pytest.fixture(scope="module")
def lora_folder(tmp_path_factory, base_folder) -> Path:
    return make_lora(base_folder, tmp_path_factory.mktemp("lora") / "poems-lora")


@pytest.fixture(scope="module")
def merged(lora_folder):
    return load_model(str(lora_folder))


def copy_adapter(lora_folder: Path, tmp_path: Path, **changes) -> Path:
    """A copy of the adapter whose adapter_config.json has `changes`."""
    folder = tmp_path / "changed-lora"
    shutil.copytree(lora_folder, folder)
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config.update(changes)
    config_file.write_text(json.dumps(config))
    return folder


# --- the merged model is the fine-tuned one ----------------------------------------------------
def test_an_adapter_folder_as_the_model_gives_peft_s_own_logits(base_folder, lora_folder, merged):
    expected = peft_logits(base_folder, lora_folder)
    assert (logits(merged) - expected).abs().max() <= 1e-5
    base = load_model(str(base_folder))
    assert (logits(base) - expected).abs().max() > 1e-2  # the adapter changes the model
    # merged: plain Linear modules, no peft wrapper left for the hooks to trip on
    attention = merged.model.model.layers[0].self_attn
    assert type(attention.q_proj) is torch.nn.Linear
    assert not any("lora" in name for name, _ in merged.model.named_parameters())


def test_an_adapter_over_a_base_is_the_same_model_as_the_adapter_folder(
    base_folder, lora_folder, merged
):
    over = load_model(str(base_folder), adapter=str(lora_folder))
    assert torch.equal(logits(over), logits(merged))
    assert over.name == merged.name == "tiny-base + poems-lora"
    assert over.content_hash == merged.content_hash
    assert over.spec == str(base_folder) and merged.spec == str(lora_folder)
    assert over.source == merged.source == "folder"


def test_a_dora_adapter_merges_to_peft_s_own_logits(base_folder, tmp_path):
    dora = make_lora(base_folder, tmp_path / "dora", dora=True)
    loaded = load_model(str(dora))
    assert (logits(loaded) - peft_logits(base_folder, dora)).abs().max() <= 1e-5
    assert loaded.adapter is not None and loaded.adapter.dora


def test_the_api_caches_base_and_base_with_adapter_apart(base_folder, lora_folder):
    with_adapter = api.load_model(str(base_folder), adapter=str(lora_folder))
    assert api.load_model(str(base_folder), adapter=str(lora_folder)) is with_adapter
    alone = api.load_model(str(base_folder))
    assert alone.adapter is None and alone.content_hash != with_adapter.content_hash


# --- what the trace records --------------------------------------------------------------------
def test_the_trace_records_base_adapter_and_hashes_and_round_trips(
    base_folder, lora_folder, merged, tmp_path
):
    base = load_model(str(base_folder))
    data = run_trace(merged, TINY_PROMPT, TraceOptions())
    adapter = data.model.adapter
    assert adapter is not None
    assert (adapter.name, adapter.spec) == ("poems-lora", str(lora_folder))
    assert (adapter.peft_type, adapter.dora, adapter.rank, adapter.alpha) == ("LORA", False, 4, 8.0)
    assert adapter.target_modules == sorted(TARGETS)
    assert (adapter.base_spec, adapter.base_hash) == (str(base_folder), base.content_hash)
    files = [lora_folder / "adapter_config.json", lora_folder / "adapter_model.safetensors"]
    assert adapter.content_hash == weights_hash(files)
    # the merged model's identity is neither the base's nor the adapter's
    assert data.model.content_hash == merged_hash(base.content_hash, adapter.content_hash)
    assert data.model.content_hash not in (base.content_hash, adapter.content_hash)
    assert data.model.name == "tiny-base + poems-lora"

    again = read_trace(write_trace(data, tmp_path / "merged.lmtrace"))
    assert again.model == data.model

    plain = run_trace(base, TINY_PROMPT, TraceOptions())
    assert "adapter" not in to_wire(plain, binary=True)["model"]  # files stay as they were
    assert read_trace(write_trace(plain, tmp_path / "base.lmtrace")).model.adapter is None


def test_the_method_s_invariants_hold_on_the_merged_model(merged):
    invariants.test_attention_parts_and_biases_reconstruct_every_block_output(merged)
    invariants.test_contributions_of_each_target_sum_to_one(merged)
    invariants.test_contributions_match_a_dense_float64_reference(merged)


def test_show_names_base_and_adapter_from_the_file_alone(merged, tmp_path, capsys):
    path = write_trace(run_trace(merged, TINY_PROMPT, TraceOptions()), tmp_path / "t.lmtrace")
    assert main(["show", str(path)]) == 0
    assert capsys.readouterr().out.startswith("tiny-base + poems-lora: 3 layers")


def test_an_adapter_merges_into_a_model_placed_by_a_device_map(base_folder, lora_folder, merged):
    from lmscope.models.loading import DeviceMap

    mapped = load_model(str(base_folder), adapter=str(lora_folder), device_map=DeviceMap("auto"))
    assert mapped.device_map and "disk" not in mapped.device_map.values()
    assert (logits(mapped) - logits(merged)).abs().max() <= 1e-6


# --- clear errors ------------------------------------------------------------------------------
def test_an_adapter_folder_without_adapter_config_is_refused(base_folder, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"no adapter_config\.json in .*empty: expected"):
        check_loadable(str(base_folder), adapter=str(empty))
    with pytest.raises(ModelLoadError, match="holds a whole model, not a PEFT adapter"):
        check_loadable(str(base_folder), adapter=str(base_folder))
    with pytest.raises(ModelLoadError, match="adapter folder not found"):
        check_loadable(str(base_folder), adapter=str(tmp_path / "missing"))


def test_an_unsupported_peft_type_is_refused(lora_folder, tmp_path):
    ia3 = copy_adapter(lora_folder, tmp_path, peft_type="IA3")
    with pytest.raises(ModelLoadError, match=r"unsupported adapter type IA3 .*merges LoRA"):
        load_model(str(ia3))


def test_a_lora_variant_no_merge_can_express_is_refused(lora_folder, tmp_path):
    replicated = copy_adapter(lora_folder, tmp_path, layer_replication=[[0, 2], [1, 3]])
    with pytest.raises(ModelLoadError, match=r"layer replication .* cannot be merged"):
        read_adapter(str(replicated))


def test_adapter_weights_are_read_from_safetensors_only(lora_folder, tmp_path):
    pickled = copy_adapter(lora_folder, tmp_path)
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    with pytest.raises(ModelLoadError, match=r"adapter_model\.bin: .*only from"):
        read_adapter(str(pickled))


def test_an_adapter_over_a_base_without_its_target_modules_is_refused(lora_folder, tmp_path):
    gpt2 = save_tiny_folder("gpt2", tmp_path / "gpt2")
    with pytest.raises(ModelLoadError, match=r"does not fit the base model: Target modules"):
        load_model(str(gpt2), adapter=str(lora_folder))


def test_an_adapter_over_a_base_of_another_size_is_refused(lora_folder, tmp_path):
    narrower = save_tiny_folder("mistral", tmp_path / "mistral")  # hidden 32, not 48
    with pytest.raises(ModelLoadError, match=r"does not fit the base model: .*size mismatch"):
        load_model(str(narrower), adapter=str(lora_folder))


@pytest.mark.parametrize("base", ["someone/their-base-model", "/no/such/base/folder"])
def test_a_base_that_cannot_be_found_is_named_with_a_way_out(lora_folder, tmp_path, base):
    moved = copy_adapter(lora_folder, tmp_path, base_model_name_or_path=base)
    with pytest.raises(ModelLoadError) as refused:
        check_loadable(str(moved))
    message = str(refused.value)
    assert message.startswith(f"cannot find the base model of adapter {moved}")
    assert f"names '{base}'" in message
    assert f"--model BASE_FOLDER --adapter {moved}" in message


def test_an_adapter_that_names_no_base_asks_for_one(lora_folder, tmp_path):
    orphan = copy_adapter(lora_folder, tmp_path, base_model_name_or_path=None)
    with pytest.raises(ModelLoadError, match=r"names no base model .*--model BASE --adapter"):
        check_loadable(str(orphan))


def test_an_adapter_as_the_model_and_another_adapter_are_refused(lora_folder):
    with pytest.raises(ModelLoadError, match="is itself a PEFT adapter"):
        check_loadable(str(lora_folder), adapter=str(lora_folder))


def test_an_adapter_cannot_merge_into_offloaded_weights(lora_folder):
    from transformers import AutoModelForCausalLM

    config = build_tiny("llama").model.config
    with torch.device("meta"):  # what accelerate leaves in place of offloaded weights
        offloaded = AutoModelForCausalLM.from_config(config)
    with pytest.raises(ModelLoadError, match="the device map offloaded part of the base model"):
        merge_adapter(offloaded, read_adapter(str(lora_folder)))


# --- the command line and the daemon -----------------------------------------------------------
def test_the_cli_parses_adapter_for_trace_bench_and_serve():
    from lmscope.cli.arguments import build_parser

    parser = build_parser()
    for command in (["trace", "x"], ["bench"], ["serve"]):
        assert parser.parse_args([*command, "--adapter", "lora"]).adapter == "lora"


@pytest.mark.slow
def test_lmscope_trace_with_an_adapter_writes_a_trace_of_the_merged_model(
    base_folder, lora_folder, tmp_path
):
    out = tmp_path / "t.lmtrace"
    command = ["trace", TINY_PROMPT, "--model", base_folder, "--adapter", lora_folder, "--out", out]
    run = subprocess.run(
        [sys.executable, "-m", "lmscope", *map(str, command), "--quiet"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("tiny-base + poems-lora: 3 layers")
    assert read_trace(out).model.adapter.name == "poems-lora"


@pytest.mark.slow
def test_the_daemon_loads_an_adapter_and_refuses_a_bad_one_keeping_its_model(
    base_folder, lora_folder, tmp_path
):
    client = DaemonClient(tmp_path / "daemon.log")
    client.initialize()
    base = client.request("lmscope/loadModel", {"spec": str(base_folder)})["model"]
    loaded = client.request(
        "lmscope/loadModel", {"spec": str(base_folder), "adapter": str(lora_folder)}
    )["model"]
    assert loaded["name"] == "tiny-base + poems-lora"
    assert loaded["contentHash"] != base["contentHash"]
    with pytest.raises(RpcError, match=r"no adapter_config\.json"):
        client.request("lmscope/loadModel", {"spec": str(base_folder), "adapter": str(tmp_path)})
    status = client.request("lmscope/status", {})
    assert status["model"]["name"] == "tiny-base + poems-lora"  # the failed load cost nothing
    traced = client.request("lmscope/trace", {"prompt": TINY_PROMPT})
    assert traced["trace"]["handle"]
    client.check_notifications()
    assert client.close() == 0
