"""The ``leadflow`` command line.

``leadflow serve`` runs the local stack in the foreground. The local stack (and
with it moto) is imported only inside that command, so the package stays free
of moto everywhere else.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("port must be between 0 and 65535")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leadflow", description="Lead qualification and marketing-to-sales handoff."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the API, stream consumer and scheduled jobs locally (no AWS account needed)",
        description=(
            "Run the Lambda handlers on an embedded DynamoDB endpoint: an HTTP gateway for the API, "
            "a poller feeding the table's stream to the stream handler, and the scheduled jobs. "
            "GET /healthz answers 200 when everything is ready. Ctrl-C or SIGTERM stops it and "
            "saves the tables."
        ),
    )
    serve.add_argument("--port", type=_port, default=8080, help="gateway port (default 8080; 0 picks a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="gateway address (default 127.0.0.1)")
    serve.add_argument(
        "--data-dir", default=".leadflow", help="where tables and the stream dead-letter file are kept (default .leadflow)"
    )
    serve.add_argument("--no-persist", action="store_true", help="start empty and save nothing on exit")
    serve.add_argument(
        "--rescore-every",
        type=_positive_seconds,
        default=3600.0,
        metavar="SECONDS",
        help="interval of the rescore job (default 3600); the funnel job runs daily",
    )
    noise = serve.add_mutually_exclusive_group()
    noise.add_argument("--quiet", action="store_true", help="only warnings and errors, no access log")
    noise.add_argument("--verbose", action="store_true", help="debug logs, Powertools logs and metrics")
    serve.set_defaults(func=serve_command)
    return parser


def _configure_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The handlers' Powertools logger owns the "leadflow" logger (JSON on stdout, its
    # own level) and filters "leadflow*" records out of the root handlers. The local
    # stack's lines get a handler of their own: plain text on stderr.
    local_handler = logging.StreamHandler(sys.stderr)
    local_handler.setFormatter(formatter)
    local = logging.getLogger("leadflow.local")
    local.handlers = [local_handler]
    local.setLevel(level)
    local.propagate = False
    root_handler = logging.StreamHandler(sys.stderr)
    root_handler.setFormatter(formatter)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[root_handler])
    if not verbose:
        # botocore and urllib3 are chatty about every connection.
        for name in ("botocore", "boto3", "urllib3", "werkzeug"):
            logging.getLogger(name).setLevel(logging.WARNING)


def serve_command(args: argparse.Namespace) -> int:
    _configure_logging(args.quiet, args.verbose)
    from leadflow.local.persist import SnapshotError
    from leadflow.local.stack import LocalStack

    stack = LocalStack(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        persist=not args.no_persist,
        rescore_every=args.rescore_every,
        verbose=args.verbose,
        access_log=not args.quiet,
    )
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        if stop_requested.is_set():
            print("leadflow: stopping immediately, nothing saved", file=sys.stderr, flush=True)
            os._exit(1)
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            stack.start()
        except (OSError, SnapshotError, FileNotFoundError) as exc:
            print(f"leadflow: cannot start the local stack: {exc}", file=sys.stderr, flush=True)
            return 1
        if stop_requested.is_set():
            stack.stop()
            return 0
        where = f"data in {stack.data_dir}" if stack.persist else "not persisted"
        loaded = f", {stack.loaded_items} items restored" if stack.loaded_items else ""
        print(f"leadflow serving on {stack.url} ({where}{loaded}); Ctrl-C to stop", flush=True)
        while not stop_requested.wait(1.0):
            pass
        print("leadflow: stopping", file=sys.stderr, flush=True)
        stack.stop()
        if stack.persist and stack.saved_items is not None:
            print(f"leadflow: saved {stack.saved_items} items to {stack.snapshot_path}", flush=True)
        elif stack.persist:
            print(f"leadflow: could not save to {stack.snapshot_path}, see the log above", flush=True)
        return 0
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
