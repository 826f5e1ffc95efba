"""The `pagoda` command: serve, chat, bench, operator."""

from __future__ import annotations

import argparse
import logging
import sys

from pagoda.engine.args import add_engine_args, configs_from_args
from pagoda.engine.config_file import expand_config_file
from pagoda.engine.loader.errors import ModelLoadError
from pagoda.engine.vllm_flags import add_vllm_flags


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "operator":
        from pagoda.operator.main import main as operator_main  # no torch in the operator's image

        return operator_main(argv[1:])
    if argv and argv[0] == "gateway":
        from pagoda.gateway.main import main as gateway_main  # no torch in the gateway either

        return gateway_main(argv[1:])
    argv = expand_config_file(argv)
    parser = argparse.ArgumentParser(
        prog="pagoda", description="Serve open LLMs, and run them on Kubernetes."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="OpenAI-compatible HTTP server (default model when none is named)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  pagoda serve Qwen/Qwen3-8B --max-model-len 8192\n"
        "  HF_TOKEN=hf_... pagoda serve hf://meta-llama/Llama-3.1-8B-Instruct@main\n"
        "  pagoda serve ./model-folder          # config.json, *.safetensors, tokenizer\n"
        "  pagoda serve model.gguf",
    )
    add_serve_args(serve)

    chat = sub.add_parser("chat", help="chat with a model in the terminal")
    add_engine_args(chat)
    chat.add_argument("--max-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.7)

    bench = sub.add_parser("bench", help="benchmarks, like `vllm bench`").add_subparsers(
        dest="bench", required=True
    )
    throughput = bench.add_parser("throughput", help="offline throughput on a W1-shaped workload")
    add_engine_args(throughput)
    from pagoda.engine.bench.throughput import add_throughput_args

    add_throughput_args(throughput)
    latency = bench.add_parser(
        "latency", help="time to generate a batch; decode step vs weight read"
    )
    add_engine_args(latency)
    from pagoda.engine.bench.latency import add_latency_args

    add_latency_args(latency)
    prefix = bench.add_parser("prefix", help="shared-prefix workload, prefix caching on and off")
    add_engine_args(prefix)
    from pagoda.engine.bench.prefix import add_prefix_args

    add_prefix_args(prefix)
    serve_bench = bench.add_parser(
        "serve", help="drive an OpenAI-compatible server; TTFT/ITL/latency percentiles"
    )
    from pagoda.engine.bench.serve import add_bench_serve_args

    add_bench_serve_args(serve_bench)
    soak = bench.add_parser(
        "soak", help="random requests, parameters and disconnects against a server; leak checks"
    )
    from pagoda.engine.bench.soak import add_soak_args

    add_soak_args(soak)

    sub.add_parser("operator", help="run the Kubernetes operator (see `pagoda operator --help`)")
    sub.add_parser("gateway", help="route OpenAI requests by model (see `pagoda gateway --help`)")

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "serve":
            from pagoda.engine.server.api_server import run_server

            configs = configs_from_args(args)
            if configs[0].node_rank > 0:  # a further node of a multi-node engine: workers only
                from pagoda.engine.executor.multiproc import run_headless

                return run_headless(configs[0])
            return run_server(configs, args)
        if args.command == "chat":
            return _chat(args)
        if args.bench == "throughput":
            from pagoda.engine.bench.throughput import run_throughput

            return run_throughput(configs_from_args(args)[0], args)
        if args.bench == "latency":
            from pagoda.engine.bench.latency import run_latency

            return run_latency(configs_from_args(args)[0], args)
        if args.bench == "prefix":
            from pagoda.engine.bench.prefix import run_prefix

            return run_prefix(configs_from_args(args)[0], args)
        if args.bench == "soak":
            from pagoda.engine.bench.soak import run_soak

            return run_soak(args)
        from pagoda.engine.bench.serve import run_bench_serve

        return run_bench_serve(args)
    except ModelLoadError as e:  # found at start: one line naming the file, repo or number
        print(f"pagoda: error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # a bad flag value found after parsing: a message, not a traceback
        parser.error(str(e))


def add_serve_args(parser: argparse.ArgumentParser) -> None:
    """`pagoda serve`'s flags: the engine's, the server's, then vLLM's others (accepted or refused)."""
    from pagoda.engine.server.args import add_server_args

    add_engine_args(parser)
    add_server_args(parser)
    add_vllm_flags(parser)


def _chat(args: argparse.Namespace) -> int:
    from pagoda.engine.llm import LLM
    from pagoda.engine.sampling_params import SamplingParams

    config = configs_from_args(args)[0]
    llm = LLM(**vars(config))
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature)
    messages: list[dict] = []
    print(f"Chatting with {config.name}. Empty line or Ctrl-D to quit.", file=sys.stderr)
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            break
        if not line:
            break
        messages.append({"role": "user", "content": line})
        reply = llm.chat(messages, params)[0].outputs[0].text
        print(reply)
        messages.append({"role": "assistant", "content": reply})
    return 0


if __name__ == "__main__":
    sys.exit(main())
