"""Models in S3, `s3://BUCKET/PREFIX`: the model files under the prefix, copied into a folder.

The operator's `model-download` init container runs it before the engine starts
(`python -m pagoda.engine.loader.s3 s3://BUCKET/PREFIX --local-dir DIR`); the engine then loads
DIR as a HF folder. It takes what the Hub download takes (hub.MODEL_FILES and TOKENIZER_FILES:
safetensors, configs, tokenizer; never .bin or .pth) and keeps a file already there with the
object's size, so a restart on a kept cache fetches nothing.

obstore (the Rust object_store crate) speaks S3, not boto3: botocore pins python-dateutil below 3,
the operator's kubernetes client needs 3 or later, and the two share one development environment.
The configuration is the AWS SDKs' environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL (an S3-compatible server; http:// is allowed for it), AWS_REGION, and IRSA's
web identity variables.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from pagoda.engine.loader.errors import ModelLoadError
from pagoda.engine.loader.hub import MODEL_FILES, TOKENIZER_FILES

_URI = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?")
# S3's error document: <Error><Code>NoSuchBucket</Code><Message>The specified ...</Message>
_CODE = re.compile(r"<Code>([^<]*)</Code>")
_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
CHUNK = 8 << 20


@dataclass(frozen=True)
class Object:
    key: str  # the object's key, prefix and all
    name: str  # its path under the prefix: where it goes in the folder
    size: int


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """s3://BUCKET/PREFIX -> (BUCKET, PREFIX without its slashes at either end)."""
    m = _URI.fullmatch(uri)
    if m is None:
        raise ModelLoadError(f"{uri!r} is not s3://BUCKET/PREFIX (a bucket name of 3-63 a-z0-9.-)")
    return m.group(1), (m.group(2) or "").strip("/")


def wanted(name: str) -> bool:
    """What the engine loads, as `hf download --include` matches it (`*` crosses folders)."""
    return any(fnmatchcase(name, p) for p in MODEL_FILES + TOKENIZER_FILES)


def store(bucket: str) -> S3Store:
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    return S3Store(bucket, client_options={"allow_http": endpoint.startswith("http://")})


def download(uri: str, local_dir: Path) -> list[str]:
    """Copy the model files under uri into local_dir; the names fetched (not those kept)."""
    bucket, prefix = parse_s3_uri(uri)
    s3 = store(bucket)
    objects = [o for o in _list(s3, uri, prefix) if wanted(o.name)]
    names = {o.name for o in objects}
    if not any(n.endswith(".safetensors") for n in names):
        raise ModelLoadError(
            f"{uri} has no *.safetensors objects; Pagoda loads safetensors, not .bin or .pth "
            "checkpoints"
        )
    if "config.json" not in names:
        raise ModelLoadError(f"{uri} has no config.json")
    fetched = []
    for o in objects:
        dest = local_dir / o.name
        if dest.is_file() and dest.stat().st_size == o.size:
            continue
        _fetch(s3, uri, o, dest)
        fetched.append(o.name)
    return fetched


def _list(s3: S3Store, uri: str, prefix: str) -> list[Object]:
    out = []
    try:
        for chunk in obstore.list(s3, prefix or None):
            for meta in chunk:
                name = meta["path"].removeprefix(prefix).lstrip("/") if prefix else meta["path"]
                if ".." in PurePosixPath(name).parts:  # a key must not write outside the folder
                    raise ModelLoadError(f"{uri}: object {meta['path']!r} has '..' in its path")
                out.append(Object(meta["path"], name, meta["size"]))
    except BaseError as e:
        raise ModelLoadError(_reason(uri, e)) from e
    if not out:
        raise ModelLoadError(f"{uri}: no objects under this prefix")
    return out


def _fetch(s3: S3Store, uri: str, o: Object, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")  # renamed when whole: a cut copy is never kept
    try:
        with part.open("wb") as f:
            for buf in obstore.get(s3, o.key).stream(min_chunk_size=CHUNK):
                f.write(buf)
    except BaseError as e:
        raise ModelLoadError(_reason(f"{uri} ({o.name})", e)) from e
    if part.stat().st_size != o.size:
        raise ModelLoadError(
            f"{uri}: {o.name} came {part.stat().st_size} bytes, the listing said {o.size}"
        )
    part.replace(dest)


def _reason(what: str, e: BaseError) -> str:
    """obstore's error (several lines, S3's XML inside) as one line that says what to do."""
    text = str(e)
    code, message = _CODE.search(text), _MESSAGE.search(text)
    if code is None:
        first = text.splitlines()[0] if text else type(e).__name__
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "AWS S3")
        return f"cannot read {what} from {endpoint}: {first}"
    said = f"{code.group(1)}: {message.group(1) if message else ''}".rstrip(": ")
    if code.group(1) == "NoSuchBucket":
        return f"{what}: the bucket does not exist ({said})"
    if code.group(1) in _DENIED:
        return f"{what}: access denied; check the credentials (AWS_ACCESS_KEY_ID) ({said})"
    return f"cannot read {what}: {said}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pagoda.engine.loader.s3",
        description="Copy a model's files from s3://BUCKET/PREFIX into a folder.",
    )
    parser.add_argument("uri", help="s3://BUCKET/PREFIX")
    parser.add_argument("--local-dir", type=Path, required=True, help="the folder to fill")
    args = parser.parse_args(argv)
    try:
        fetched = download(args.uri, args.local_dir)
    except (ModelLoadError, OSError) as e:
        # One line, last: the pod's termination message is the log's tail (ModelDownloadFailed).
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.uri}: fetched {len(fetched)} files into {args.local_dir}: {' '.join(fetched)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
