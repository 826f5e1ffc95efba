from __future__ import annotations

import pytest
from chart_render import find_helm


@pytest.fixture(scope="session")
def helm() -> str:
    return find_helm()
