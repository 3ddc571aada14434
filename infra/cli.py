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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("leadflow")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def rules_commands_module():
    from leadflow_infra import rules_commands

    return rules_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leadflow", description="Lead qualification and marketing-to-sales handoff."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the API, stream consumer and scheduled jobs locally (no AWS account needed)",
        description=(
            "Run the Lambda handlers on an embedded DynamoDB endpoint: an HTTP gateway for the API, "
            "a poller feeding the table's stream to the stream handler, and the scheduled jobs. "
            "GET /healthz answers 200 when everything is ready. Every write is on disk before it is "
            "answered (a journal in the data directory), so even kill -9 loses nothing acknowledged; "
            "Ctrl-C or SIGTERM stops it cleanly."
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
        default=None,
        metavar="SECONDS",
        help="run the rescore job every SECONDS (default: JobsFunction's schedule in template.yaml)",
    )
    serve.add_argument(
        "--sla-every",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="run the SLA watchdog that escalates unaccepted SQLs every SECONDS "
             "(default: JobsFunction's schedule in template.yaml)",
    )
    serve.add_argument(
        "--funnel-every",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="run the funnel snapshot every SECONDS (default: JobsFunction's schedule in template.yaml)",
    )
    serve.add_argument(
        "--rules-every",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="look for a published rules version to re-score leads by every SECONDS (default: JobsFunction's "
             "schedule in template.yaml, every minute)",
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="let pages of ORIGIN (e.g. https://www.example.com, https://*, *) call the API from the browser; "
             "repeat for several (default: $LEADFLOW_CORS_ORIGINS, comma-separated, else the template's "
             "CorsOrigins). Methods, headers and max age are the template's HttpApi CorsConfiguration",
    )
    noise = serve.add_mutually_exclusive_group()
    noise.add_argument("--quiet", action="store_true", help="only warnings and errors, no access log")
    noise.add_argument("--verbose", action="store_true", help="debug logs, Powertools logs and metrics")
    serve.set_defaults(func=serve_command)

    dlq = commands.add_parser(
        "dlq",
        help="list or replay stage moves that could not be delivered to a sink",
        description=(
            "Dead letters are whole stage moves, one sink each, with the reason they were not delivered. "
            "Without --stack-name or queue URLs this talks to the `leadflow serve` running on --data-dir."
        ),
    )
    dlq_commands = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    for name, help_text in (("list", "show the dead letters"), ("replay", "send dead letters back through the retry queue")):
        sub = dlq_commands.add_parser(name, help=help_text, description=help_text)
        where = sub.add_mutually_exclusive_group()
        where.add_argument("--data-dir", default=".leadflow", help="data directory of a running leadflow serve (default .leadflow)")
        where.add_argument("--stack-name", help="a deployed CloudFormation stack: its outputs name the queues and table")
        where.add_argument("--env", action="store_true",
                           help="use LEADFLOW_DLQ_URL, LEADFLOW_RETRY_QUEUE_URL and LEADFLOW_TABLE from the environment")
        sub.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
        if name == "replay":
            sub.add_argument("ids", nargs="*", metavar="MESSAGE_ID", help="dead letters to replay (default: all)")
            sub.add_argument("--sink", help="only dead letters of this sink (slack, email, webhook, hubspot, salesforce, eventbridge)")
        sub.set_defaults(func=dlq_command)

    rules = commands.add_parser("rules", help="check, diff, publish and roll back rules versions")
    rules_commands = rules.add_subparsers(dest="rules_command", metavar="COMMAND", required=True)
    check = rules_commands.add_parser(
        "check", help="validate a rules file and print every error with its line",
        description="Validate a rules file exactly as the functions load it. Every error is printed with its "
                    "line and place in the file; the exit code is 1 if there is any.")
    check.add_argument("file", help="the rules file (YAML)")
    check.set_defaults(func=rules_check_command)
    rules_commands_module().add_rules_commands(rules_commands)
    rules_commands_module().add_commands(commands)

    hooks = commands.add_parser("webhooks", help="try vendor webhooks against a running stack")
    hook_commands = hooks.add_subparsers(dest="webhooks_command", metavar="ACTION", required=True)
    test = hook_commands.add_parser(
        "test",
        help="sign a payload file as the vendor would and POST it to /v1/webhooks/SOURCE",
        description=(
            "Signs FILE's bytes, unchanged, with SOURCE's scheme (HubSpot v3, Mautic, Typeform, Calendly, "
            "SendGrid ECDSA, Standard Webhooks for generic) and sends it, so you can check a secret, a URL "
            "and a mapping before pointing the vendor at leadflow. Prints the answer: per item, applied, "
            "duplicate, ignored or failed."
        ),
    )
    test.add_argument("source", choices=["hubspot", "mautic", "typeform", "calendly", "sendgrid", "generic"])
    test.add_argument("file", help="the payload, sent byte for byte")
    test.add_argument("--url", help="base URL of the API (default: the leadflow serve running on --data-dir, "
                                    "else http://127.0.0.1:8080)")
    test.add_argument("--data-dir", default=".leadflow", help="data directory of a running leadflow serve")
    test.add_argument("--secret", help="the signing secret (default LEADFLOW_WEBHOOK_SECRET_<SOURCE>); for "
                                       "sendgrid a PEM private key or a path to one")
    test.set_defaults(func=webhooks_test_command)

    imp = commands.add_parser(
        "import",
        help="import a CRM or marketing-automation export (CSV) through POST /v1/import",
        description=(
            "Maps each row of FILE through the mapping (YAML, `mapping: 1`) to events, a stage and an outcome, "
            "and sends them in batches. Rows the mapping cannot read are rejected with the column named; the "
            "rest go on. Progress is kept in DATA_DIR/imports/: running the same command again resumes after "
            "the last acknowledged row, and re-sending rows is harmless (they come back unchanged)."
        ),
    )
    imp.add_argument("file", metavar="FILE.csv", help="the export: UTF-8 CSV, separated by , ; or tab")
    imp.add_argument("--mapping", required=True, metavar="MAP.yaml", help="how the columns become events")
    where = imp.add_mutually_exclusive_group()
    where.add_argument("--url", help="base URL of the API (default: the leadflow serve running on --data-dir)")
    where.add_argument("--stack-name", help="a deployed CloudFormation stack: its ApiUrl output")
    imp.add_argument("--data-dir", default=".leadflow",
                     help="data directory of a running leadflow serve, and where the import's progress is kept "
                          "(default .leadflow)")
    imp.add_argument("--api-key", help="the API key (default LEADFLOW_API_KEY)")
    imp.add_argument("--batch", type=_batch_size, default=25, metavar="ROWS", help="rows per request (1-50, default 25)")
    imp.add_argument("--limit", type=_positive_int, metavar="N", help="stop after N rows (run again to continue)")
    imp.add_argument("--restart", action="store_true", help="start from the first row, ignoring saved progress")
    imp.add_argument("--rejects", metavar="PATH", help="write every rejected row (row, field, reason) to PATH as CSV")
    imp.add_argument("--json", action="store_true", help="print the summary as JSON on stdout instead of tables")
    imp.set_defaults(func=import_command)

    funnel = commands.add_parser(
        "funnel",
        help="the funnel from history: conversion, cohorts, velocity and reasons, by source or another cut",
        description=(
            "Reads GET /v1/funnel of the stack (by cut and cohort) and prints it as tables. "
            "--csv writes it as a spreadsheet; --rebuild recounts every lead from the table."
        ),
    )
    funnel.add_argument("--by", choices=("source", "last_source", "form", "fit_grade", "country", "owner"),
                        help="cut the funnel by this (default: the whole funnel)")
    funnel.add_argument("--cohort", choices=("week", "month"), help="cohort period (default month)")
    funnel.add_argument("--since", metavar="DATE", help="cohorts starting from this ISO date")
    funnel.add_argument("--until", metavar="DATE", help="cohorts starting before this ISO date")
    funnel.add_argument("--csv", metavar="FILE", help="write the funnel as CSV to FILE (- for stdout)")
    funnel.add_argument("--json", action="store_true", help="print the answer as JSON")
    funnel.add_argument("--rebuild", action="store_true",
                        help="recount every lead into a new generation (after deploying on an existing table, "
                             "or to repair the figures); needs the table")
    where = funnel.add_mutually_exclusive_group()
    where.add_argument("--url", help="base URL of the API (default: the leadflow serve running on --data-dir)")
    where.add_argument("--stack-name", help="a deployed CloudFormation stack: its ApiUrl and TableName outputs")
    funnel.add_argument("--data-dir", default=".leadflow", help="data directory of a running leadflow serve")
    funnel.add_argument("--api-key", help="the API key (default LEADFLOW_API_KEY)")
    funnel.set_defaults(func=_funnel_command)
    return parser


def _funnel_command(args: argparse.Namespace) -> int:
    from leadflow_infra.funnel_report import funnel_command

    return funnel_command(args)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _batch_size(text: str) -> int:
    value = _positive_int(text)
    if value > 50:
        raise argparse.ArgumentTypeError("the import route takes at most 50 rows a request")
    return value


def _import_base_url(args: argparse.Namespace) -> str:
    """--url, else the stack's ApiUrl output, else the leadflow serve on --data-dir."""
    from leadflow_infra.target import resolve

    return resolve(args, "import").need_api("import")


def webhooks_test_command(args: argparse.Namespace) -> int:
    import json
    import time
    import urllib.error
    import urllib.request
    from pathlib import Path

    try:
        body = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"leadflow webhooks test: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    secret = args.secret or os.environ.get(f"LEADFLOW_WEBHOOK_SECRET_{args.source.upper()}")
    if not secret:
        print(f"leadflow webhooks test: no secret; pass --secret or set LEADFLOW_WEBHOOK_SECRET_{args.source.upper()}",
              file=sys.stderr)
        return 2
    if args.source == "sendgrid" and Path(secret).is_file():
        secret = Path(secret).read_text(encoding="utf-8")
    base = args.url
    if not base:
        try:
            base = json.loads(Path(args.data_dir, "stack.json").read_text(encoding="utf-8"))["api_url"]
        except (OSError, ValueError, KeyError):
            base = "http://127.0.0.1:8080"
    url = base.rstrip("/") + f"/v1/webhooks/{args.source}"
    if args.source == "generic":
        from datetime import datetime, timezone
        from uuid import uuid4

        from standardwebhooks.webhooks import Webhook

        msg_id = f"msg_{uuid4().hex}"
        stamp = datetime.now(timezone.utc)
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(stamp.timestamp())),
                   "webhook-signature": Webhook(secret).sign(msg_id, stamp, body.decode("utf-8"))}
    else:
        from leadflow.adapters.vendor_webhooks.signatures import sign

        headers = sign(args.source, body, secret, method="POST", url=url, now=time.time())
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"content-type": "application/json", "user-agent": "leadflow-webhooks-test",
                                              **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            status, answer = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, answer = exc.code, exc.read()
    except OSError as exc:
        print(f"leadflow webhooks test: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    try:
        shown = json.dumps(json.loads(answer), indent=2)
    except ValueError:
        shown = answer.decode("utf-8", "replace")
    print(f"POST {url} -> {status}")
    print(shown)
    return 0 if 200 <= status < 300 else 1


def _dlq_target(args: argparse.Namespace) -> dict[str, Any]:
    """Queue URLs, table and client settings for the dead-letter commands."""
    from leadflow_infra.target import resolve

    if args.env:
        missing = [v for v in ("LEADFLOW_DLQ_URL", "LEADFLOW_RETRY_QUEUE_URL", "LEADFLOW_TABLE") if not os.environ.get(v)]
        if missing:
            raise SystemExit(f"leadflow dlq: --env needs {', '.join(missing)}")
        return {"dead_letter": os.environ["LEADFLOW_DLQ_URL"], "retry": os.environ["LEADFLOW_RETRY_QUEUE_URL"],
                "table": os.environ["LEADFLOW_TABLE"], "client": {}}
    target = resolve(args, "dlq")
    return {"dead_letter": target.queues.get("dead_letter"), "retry": target.queues.get("retry"),
            "table": target.table, "client": target.client}


def dlq_command(args: argparse.Namespace) -> int:
    import json

    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from leadflow_infra import dlq
    from leadflow.adapters.dynamodb.ledger import DynamoDeliveryLedger
    from leadflow.adapters.dynamodb.store import DynamoLeadStore

    target = _dlq_target(args)
    session = boto3.session.Session()
    try:
        sqs = session.client("sqs", **target["client"])
        if args.dlq_command == "list":
            rows = [letter.row() for letter in dlq.peek(sqs, target["dead_letter"])]
            verb = "dead letter"
        else:
            dynamodb = session.client("dynamodb", **target["client"])
            ledger = DynamoDeliveryLedger(target["table"], client=dynamodb)
            rows = dlq.replay(sqs, ledger, target["dead_letter"], target["retry"], ids=args.ids, sink=args.sink,
                              leads=DynamoLeadStore(target["table"], client=dynamodb))
            verb = "replayed"
    except (BotoCoreError, ClientError) as exc:
        print(f"leadflow dlq: {exc}", file=sys.stderr)
        return 1
    if args.json:
        for row in rows:
            print(json.dumps(row, default=str))
        return 0
    if not rows:
        print("no dead letters" if args.dlq_command == "list" else "nothing to replay")
        return 0
    columns = list(rows[0])
    widths = {c: min(48, max(len(c), *(len(str(r.get(c, ""))) for r in rows))) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, ""))[: widths[c]].ljust(widths[c]) for c in columns))
    print(f"{len(rows)} {verb}{'s' if len(rows) != 1 and verb == 'dead letter' else ''}")
    return 0


def rules_check_command(args: argparse.Namespace) -> int:
    from leadflow_infra.rules_file import check

    checked = check(args.file)
    if checked.ok:
        print(f"{checked.source}: ok, {checked.summary}")
        return 0
    for problem in checked.problems:
        print(problem.text(checked.source), file=sys.stderr)
    count = len(checked.problems)
    print(f"{checked.source}: {count} error{'s' if count != 1 else ''}; nothing loads these rules until they are fixed",
          file=sys.stderr)
    return 1


def import_command(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from leadflow_infra import importer

    base = _import_base_url(args)
    ui = importer.RichUI()
    try:
        summary = importer.run_import(
            args.file, args.mapping, url=base, api_key=args.api_key or os.environ.get("LEADFLOW_API_KEY") or None,
            data_dir=args.data_dir, batch=args.batch, limit=args.limit, restart=args.restart, ui=ui,
        )
        failure = None
    except importer.ImportFailed as exc:
        summary, failure = exc.summary, exc
    if summary is not None:
        if args.rejects:
            try:
                importer.write_rejects(args.rejects, summary.rejects)
            except OSError as exc:
                print(f"leadflow import: cannot write {args.rejects}: {exc.strerror or exc}", file=sys.stderr)
        if args.json:
            print(json.dumps(summary.to_json(), indent=2))
        else:
            importer.render_summary(summary, Console(), rejects_path=args.rejects)
    if failure is not None:
        print(f"leadflow import: {failure.message}", file=sys.stderr)
        return failure.exit_code
    return 0


def _configure_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The handlers' Powertools logger owns the "leadflow" logger (JSON on stdout, its
    # own level) and filters "leadflow*" records out of the root handlers. The local
    # stack's lines get a handler of their own: plain text on stderr.
    local_handler = logging.StreamHandler(sys.stderr)
    local_handler.setFormatter(formatter)
    local = logging.getLogger("leadflow_infra.local")
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
    from leadflow_infra.local.persist import SnapshotError
    from leadflow_infra.local.stack import LocalStack

    rules_path = os.environ.get("LEADFLOW_RULES")
    if rules_path:
        # Refuse to start on broken rules: a stack that answers /healthz and then 500s on
        # every request (public forms included) is worse than one that does not start.
        from leadflow_infra.rules_file import check

        checked = check(rules_path)
        if not checked.ok:
            for problem in checked.problems:
                print(f"leadflow: {problem.text(checked.source)}", file=sys.stderr)
            print(f"leadflow: not starting: LEADFLOW_RULES={rules_path} is invalid "
                  f"(`leadflow rules check {rules_path}` prints the same)", file=sys.stderr, flush=True)
            return 2

    cors_origins = args.cors_origin if args.cors_origin is not None else os.environ.get("LEADFLOW_CORS_ORIGINS")
    if cors_origins is not None:
        from leadflow_infra.local.cors import template_cors
        from leadflow_infra.template import resolve_template

        try:
            template_cors(resolve_template(), origins=cors_origins)
        except ValueError as exc:
            print(f"leadflow: not starting: {exc}", file=sys.stderr, flush=True)
            return 2

    stack = LocalStack(
        host=args.host,
        port=args.port,
        cors_origins=cors_origins,
        data_dir=args.data_dir,
        persist=not args.no_persist,
        rescore_every=args.rescore_every,
        sla_every=args.sla_every,
        funnel_every=args.funnel_every,
        rules_every=args.rules_every,
        verbose=args.verbose,
        access_log=not args.quiet,
    )
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        if stop_requested.is_set():
            print("leadflow: stopping immediately (every acknowledged write is already on disk)",
                  file=sys.stderr, flush=True)
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
