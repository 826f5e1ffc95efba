"""Hub models by name, through huggingface_hub, against a local Hub endpoint this test starts:
download, revision pinning, offline re-use of the cache, and each error as one line."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import huggingface_hub.constants
import pytest
import torch
from local_hub import HubRepo, LocalHub, save_tiny_tokenizer
from tiny_hf import hf_model
from tiny_models import IDS, assert_same_logits

from pagoda.engine.config import EngineConfig
from pagoda.engine.loader import hub, load_model, resolve_model
from pagoda.engine.loader.errors import ModelLoadError
from pagoda.engine.tokenizer import load_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny Llamas (v1 and main) saved by transformers, with a tokenizer."""
    out = {}
    for seed, name in ((0, "v1"), (1, "main")):
        folder = tmp_path_factory.mktemp(name)
        model = hf_model("LlamaForCausalLM", seed=seed, tie_word_embeddings=False)
        model.save_pretrained(folder)
        save_tiny_tokenizer(folder)
        (folder / "pytorch_model.bin").write_bytes(b"pickles are not downloaded")
        (folder / "README.md").write_text("not downloaded either")
        out[name] = (model, folder)
    return out


@pytest.fixture
def local_hub(monkeypatch, tmp_path, models):
    """HF_ENDPOINT at a local Hub holding org/tiny (tag v1, branch main), org/gated (needs a
    token) and org/pickles (no safetensors); the HF cache in tmp_path."""
    with LocalHub() as server:
        tiny = server.repos["org/tiny"] = HubRepo()
        tiny.add_folder(models["v1"][1], ref="v1")
        tiny.add_folder(models["main"][1], ref="main")
        server.repos["org/gated"] = HubRepo(token="secret")
        server.repos["org/gated"].add_folder(models["main"][1])
        server.repos["org/pickles"] = HubRepo()
        server.repos["org/pickles"].add_commit({"config.json": b"{}", "model.bin": b"x"})
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
        template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
        yield server


def test_download_loads_the_model_and_tokenizer(local_hub, models, tmp_path) -> None:
    config = EngineConfig(model="org/tiny", download_dir=str(tmp_path / "dl"))
    ours, cfg = load_model(config, CPU, torch.float32)
    assert_same_logits(ours, cfg, models["main"][0], IDS)
    assert load_tokenizer(config)("w5 w7").input_ids == [5, 7]
    resolved = resolve_model(config)
    assert resolved.name == "org/tiny" and resolved.path.is_relative_to(tmp_path / "dl")
    fetched = {f.rsplit("/", 1)[1] for f in local_hub.file_gets}
    assert "model.safetensors" in fetched and "config.json" in fetched
    assert "tokenizer.json" in fetched
    assert not fetched & {"pytorch_model.bin", "README.md"}


def test_revision_pinning(local_hub, models) -> None:
    ours, cfg = load_model(EngineConfig(model="hf://org/tiny@v1"), CPU, torch.float32)
    assert_same_logits(ours, cfg, models["v1"][0], IDS)
    sha = local_hub.repos["org/tiny"].refs["v1"]
    assert resolve_model(EngineConfig(model="org/tiny", revision=sha)).path.name == sha
    main_sha = local_hub.repos["org/tiny"].refs["main"]
    assert resolve_model(EngineConfig(model="org/tiny")).path.name == main_sha
    with pytest.raises(ValueError, match="two revisions given"):
        resolve_model(EngineConfig(model="org/tiny@v1", revision="main"))


def test_tokenizer_revision(local_hub) -> None:
    config = EngineConfig(model="org/tiny@v1", tokenizer_revision="main")
    assert load_tokenizer(config)("w9").input_ids == [9]
    gets = [f for f in local_hub.file_gets if f.endswith("tokenizer.json")]
    assert len(gets) == 1  # the tokenizer files of main, fetched apart from the model


def test_offline_reuses_the_cache(local_hub, monkeypatch, models) -> None:
    load_model(EngineConfig(model="org/tiny"), CPU, torch.float32)
    before = len(local_hub.file_gets)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    ours, cfg = load_model(EngineConfig(model="org/tiny"), CPU, torch.float32)
    assert_same_logits(ours, cfg, models["main"][0], IDS)
    assert len(local_hub.file_gets) == before
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set.*no complete copy"):
        resolve_model(EngineConfig(model="org/tiny@v1"))


def test_gated_repo_needs_hf_token(local_hub, monkeypatch) -> None:
    with pytest.raises(ModelLoadError, match="org/gated is gated.*set HF_TOKEN") as e:
        resolve_model(EngineConfig(model="org/gated"))
    assert "\n" not in str(e.value)
    monkeypatch.setenv("HF_TOKEN", "secret")
    assert (resolve_model(EngineConfig(model="org/gated")).path / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "model,match",
    [
        ("org/missing", "org/missing not found on the Hub, or it is private and HF_TOKEN"),
        ("org/tiny@v9", "org/tiny has no revision 'v9'"),
        ("org/pickles", "org/pickles@main has no \\*.safetensors files"),
    ],
)
def test_hub_errors(local_hub, model: str, match: str) -> None:
    with pytest.raises(ModelLoadError, match=match) as e:
        resolve_model(EngineConfig(model=model))
    assert "\n" not in str(e.value)


def test_no_network(local_hub, monkeypatch) -> None:
    local_hub.__exit__()  # the endpoint goes away: connection refused
    with pytest.raises(ModelLoadError, match="cannot download model org/tiny@main: the Hub is not"):
        resolve_model(EngineConfig(model="org/tiny"))


def test_disk_full(local_hub, monkeypatch) -> None:
    """The error's wording, whatever raises ENOSPC (a quota's EDQUOT alike); the real full disk
    is test_disk_full_on_a_full_filesystem."""

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hub, "snapshot_download", full)
    with pytest.raises(ModelLoadError, match="no space left to download model org/tiny@main into"):
        resolve_model(EngineConfig(model="org/tiny", download_dir="/models"))


def test_cli_error_is_one_line_and_exit_1(local_hub, tmp_path) -> None:
    """`pagoda serve ORG/NAME` with HF_ENDPOINT from the environment, as a user runs it."""
    env = {**os.environ, "HF_ENDPOINT": local_hub.url, "HF_HUB_CACHE": str(tmp_path / "c")}
    env.pop("HF_TOKEN", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pagoda.engine.cli", "serve", "org/gated", "--device", "cpu"],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        (
            "pagoda: error: model org/gated is gated: accept its terms on the Hub and set "
            "HF_TOKEN to a token that has access (HTTP 401)"
        )
    ], proc.stderr
    assert "Traceback" not in proc.stderr


def test_disk_full_on_a_full_filesystem(local_hub, tmp_path) -> None:
    """A real full disk: `pagoda serve` downloads into a 256 KiB tmpfs (the model is 0.5 MB).
    The tmpfs lives in a mount namespace of the command's own (unshare, as root or not): it
    goes with the process, whatever happens, and the host never sees it."""
    full = tmp_path / "full"
    full.mkdir()
    env = {**os.environ, "HF_ENDPOINT": local_hub.url}
    serve = [sys.executable, "-m", "pagoda.engine.cli", "serve", "org/tiny", "--device", "cpu"]
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c"]
        + ['mount -t tmpfs -o size=256k tmpfs "$1" && shift && exec "$@"', "sh", str(full)]
        + [*serve, "--download-dir", str(full)],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        f"pagoda: error: no space left to download model org/tiny@main into {full}: free space "
        "or give --download-dir on a bigger disk"
    ], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(full.iterdir())  # the files went with the tmpfs
