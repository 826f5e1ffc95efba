"""Fixtures for the server's unit tests: the fake engine and a client of an app over it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from server_fakes import FakeAsyncLLM

from pagoda.engine.server.api_server import build_app


@pytest.fixture
def engine() -> FakeAsyncLLM:
    return FakeAsyncLLM()


@pytest.fixture
def client(engine):
    with TestClient(build_app({engine.config.name: engine}), raise_server_exceptions=False) as c:
        yield c
