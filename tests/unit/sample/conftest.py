import pytest


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The default model's tokenizer, as the engine loads it (cached after the first build)."""
    from pagoda.engine.loader.resolve import default_gguf_path
    from pagoda.engine.tokenizer import gguf_tokenizer

    return gguf_tokenizer(default_gguf_path())
