"""engine/loader/s3.py's pure parts: the URI and the file filter (the S3 server's side is in
tests/integration/s3)."""

from __future__ import annotations

import pytest

from pagoda.engine.loader.errors import ModelLoadError
from pagoda.engine.loader.s3 import parse_s3_uri, wanted


@pytest.mark.parametrize(
    "uri, parsed",
    [
        ("s3://models/org/tiny", ("models", "org/tiny")),
        ("s3://models/org/tiny/", ("models", "org/tiny")),
        ("s3://my.bucket-1", ("my.bucket-1", "")),
    ],
)
def test_parse_s3_uri(uri, parsed):
    assert parse_s3_uri(uri) == parsed


@pytest.mark.parametrize("uri", ["s3://My_Bucket/x", "s3://ab/x", "gs://models/x", "s3:/models"])
def test_parse_s3_uri_refuses_what_is_not_one(uri):
    with pytest.raises(ModelLoadError, match="is not s3://BUCKET/PREFIX"):
        parse_s3_uri(uri)


def test_the_filter_is_hf_downloads_include():
    """`*` crosses folders as in fnmatch (sharded weights in a subfolder are taken); a plain name
    matches at the top only (original/params.json is not)."""
    take = ["model-00001-of-00002.safetensors", "sub/x.safetensors", "config.json", "merges.txt"]
    leave = ["pytorch_model.bin", "original/consolidated.00.pth", "original/params.json", "a.gguf"]
    assert [n for n in take + leave if wanted(n)] == take
