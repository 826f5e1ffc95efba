"""The single-host topology (deploy/compose): `docker-compose up` starts two CPU engine replicas
behind nginx; the official openai client's requests through nginx reach both; one replica is
killed and the requests keep succeeding, on the other.

Needs docker (dockerd running), `docker-compose`, and the images pagoda-engine:<appVersion>
(images/build.sh engine-cpu; PAGODA_E2E_ENGINE_IMAGE names another) and pagoda/nginx:bookworm
(images/nginx.sh). e2e/run.sh provides all of them; a missing one fails, with the reason."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest
from e2e_cluster import ROOT, _app_version

pytestmark = pytest.mark.e2e

COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.yaml"
PROJECT = "pagoda-e2e-compose"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Compose:
    """docker-compose on deploy/compose, as one project; `url` is where nginx answers."""

    def __init__(self, env: dict[str, str], url: str) -> None:
        self.env, self.url = env, url

    def __call__(self, *args: str, check: bool = True, timeout: float = 300):
        r = subprocess.run(
            ["docker-compose", "-p", PROJECT, "-f", str(COMPOSE), *args],
            capture_output=True, text=True, env=self.env, timeout=timeout,
        )  # fmt: skip
        if check and r.returncode:
            raise AssertionError(f"docker-compose {' '.join(args)} failed:\n{r.stderr}")
        return r


@pytest.fixture(scope="module")
def compose():
    if shutil.which("docker-compose") is None:
        pytest.fail("e2e: `docker-compose` is not on PATH (apt-get install docker-compose; "
                    "e2e/cluster/ci-setup.sh e2e installs it)", pytrace=False)  # fmt: skip
    engine = os.environ.get("PAGODA_E2E_ENGINE_IMAGE", f"pagoda-engine:{_app_version()}")
    for image, how in ((engine, "images/build.sh engine-cpu"),
                       ("pagoda/nginx:bookworm", "images/nginx.sh")):  # fmt: skip
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
            pytest.fail(f"e2e: the image {image} is not in docker (make it with {how})",
                        pytrace=False)  # fmt: skip
    port = _free_port()
    env = {**os.environ, "PAGODA_ENGINE_IMAGE": engine, "PAGODA_PORT": str(port)}
    c = Compose(env, f"http://127.0.0.1:{port}")
    try:
        # Returns once nginx has started, which waits for both engines to be healthy.
        c("up", "-d", timeout=900)
        yield c
    except BaseException:
        print(c("ps", check=False).stdout, c("logs", "--tail=40", check=False).stdout)
        raise
    finally:
        c("down", "-v", "--timeout", "5", check=False)


def _ask(client, text: str = "Hi") -> str:
    """One chat completion; the replica that answered, from nginx's X-Pagoda-Upstream header
    (the last address: the one that answered after a failed try)."""
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=[{"role": "user", "content": text}], max_tokens=4
    )
    out = raw.parse()
    assert out.choices[0].message.content is not None
    return raw.headers["X-Pagoda-Upstream"].split(",")[-1].strip()


def test_two_replicas_behind_nginx_survive_one_killed(compose):
    from openai import OpenAI

    client = OpenAI(base_url=f"{compose.url}/v1", api_key="unused", timeout=120, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["smollm2"]
    served = {_ask(client) for _ in range(4)}
    assert len(served) == 2, f"round-robin should reach both replicas, reached {served}"

    # A stream through nginx, chunk by chunk.
    stream = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Count."}], max_tokens=8,
        stream=True,
    )  # fmt: skip
    assert sum(1 for c in stream if c.choices and c.choices[0].delta.content) >= 1

    compose("kill", "engine-b")
    started = time.monotonic()
    after = [_ask(client, f"Question {i}") for i in range(6)]
    print(f"\n6 requests after one replica was killed: {time.monotonic() - started:.1f} s")
    assert len(set(after)) == 1, f"all on the surviving replica, got {after}"
    assert set(after) < served
