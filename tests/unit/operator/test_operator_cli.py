"""`pagoda operator` arguments, and the promise that the operator never loads the engine."""

import subprocess
import sys

import pytest

from pagoda.operator.main import parse_args


def test_scope_is_required_and_exclusive():
    with pytest.raises(SystemExit):
        parse_args([])
    with pytest.raises(SystemExit):
        parse_args(["-n", "a", "--all-namespaces"])
    a = parse_args(
        ["-n", "a", "-n", "b", "--metrics-port", "9090", "--engine-image", "reg/pagoda-engine:2"]
    )
    assert (
        a.namespace == ["a", "b"]
        and a.metrics_port == 9090
        and a.engine_image == "reg/pagoda-engine:2"
    )
    assert parse_args(["-A"]).liveness_port == 8081 and parse_args(["-A"]).metrics_port == 8080


def test_operator_imports_neither_torch_nor_the_engine():
    code = (
        "import sys, pagoda.operator.handlers, pagoda.operator.main; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('pagoda.engine')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
