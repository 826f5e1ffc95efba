"""--root-path: behind an Ingress that forwards /m1/... unchanged, the API answers under /m1."""

from fastapi.testclient import TestClient
from server_fakes import FakeAsyncLLM

from pagoda.engine.server.api_server import build_app


def test_routes_answer_under_the_root_path_and_without_it():
    engine = FakeAsyncLLM()
    with TestClient(build_app({engine.config.name: engine}, root_path="/m1")) as client:
        assert client.get("/m1/v1/models").json()["data"][0]["id"] == engine.config.name
        assert client.get("/m1/health").status_code == 200
        assert client.get("/health").status_code == 200  # probes hit the pod directly
        assert client.get("/m2/v1/models").status_code == 404
