"""The evidence loop on the command line: `backtest`, `calibrate`, `rules diff | publish |
rollback | history`.

They talk to a stack the way `leadflow import` does (`--stack-name`, or the
`leadflow serve` on `--data-dir`): the rules in force and publishing go through the API
(`GET/POST /v1/rules`, with the API key), and the leads are read straight from the
table, in parallel scan segments, without writing.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from leadflow_infra.target import Api, ApiError, Target, resolve


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--stack-name", help="a deployed CloudFormation stack (its ApiUrl and TableName outputs; "
                                            "AWS credentials from the environment)")
    where.add_argument("--data-dir", default=".leadflow",
                       help="data directory of a running leadflow serve (default .leadflow)")
    parser.add_argument("--api-key", help="the API key (default LEADFLOW_API_KEY)")


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date: {text!r} (e.g. 2026-10-01)") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _share(text: str) -> float:
    value = float(text.rstrip("%")) / (100 if text.endswith("%") or float(text.rstrip("%")) > 1 else 1)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"a share between 0 and 1 (or 1% to 99%): {text!r}")
    return value


def _band(text: str) -> tuple[float, float]:
    try:
        low, high = (_share(part) for part in text.split("-", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a range like 5%-15%: {text!r}") from None
    if low >= high:
        raise argparse.ArgumentTypeError(f"{text!r}: the low end must be below the high end")
    return low, high


def _by() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"[:100]
    except (KeyError, OSError):
        return "cli"


def add_commands(commands: Any) -> None:
    """`backtest` and `calibrate` as commands; `diff`, `publish`, `rollback`, `history`
    under `rules` (found by name in the parser)."""
    backtest = commands.add_parser(
        "backtest", help="score the leads on record under a rules version and compare with their outcomes",
        description="Rebuilds every stored lead from its events under RULES (default: the rules in force) as of "
                    "--as-of, without writing, and compares with the outcomes on record (won, lost, customer, "
                    "rejected) or --outcomes. Prints ROC AUC, precision, recall and volume at the MQL and SQL "
                    "criteria, conversion by score decile and new MQLs/SQLs per week.")
    backtest.add_argument("rules", nargs="?", metavar="RULES.yaml", help="a rules file (default: the rules in force)")
    backtest.add_argument("--as-of", type=_date, help="score as of this date (ISO; default now)")
    backtest.add_argument("--outcomes", metavar="CSV", help="outcomes to judge by instead of those on record: "
                                                            "lead_id or email, outcome (won/lost, 1/0), reason")
    backtest.add_argument("--html", metavar="report.html", help="also write the charts as one self-contained page")
    backtest.add_argument("--json", action="store_true", help="print the figures as JSON")
    add_target_arguments(backtest)
    backtest.set_defaults(func=backtest_command)

    calibrate = commands.add_parser(
        "calibrate", help="learn whole points and MQL/SQL criteria for the rules from the outcomes on record",
        description="Fits the points of every rule in RULES (default: the rules in force) to the outcomes on record "
                    "with cross-validation (the AUC printed is out of sample), proposes MQL and SQL criteria for a "
                    "target, and writes a new rules version to --out with a diff and one line of evidence per "
                    "changed rule. Needs the `learn` extra: pip install 'leadflow[learn]'.")
    calibrate.add_argument("rules", nargs="?", metavar="RULES.yaml", help="the rules to start from (default: in force)")
    calibrate.add_argument("--out", required=True, metavar="NEW.yaml", help="where to write the calibrated rules")
    calibrate.add_argument("--sales-ready", type=_band, default=(0.05, 0.15), metavar="LOW-HIGH",
                           help="the share of leads the SQL criteria may pass (default 5%%-15%%)")
    calibrate.add_argument("--sql-precision", type=_share, metavar="SHARE",
                           help="instead: the lowest SQL criteria whose cross-validated precision reaches this")
    calibrate.add_argument("--mql-share", type=_share, metavar="SHARE",
                           help="the share of leads the MQL criteria pass (default: from the score at which leads "
                                "convert more often than the average lead)")
    calibrate.add_argument("--version", dest="new_version", metavar="VERSION", help="the new rules' version")
    calibrate.add_argument("--as-of", type=_date, help="score as of this date (ISO; default now)")
    calibrate.add_argument("--outcomes", metavar="CSV", help="outcomes to learn from instead of those on record")
    calibrate.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    calibrate.add_argument("--seed", type=int, default=7, help="the folds' shuffle seed (default 7)")
    calibrate.add_argument("--json", action="store_true", help="print the result as JSON")
    add_target_arguments(calibrate)
    calibrate.set_defaults(func=calibrate_command)


def add_rules_commands(rules_commands: Any) -> None:
    diff = rules_commands.add_parser(
        "diff", help="what publishing NEW.yaml would do to the leads on record (nothing is written)",
        description="Replays every stored lead under the rules in force and under NEW.yaml, as of now, with the "
                    "function a publish applies: how many leads would move and where, MQL/SQL volume before and "
                    "after, the alerts it would send, examples with the rules responsible.")
    diff.add_argument("file", metavar="NEW.yaml")
    diff.add_argument("--announce", action="store_true", help="count alerts as a publish with --announce would send")
    diff.add_argument("--html", metavar="report.html", help="also write the charts as one self-contained page")
    diff.add_argument("--json", action="store_true", help="print the figures as JSON")
    diff.add_argument("--examples", type=int, default=10, help="how many moved leads to show (default 10)")
    add_target_arguments(diff)
    diff.set_defaults(func=diff_command)

    publish = rules_commands.add_parser(
        "publish", help="put NEW.yaml in force: every function within a minute, then every lead re-scored",
        description="Validates NEW.yaml, stores it as the next rules version (GET /v1/rules lists them), and waits "
                    "while the jobs function re-scores every lead under it through the normal conditional writes. "
                    "Moves the publish causes are recorded and mirrored to the CRM; sales gets one summary message "
                    "instead of one alert per lead unless --announce.")
    publish.add_argument("file", metavar="NEW.yaml")
    publish.add_argument("--announce", action="store_true", help="alert sales for each lead the publish moves")
    publish.add_argument("--by", default=None, help="who publishes (default user@host)")
    publish.add_argument("--no-wait", action="store_true", help="return once the version is stored")
    publish.add_argument("--wait", type=float, default=900, metavar="SECONDS",
                         help="how long to wait for the re-score (default 900)")
    add_target_arguments(publish)
    publish.set_defaults(func=publish_command)

    rollback = rules_commands.add_parser(
        "rollback", help="return to the previous rules version (or --to N), the same way as a publish",
        description="Publishes the previous version again (the one the version in force replaced), or version --to; "
                    "leads are re-scored under it. Moves it causes are recorded without alerts unless --announce.")
    rollback.add_argument("--to", type=int, metavar="SEQ", help="the version number to return to (see `rules history`)")
    rollback.add_argument("--announce", action="store_true")
    rollback.add_argument("--by", default=None, help="who rolls back (default user@host)")
    rollback.add_argument("--no-wait", action="store_true")
    rollback.add_argument("--wait", type=float, default=900, metavar="SECONDS")
    add_target_arguments(rollback)
    rollback.set_defaults(func=rollback_command)

    history = rules_commands.add_parser("history", help="the version in force and the published versions")
    history.add_argument("--json", action="store_true")
    add_target_arguments(history)
    history.set_defaults(func=history_command)


# -- shared ---------------------------------------------------------------------------------


def _api(target: Target, args: argparse.Namespace, command: str) -> Api:
    return Api(target.need_api(command), args.api_key)


def _in_force(api: Api, command: str) -> tuple[Any, dict[str, Any]]:
    from leadflow.settings import parse_rules_text

    try:
        described = api.call("GET", "/v1/rules")
    except ApiError as exc:
        raise SystemExit(f"leadflow {command}: cannot read the rules in force: {exc}") from None
    return parse_rules_text(described["source"], f"rules in force ({described['version']})"), described


def _load(path: str, command: str):
    from leadflow_infra.rules_file import check
    from leadflow.settings import load_rules

    checked = check(path)
    if not checked.ok:
        for problem in checked.problems:
            print(problem.text(checked.source), file=sys.stderr)
        raise SystemExit(f"leadflow {command}: {path} is invalid; nothing was done")
    return load_rules(path)


def _histories(target: Target, command: str, outcomes: str | None = None):
    from leadflow_infra.evidence import histories, read_outcomes, scan_items

    table = target.need_table(command)
    labels = None
    if outcomes:
        try:
            labels = read_outcomes(outcomes)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"leadflow {command}: {exc}") from None
    console = _console(stderr=True)
    with console.status(f"reading the leads of {target.where}…"):
        return histories(scan_items(target.aws("dynamodb"), table), labels)


def _write_html(path: str, page_of: str, result: dict[str, Any]) -> None:
    from leadflow_infra import report

    try:
        page = getattr(report, page_of)(result)
    except ImportError as exc:
        raise SystemExit(f"--html needs the report extra: pip install 'leadflow[report]' ({exc})") from None
    report.write(path, page)
    print(f"wrote {path}", file=sys.stderr)


# -- commands -------------------------------------------------------------------------------


def backtest_command(args: argparse.Namespace) -> int:
    from leadflow_infra.backtest import backtest, print_backtest

    target = resolve(args, "backtest")
    rules = _load(args.rules, "backtest") if args.rules else _in_force(_api(target, args, "backtest"), "backtest")[0]
    result = backtest(_histories(target, "backtest", args.outcomes), rules, as_of=args.as_of,
                      outcomes_from=Path(args.outcomes).name if args.outcomes else "records")
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "scores"}, indent=2))
    else:
        print_backtest(result, _console())
    if args.html:
        _write_html(args.html, "backtest_page", result)
    return 0 if result["labelled"] else 1


def calibrate_command(args: argparse.Namespace) -> int:
    try:
        from leadflow_infra import calibrate
    except ImportError as exc:
        raise SystemExit(f"leadflow calibrate needs the learn extra: pip install 'leadflow[learn]' ({exc})") from None
    target = resolve(args, "calibrate")
    if args.rules:
        _load(args.rules, "calibrate")
        path = args.rules
    else:
        described = _in_force(_api(target, args, "calibrate"), "calibrate")[1]
        path = str(Path(args.out).with_name(f".in-force-{described['version']}.yaml"))
        Path(path).write_text(described["source"], encoding="utf-8")
    goal = calibrate.Target(sql_precision=args.sql_precision, sales_ready=args.sales_ready, mql_share=args.mql_share)
    return calibrate.run(_histories(target, "calibrate", args.outcomes), path, args.out, target=goal,
                         folds=args.folds, seed=args.seed, as_of=args.as_of or datetime.now(timezone.utc),
                         json_out=args.json, console=_console(), version=args.new_version)


def diff_command(args: argparse.Namespace) -> int:
    from leadflow_infra.rules_diff import diff, print_diff

    target = resolve(args, "rules diff")
    new = _load(args.file, "rules diff")
    current, _ = _in_force(_api(target, args, "rules diff"), "rules diff")
    result = diff(_histories(target, "rules diff"), current, new, announce=args.announce, examples=args.examples)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "score_pairs"}, indent=2, ensure_ascii=False))
    else:
        print_diff(result, _console())
    if args.html:
        _write_html(args.html, "diff_page", result)
    return 0


def _wait_for_run(api: Api, seq: int, seconds: float) -> int:
    """Until the version's re-score run has recorded its result (progress from GET /v1/rules)."""
    console = _console()
    deadline = time.monotonic() + seconds
    with console.status("waiting for every function to take the new version (up to a minute)…") as status:
        while time.monotonic() < deadline:
            described = api.call("GET", "/v1/rules")
            entry = next((e for e in described.get("history", []) if e["seq"] == seq), None)
            if described.get("seq") not in (None, seq) and described["seq"] > seq:
                console.print(f"version #{described['seq']} was published meanwhile; #{seq} is no longer in force")
                return 1
            if entry is not None and entry.get("result"):
                r = entry["result"]
                moves = ", ".join(f"{n:,} {pair.replace('->', ' → ')}" for pair, n in r.get("moves", {}).items())
                console.print(f"re-scored {r['leads']:,} leads: {r['written']:,} changed"
                              + (f", moved {moves}" if moves else ", none moved")
                              + (" (each alerted)" if entry.get("announce") else
                                 "; sales gets one summary instead of an alert per lead" if moves else ""))
                return 0
            run = described.get("run")
            if run and run.get("seq") == seq:
                status.update(f"re-scoring: {run['leads']:,} leads, {run['written']:,} changed, segment "
                              f"{run['segments_done']}/{run['segments']} done…")
            time.sleep(2)
    console.print(f"still re-scoring after {seconds:g} s; `leadflow rules history` shows when it is done")
    return 1


def _published(answer: dict[str, Any], api: Api, args: argparse.Namespace) -> int:
    console = _console()
    verb = "rolled back to" if answer["action"] == "rollback" else "published"
    console.print(f"{verb} rules {answer['version']} as version #{answer['seq']}")
    for line in answer.get("changes", []):
        console.print(f"  • {line}", markup=False)
    if args.no_wait:
        console.print("in force everywhere within a minute; the jobs function then re-scores every lead")
        return 0
    return _wait_for_run(api, answer["seq"], args.wait)


def publish_command(args: argparse.Namespace) -> int:
    target = resolve(args, "rules publish")
    _load(args.file, "rules publish")
    api = _api(target, args, "rules publish")
    text = Path(args.file).read_text(encoding="utf-8")
    try:
        answer = api.call("POST", "/v1/rules", {"source": text, "by": args.by or _by(), "announce": args.announce})
    except ApiError as exc:
        print(f"leadflow rules publish: {exc}", file=sys.stderr)
        return 1
    return _published(answer, api, args)


def rollback_command(args: argparse.Namespace) -> int:
    target = resolve(args, "rules rollback")
    api = _api(target, args, "rules rollback")
    body: dict[str, Any] = {"by": args.by or _by(), "announce": args.announce}
    if args.to is not None:
        body["to"] = args.to
    try:
        answer = api.call("POST", "/v1/rules/rollback", body)
    except ApiError as exc:
        print(f"leadflow rules rollback: {exc}", file=sys.stderr)
        return 1
    return _published(answer, api, args)


def history_command(args: argparse.Namespace) -> int:
    from rich.table import Table

    target = resolve(args, "rules history")
    described = _api(target, args, "rules history").call("GET", "/v1/rules")
    if args.json:
        print(json.dumps({k: v for k, v in described.items() if k != "source"}, indent=2))
        return 0
    console = _console()
    where = f"version #{described['seq']}" if described.get("seq") else "the deployed rules file"
    console.print(f"in force: rules {described['version']} ({where})")
    if described.get("warning"):
        console.print(f"[bold red]{described['warning']}[/bold red]")
    if not described.get("history"):
        console.print("nothing published yet")
        return 0
    table = Table()
    for name in ("#", "version", "action", "by", "at", "changes", "re-score"):
        table.add_column(name)
    for e in described["history"]:
        r = e.get("result")
        done = (f"{r['leads']:,} leads, {sum(r['moves'].values()):,} moved" if r else "—")
        what = "; ".join(e.get("changes") or []) or ("" if e["action"] != "rollback" else f"back to #{e['restores']}")
        table.add_row(str(e["seq"]), e["version"], e["action"], e["by"], e["at"][:19], what[:120], done)
    console.print(table)
    return 0
