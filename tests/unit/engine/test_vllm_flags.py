"""vLLM's `serve` command lines: every vLLM flag accepted or refused in one line, --config YAML,
--served-model-name with several names, --chat-template."""

from __future__ import annotations

import pytest

from pagoda.engine import cli
from pagoda.engine.server import api_server
from pagoda.engine.server.args import load_chat_template
from pagoda.engine.vllm_flags import VLLM_FLAGS


@pytest.fixture
def serve(monkeypatch):
    """Runs `pagoda serve ARGS` up to run_server; returns (configs, args) it was called with."""
    called = []
    monkeypatch.setattr(api_server, "run_server", lambda c, a: called.append((c, a)) or 0)

    def run(*argv: str):
        assert cli.main(["serve", *argv]) == 0
        return called.pop()

    return run


def refused(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(["serve", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err  # one line, no usage dump
    return err


def test_accepted_vllm_flags_change_nothing(serve):
    [plain], _ = serve()
    [cfg], args = serve(
        "--trust-remote-code",
        "--enable-chunked-prefill",
        "--disable-log-requests",
        "--disable-log-stats",
        "--tokenizer-mode",
        "auto",
    )
    assert cfg == plain
    assert not hasattr(args, "trust_remote_code")


def test_unsupported_vllm_flags_are_refused_by_name(capsys, serve):
    assert "--enable-sleep-mode" in refused(capsys, "--enable-sleep-mode")
    err = refused(capsys, "--data-parallel-size", "2", "--max-num-seqs", "4")
    assert err.startswith(
        "pagoda: error: --data-parallel-size is a vLLM flag Pagoda does not support"
    )
    err = refused(capsys, "--tokenizer-mode", "slow")
    assert "--tokenizer-mode slow" in err and "auto" in err
    with pytest.raises(SystemExit):  # e4m3 only: argparse lists the choices
        cli.main(["serve", "--kv-cache-dtype", "fp8_e5m2"])
    assert "invalid choice: 'fp8_e5m2'" in capsys.readouterr().err
    assert "--no-enable-chunked-prefill" in refused(capsys, "--no-enable-chunked-prefill")


def test_every_listed_flag_is_on_the_serve_parser(capsys):
    """Each entry either is implemented (the parser's own flag) or gets its accept/refuse action."""
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    help_text = capsys.readouterr().out
    for spec in VLLM_FLAGS:
        assert spec.flag in help_text


def test_several_served_model_names(serve):
    [cfg], _ = serve("--served-model-name", "a", "b")
    assert (cfg.name, cfg.served_names) == ("a", ["a", "b"])
    one, two = serve("--model", "x", "--model", "y", "--served-model-name", "p", "q")[0]
    assert (one.served_names, two.served_names) == (["p"], ["q"])
    with pytest.raises(SystemExit):
        serve("--model", "x", "--model", "y", "--served-model-name", "p")


def test_config_file_holds_flags_and_the_command_line_wins(tmp_path, serve):
    config = tmp_path / "vllm.yaml"
    config.write_text(
        "model: default\nserved-model-name: [m, alias]\nmax_num_seqs: 8\n"
        "enable-prefix-caching: false\ntrust-remote-code: true\nport: 9001\n"
    )
    [cfg], args = serve("--config", str(config), "--max-num-seqs", "4")
    assert cfg.served_names == ["m", "alias"]
    assert (cfg.max_num_seqs, cfg.enable_prefix_caching, args.port) == (4, False, 9001)


def test_config_file_with_an_unsupported_flag_is_refused(tmp_path, capsys):
    config = tmp_path / "vllm.yaml"
    config.write_text("enable-sleep-mode: true\n")
    assert "--enable-sleep-mode" in refused(capsys, f"--config={config}")


def test_chat_template_from_a_file_or_inline(tmp_path):
    (tmp_path / "t.jinja").write_text("{{ messages[0].content }}")
    assert load_chat_template(str(tmp_path / "t.jinja")) == "{{ messages[0].content }}"
    assert load_chat_template("{% for m in messages %}{% endfor %}").startswith("{%")
    with pytest.raises(ValueError, match="--chat-template"):
        load_chat_template(str(tmp_path / "missing.jinja"))


def test_max_logprobs_flag(serve, capsys):
    [cfg], _ = serve("--max-logprobs", "5")
    assert cfg.max_logprobs == 5
    with pytest.raises(SystemExit):
        serve("--max-logprobs", "50")


def test_a_quantization_method_pagoda_cannot_run_is_refused_with_the_reason(capsys, serve):
    with pytest.raises(SystemExit) as e:
        serve("--quantization", "bitsandbytes")
    assert e.value.code == 2
    assert (
        "--quantization bitsandbytes: bitsandbytes weights are not supported (supported: fp8, "
        "compressed-tensors, awq, gptq, awq_marlin, gptq_marlin)" in (capsys.readouterr().err)
    )


def test_no_listed_flag_is_one_pagoda_implements():
    """An entry for a flag the engine's or server's parser has is dead: the parser's flag wins."""
    import argparse

    from pagoda.engine.args import add_engine_args
    from pagoda.engine.server.args import add_server_args

    parser = argparse.ArgumentParser()
    add_engine_args(parser)
    add_server_args(parser)
    implemented = set(parser._option_string_actions)
    assert [f.flag for f in VLLM_FLAGS if f.flag in implemented] == []
