"""An adapter named as a Hub repo (`hf://ORG/NAME`, or `ORG/NAME@REV`) downloads from a local Hub
endpoint and reads as the same folder would; one the Hub lacks is a one-line error."""

from __future__ import annotations

import huggingface_hub.constants
import pytest
import torch
from local_hub import HubRepo, LocalHub
from peft_adapters import write_adapter
from tiny_hf import hf_model

from pagoda.engine import LoRARequest
from pagoda.engine.lora.peft import load_adapter
from pagoda.engine.models.config import ModelConfig


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with LocalHub() as server:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
        template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
        yield server


def test_adapter_from_the_hub(hub, tmp_path) -> None:
    hf = hf_model("LlamaForCausalLM")
    folder = write_adapter(hf, tmp_path / "a", 8, seed=0)
    hub.repos["org/adapter"] = HubRepo()
    hub.repos["org/adapter"].add_folder(folder, ref="main")
    cfg = ModelConfig.from_hf(hf.config.to_dict())
    local = load_adapter(LoRARequest("a", 1, str(folder)), cfg, 8)
    for path in ("hf://org/adapter", "org/adapter@main"):
        remote = load_adapter(LoRARequest("a", 1, path), cfg, 8)
        assert remote.modules.keys() == local.modules.keys()
        for key, w in local.modules.items():
            assert torch.equal(remote.modules[key].b, w.b)
    with pytest.raises(ValueError, match="LoRA adapter org/absent not found on the Hub"):
        load_adapter(LoRARequest("a", 1, "org/absent"), cfg, 8)
