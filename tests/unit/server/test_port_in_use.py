"""A port in use is a one-line error before any model loads."""

from __future__ import annotations

import socket

import pytest

from pagoda.engine.cli import main


def test_serve_on_a_port_in_use_is_a_one_line_error(capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            main(["serve", "--host", "127.0.0.1", "--port", str(port)])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"pagoda: error: cannot listen on 127.0.0.1:{port}: Address already in use"
