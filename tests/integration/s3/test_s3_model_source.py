"""s3:// models against a real S3 server (versitygw): the downloader run as the operator's
model-download init container runs it (its rendered command and env, the Secret's keys resolved
as the kubelet would), then the engine loading what it fetched.

A tiny random model is uploaded through the S3 API beside files the engine never loads (.bin,
.pth, original/); the download takes the same files as the hf:// path, a second run fetches
nothing, and each failure ends with exit 1 and one line that the pod's status shows.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import obstore
import pytest
from obstore.store import S3Store
from tiny_checkpoint import write_tiny_checkpoint, write_tiny_tokenizer

from pagoda.engine import LLM, SamplingParams
from pagoda.operator.resources.deployment import deployment
from pagoda.operator.spec import CACHE_MOUNT, parse
from pagoda.operator.trouble import trouble

pytestmark = pytest.mark.integration

BUCKET, PREFIX = "models", "org/tiny"
SKIPPED = {"pytorch_model.bin": b"x" * 10, "original/consolidated.00.pth": b"y" * 10}
SKIPPED |= {"original/params.json": b"{}", "README.md": b"# tiny"}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_tiny_tokenizer(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def bucket(s3, source) -> str:
    (s3.root / BUCKET).mkdir(exist_ok=True)  # versitygw's posix backend: a bucket is a folder
    store = S3Store(
        BUCKET,
        endpoint=s3.endpoint,
        access_key_id=s3.access_key,
        secret_access_key=s3.secret_key,
        client_options={"allow_http": True},
    )
    for f in source.iterdir():
        obstore.put(store, f"{PREFIX}/{f.name}", f.read_bytes())
    for name, data in SKIPPED.items():
        obstore.put(store, f"{PREFIX}/{name}", data)
    obstore.put(store, "weights-elsewhere/pytorch_model.bin", b"z")  # no safetensors here
    return BUCKET


def download(
    s3, tmp_path: Path, uri: str, secret: str | None = None, endpoint: str | None = None
) -> subprocess.CompletedProcess:
    """The init container's command with its env, as the operator renders them for uri; the
    cache mount is tmp_path/models."""
    spec = parse(
        "tiny",
        "ns",
        {
            "model": {
                "uri": uri,
                "s3": {
                    "endpoint": endpoint or s3.endpoint,
                    "region": "us-east-1",
                    "credentialsSecret": {"name": "s3-keys", "secretAccessKeyKey": "secret"},
                },
            }
        },
    )
    [init] = deployment(spec, "engine:1", 1)["spec"]["template"]["spec"]["initContainers"]
    secrets = {"AWS_ACCESS_KEY_ID": s3.access_key, "secret": secret or s3.secret_key}
    env = {
        e["name"]: e["value"] if "value" in e else secrets[e["valueFrom"]["secretKeyRef"]["key"]]
        for e in init["env"]
    }
    assert init["command"][0] == "python"
    argv = [sys.executable, *init["command"][1:]]
    at = argv.index("--local-dir") + 1
    argv[at] = str(tmp_path / "models") + argv[at].removeprefix(CACHE_MOUNT)
    return subprocess.run(
        argv, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=120
    )


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_download_takes_the_model_files_once_and_the_engine_loads_them(
    s3, bucket, source, tmp_path
):
    uri = f"s3://{bucket}/{PREFIX}"
    local = tmp_path / "models" / "s3" / bucket / PREFIX
    first = download(s3, tmp_path, uri)
    assert first.returncode == 0, first.stderr
    # What hf download --include would take: no .bin, .pth, original/ or README.
    assert files(local) == files(source)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files(local))
    assert f"fetched {len(files(source))} files" in first.stdout

    stamps = {p: p.stat().st_mtime_ns for p in local.rglob("*")}
    again = download(s3, tmp_path, uri + "/")  # a restart on a kept cache; same folder
    assert again.returncode == 0, again.stderr
    assert "fetched 0 files" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in local.rglob("*")} == stamps

    (local / "config.json").write_text("{")  # a size that differs: fetched anew, alone
    third = download(s3, tmp_path, uri)
    assert third.returncode == 0 and "fetched 1 files" in third.stdout, third.stdout
    assert files(local) == files(source)

    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    outs = [
        LLM(str(folder), dtype="float32", device="cpu", num_gpu_blocks_override=32).generate(
            {"prompt_token_ids": [5, 6, 7]}, params
        )[0]
        for folder in (local, source)
    ]
    assert len(outs[0].outputs[0].token_ids) == 6
    assert outs[0].outputs[0].token_ids == outs[1].outputs[0].token_ids


@pytest.mark.parametrize(
    "uri, secret, endpoint, reason",
    [
        (
            "s3://no-such-bucket/org/tiny",
            None,
            None,
            "s3://no-such-bucket/org/tiny: the bucket does not exist (NoSuchBucket",
        ),
        ("s3://models/org/tiny", "wrong", None, "s3://models/org/tiny: access denied; check the"),
        ("s3://models/org/none", None, None, "s3://models/org/none: no objects under this prefix"),
        ("s3://models/weights-elsewhere", None, None, "has no *.safetensors objects"),
        (
            "s3://models/org/tiny",
            None,
            "http://127.0.0.1:1",
            "cannot read s3://models/org/tiny from http://127.0.0.1:1: ",
        ),
    ],
    ids=["no-bucket", "denied", "no-objects", "no-safetensors", "unreachable"],
)
def test_a_failed_download_says_why_in_one_line_the_status_shows(
    s3, bucket, tmp_path, uri, secret, endpoint, reason
):
    out = download(s3, tmp_path, uri, secret, endpoint)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and reason in last, out.stderr
    assert s3.secret_key not in out.stderr + out.stdout
    # The kubelet's termination message (FallbackToLogsOnError) is the log's tail.
    pod = {
        "metadata": {"name": "tiny-1"},
        "status": {
            "initContainerStatuses": [
                {
                    "name": "model-download",
                    "state": {"terminated": {"exitCode": 1, "message": out.stdout + out.stderr}},
                }
            ]
        },
    }
    found = trouble([pod])
    assert found is not None and found.reason == "ModelDownloadFailed"
    assert reason in found.message
