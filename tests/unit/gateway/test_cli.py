"""`pagoda gateway` flags: bad values are one-line errors, never a traceback."""

from __future__ import annotations

import pytest

from pagoda.engine.cli import main
from pagoda.gateway.main import parse_args


@pytest.mark.parametrize(
    "argv, needle",
    [
        ([], "--namespace NAME"),
        (["-n", "a", "--queue-size", "0"], "must be > 0"),
        (["-n", "a", "--max-body-bytes", "lots"], "--max-body-bytes: not a whole number"),
        (["-n", "a", "--prefix-load-factor", "1"], "must be > 1"),
        (["-n", "a", "-A"], "not allowed with argument"),
    ],
)
def test_bad_flags(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2 and needle in capsys.readouterr().err


def test_flags_reach_the_settings():
    args = parse_args(["-n", "a", "-n", "b", "--queue-timeout", "2.5", "--prefix-chars", "64"])
    assert (args.namespace, args.queue_timeout, args.prefix_chars) == (["a", "b"], 2.5, 64)


def test_no_cluster_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["gateway", "-n", "a"]) == 2
    assert "no cluster credentials" in capsys.readouterr().err
