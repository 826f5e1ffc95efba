"""A local Hugging Face Hub: the HTTP paths huggingface_hub's snapshot_download calls, over
repos held in memory. Tests point HF_ENDPOINT at it (in-process:
huggingface_hub.constants.ENDPOINT), and fill repos with tiny models and `save_tiny_tokenizer`.
The e2e tier runs it as a server in the cluster, one repo a folder (standard library only, so any
Python image runs it):
  python3 local_hub.py --port 8000 org/tiny=/model [ORG/NAME=FOLDER ...]

Paths, as huggingface_hub 1.x/2.x call them:
  GET  /api/models/{repo}/revision/{rev}         repo info; its `sha` is the commit
  GET  /api/models/{repo}/tree/{commit}          the file list (one page: no Link header)
  HEAD /{repo}/resolve/{rev}/{file}              X-Repo-Commit, ETag, Content-Length
  GET  /{repo}/resolve/{rev}/{file}              the bytes
Errors carry X-Error-Code as the Hub sends it: RepoNotFound (401), GatedRepo (403),
RevisionNotFound and EntryNotFound (404).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import unquote, urlsplit


@dataclass
class HubRepo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> path -> bytes
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> sha
    token: str | None = None  # a gated repo answers only a request with this bearer token

    def add_commit(self, files: dict[str, bytes], ref: str = "main") -> str:
        sha = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
        self.commits[sha], self.refs[ref] = files, sha
        return sha

    def add_folder(self, folder: Path, ref: str = "main") -> str:
        return self.add_commit(
            {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}, ref
        )

    def commit(self, rev: str) -> str | None:
        return rev if rev in self.commits else self.refs.get(rev)


class LocalHub:
    """`with LocalHub() as hub:` serves hub.repos on hub.url; hub.file_gets lists the files
    fetched (printed too, when `print_gets`: a server's log says what it served)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, print_gets: bool = False) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.file_gets: list[str] = []
        self.print_gets = print_gets
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub._answer(self, body=True)

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def _answer(self, req: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(req.path).path)
        api = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)", path)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        match = api or resolve
        if match is None:
            return _send(req, 404, b"", {}, body)
        repo = self.repos.get(match.group(1))
        if repo is None:
            return _error(req, 401, "RepoNotFound", body)
        if repo.token is not None and req.headers.get("Authorization") != f"Bearer {repo.token}":
            return _error(req, 403 if req.headers.get("Authorization") else 401, "GatedRepo", body)
        rev = match.group(3) if api else match.group(2)
        sha = repo.commit(rev)
        if sha is None:
            return _error(req, 404, "RevisionNotFound", body)
        files = repo.commits[sha]
        if api and api.group(2) == "revision":
            info = {"id": match.group(1), "sha": sha, "siblings": [{"rfilename": f} for f in files]}
            return _send(req, 200, json.dumps(info).encode(), {}, body)
        if api:
            tree = [
                {"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                for f, b in files.items()
            ]
            return _send(req, 200, json.dumps(tree).encode(), {}, body)
        name = resolve.group(3)
        if name not in files:
            return _error(req, 404, "EntryNotFound", body)
        if body:
            self.file_gets.append(f"{match.group(1)}/{name}")
            if self.print_gets:
                print(f"GET {match.group(1)}/{name}", flush=True)
        data = files[name]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        return _send(req, 200, data, headers, body)


def _error(req: BaseHTTPRequestHandler, status: int, code: str, body: bool) -> None:
    _send(req, status, json.dumps({"error": code}).encode(), {"X-Error-Code": code}, body)


def _send(
    req: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str], body: bool
) -> None:
    req.send_response(status)
    for k, v in {"Content-Type": "application/json", **headers}.items():
        req.send_header(k, v)
    req.send_header("Content-Length", str(len(data)))
    req.end_headers()
    if body:
        req.wfile.write(data)


def save_tiny_tokenizer(folder: Path, vocab_size: int = 512) -> None:
    """A word-level tokenizer over words w3..w{n}: enough for the loader to find and load."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description="serve folders as Hub repos (branch main)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("repos", nargs="+", metavar="ORG/NAME=FOLDER")
    args = parser.parse_args()
    hub = LocalHub(args.host, args.port, print_gets=True)
    for repo in args.repos:
        name, _, folder = repo.partition("=")
        hub.repos[name] = HubRepo()
        hub.repos[name].add_folder(Path(folder))
    print(f"serving {', '.join(hub.repos)} on {hub.url}", flush=True)
    hub.serve_forever()


if __name__ == "__main__":
    main()
