"""What each function's Lambda artifact holds, and that it is enough to run the function.

`sam build` builds every function with `functions/Makefile` (`BuildMethod: makefile`):
the function's pinned dependency closure (`functions/requirements/<handler module>.txt`,
installed with `--no-deps`), pruned, plus the leadflow package. The real build needs
the package index and the Lambda platform's wheels; here each artifact is assembled
offline from the same pins, taken from the development venv (every installed file of
each pinned distribution, per its RECORD), then the Makefile's own `prune` and `code`
steps run on it. Checked:

- every template function is built by a Makefile target, from its own requirements file;
- the pins are the venv's versions, satisfy pyproject.toml, and are a closed set (every
  dependency of a pinned distribution is pinned too, or provided by the Lambda runtime);
- no artifact holds the local stack, the emulator, test tools or a copy of boto3 /
  botocore; only ApiFunction (SendGrid's ECDSA signatures) holds cryptography;
- each handler imports and runs with nothing on sys.path but its artifact, the standard
  library and the packages the Lambda runtime provides, down to the lazily imported
  third-party modules its code paths reach (network calls fail fast on a closed port).
"""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from leadflow_infra.lambda_runtime import RUNTIME_PROVIDED, link_runtime_packages
from leadflow_infra.template import load_template
from tests.conftest import TEST_LEAD_ID_KEY

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_DIR = ROOT / "functions"
MAKEFILE = FUNCTIONS_DIR / "Makefile"
REQUIREMENTS_DIR = FUNCTIONS_DIR / "requirements"
UNION_FILE = FUNCTIONS_DIR / "requirements.txt"

# Top-level names no artifact may hold: the local stack and CLI, the emulator and its web
# stack, test and lint tools, and the runtime's own packages.
FORBIDDEN = {
    "leadflow_infra", "infra", "tests", "bench", "moto", "werkzeug", "flask", "flask_cors", "pytest", "_pytest",
    "hypothesis", "cfnlint", "importlinter", "grimp", "ruff", "responses", "docker", "rich", "sklearn",
    "boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3", "uvicorn", "h11",
}
CRYPTO = {"cryptography", "cffi", "_cffi_backend", "pycparser"}
ECDSA_VERIFIERS = {"ApiFunction"}  # adapters/vendor_webhooks/signatures.py: SendGrid's signatures

# The Lambda platform, for evaluating dependency markers.
LAMBDA_MARKERS = {
    "python_version": "3.11", "python_full_version": "3.11.0", "implementation_name": "cpython",
    "implementation_version": "3.11.0", "platform_python_implementation": "CPython", "platform_system": "Linux",
    "sys_platform": "linux", "os_name": "posix", "platform_machine": "aarch64", "platform_release": "",
    "platform_version": "",
}
REGENERATE = ("write the venv's version in functions/requirements/*.txt and functions/requirements.txt (the union), "
              "or install the pinned one (`.venv/bin/python -m pip install <name>==<version>`); then "
              "`python -m bench.artifact` rebuilds the artifacts from the index")


# ---------------------------------------------------------------- requirement files


@dataclass(frozen=True)
class Pin:
    name: str  # canonical
    version: str
    extras: frozenset[str]
    where: str  # file:line


def read_pins(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Pin]:
    """A requirements file's pins by canonical name, following `-r` includes. Every line
    must pin exactly (`name[extras]==version`): the build installs with --no-deps."""
    if path in _seen:
        raise AssertionError(f"{path} includes itself")
    pins: dict[str, Pin] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path.relative_to(ROOT)}:{number}"
        if line.startswith("-r "):
            included = read_pins(path.parent / line[3:].strip(), (*_seen, path))
        else:
            req = Requirement(line)
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version and not req.marker, (
                f"{where}: {line!r} is not an exact pin (name==version, no markers)")
            included = {canonicalize_name(req.name): Pin(canonicalize_name(req.name), specs[0].version,
                                                         frozenset(req.extras), where)}
        for name, pin in included.items():
            held = pins.get(name)
            assert held is None or held.version == pin.version, f"{name} pinned twice: {held} and {pin}"
            pins[name] = pin if held is None else Pin(name, pin.version, held.extras | pin.extras, held.where)
    return pins


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template(ROOT / "template.yaml")


def template_functions() -> dict[str, str]:
    """Logical id -> handler module name (`leadflow.handlers.<name>.handler`)."""
    resources = load_template(ROOT / "template.yaml")["Resources"]
    out = {}
    for logical_id, res in resources.items():
        if res.get("Type") == "AWS::Serverless::Function":
            match = re.fullmatch(r"leadflow\.handlers\.(\w+)\.handler", res["Properties"]["Handler"])
            assert match, f"{logical_id}: unexpected Handler {res['Properties']['Handler']}"
            out[logical_id] = match.group(1)
    return out


FUNCTIONS = template_functions()


def requirements_file(function: str) -> Path:
    return REQUIREMENTS_DIR / f"{FUNCTIONS[function]}.txt"


def installed(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------- the build: template and Makefile


def makefile_targets() -> dict[str, str]:
    """Makefile target -> its recipe (the tab-indented lines after it)."""
    targets: dict[str, str] = {}
    current = None
    for line in MAKEFILE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.%-]+)\s*:(?!=)", line)
        if match and not line.startswith("\t"):
            current = match.group(1)
            targets.setdefault(current, "")
        elif line.startswith("\t") and current:
            targets[current] += line + "\n"
        elif line.strip() and not line.startswith("#"):
            current = None
    return targets


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_is_built_by_its_makefile_target_from_its_own_requirements(template, function):
    resource = template["Resources"][function]
    assert (resource.get("Metadata") or {}).get("BuildMethod") == "makefile", (
        f"{function} needs `Metadata: BuildMethod: makefile` (else SAM installs functions/requirements.txt whole)")
    code_uri = resource["Properties"].get("CodeUri") or template["Globals"]["Function"]["CodeUri"]
    assert (ROOT / code_uri).resolve() == FUNCTIONS_DIR, f"{function}: the Makefile lives in {code_uri}"
    recipe = makefile_targets().get(f"build-{function}")
    assert recipe is not None, f"functions/Makefile has no build-{function} target"
    assert f"REQUIREMENTS=requirements/{FUNCTIONS[function]}.txt" in recipe
    assert "compile" in recipe.split(), f"build-{function} ships no bytecode: every cold start would compile"
    assert requirements_file(function).is_file()


def test_makefile_builds_no_function_the_template_lacks():
    built = {t.removeprefix("build-") for t in makefile_targets() if t.startswith("build-")}
    assert built == set(FUNCTIONS)


def test_makefile_stays_inside_the_code_uri():
    """SAM runs it in a scratch copy of functions/: a path outside does not exist there."""
    text = MAKEFILE.read_text(encoding="utf-8")
    assert "../" not in text and "$(CURDIR)/.." not in text


def test_the_swagger_bundle_is_read_only_by_the_api_page():
    """The Makefile prunes Powertools' Swagger UI bundle from every function but the API, whose
    `GET /docs` page serves it; nothing else may read it."""
    assert "swagger-ui-bundle.min.js" in MAKEFILE.read_text(encoding="utf-8")
    users = {p.relative_to(FUNCTIONS_DIR).as_posix() for p in (FUNCTIONS_DIR / "leadflow").rglob("*.py")
             if "swagger_ui" in p.read_text(encoding="utf-8") or "enable_swagger" in p.read_text(encoding="utf-8")}
    assert users == {"leadflow/routes/openapi.py"}, users


# ---------------------------------------------------------------- the pins


ALL_FILES = sorted([*REQUIREMENTS_DIR.glob("*.txt"), UNION_FILE])


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(FUNCTIONS_DIR)))
def test_pins_are_the_versions_installed_in_the_venv(path):
    stale = []
    for pin in read_pins(path).values():
        dist = installed(pin.name)
        if dist is None:
            stale.append(f"{pin.where}: {pin.name}=={pin.version} is not installed in the venv")
        elif dist.version != pin.version:
            stale.append(f"{pin.where}: {pin.name}=={pin.version}, the venv has {dist.version} "
                         f"(write {pin.name}=={dist.version})")
    assert not stale, "pins out of date:\n  " + "\n  ".join(stale) + f"\nTo fix: {REGENERATE}"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_pins_are_a_closed_set(function):
    """--no-deps installs exactly the list: every dependency of a pinned distribution (for
    the Lambda platform, with the pinned extras) is pinned too, or the runtime provides it."""
    pins = read_pins(requirements_file(function))
    missing = []
    for pin in pins.values():
        for line in installed(pin.name).requires or []:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({**LAMBDA_MARKERS, "extra": extra})
                                      for extra in ("", *pin.extras)):
                continue
            name = canonicalize_name(req.name)
            if name in RUNTIME_PROVIDED:
                continue
            if name not in pins:
                missing.append(f"{pin.name} needs {req} (not pinned)")
            elif not req.specifier.contains(pins[name].version, prereleases=True):
                missing.append(f"{pin.name} needs {req}, pinned {pins[name].version}")
    assert not missing, f"{requirements_file(function).relative_to(ROOT)}: " + "; ".join(missing)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_no_runtime_provided_package_is_pinned(function):
    pinned = set(read_pins(requirements_file(function))) & set(RUNTIME_PROVIDED)
    assert not pinned, f"{function} pins {sorted(pinned)}: the Lambda runtime provides them"


def test_union_file_is_every_functions_pins():
    union: dict[str, str] = {}
    for function in FUNCTIONS:
        union.update({name: pin.version for name, pin in read_pins(requirements_file(function)).items()})
    assert {name: pin.version for name, pin in read_pins(UNION_FILE).items()} == union


def test_pins_satisfy_pyproject_and_every_dependency_is_shipped_provided_or_local_only():
    """pyproject.toml's dependencies are the Lambda code's plus the local stack's (moto):
    each is pinned for the functions (within pyproject's range), provided by the Lambda
    runtime, or one no artifact may hold."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    shipped = read_pins(UNION_FILE)
    problems = []
    for line in project["dependencies"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name in RUNTIME_PROVIDED or name in FORBIDDEN:
            continue
        pin = shipped.get(name)
        if pin is None:
            problems.append(f"{req} (pyproject.toml) is shipped by no function: pin it in the requirements of the "
                            f"functions that import it, or, if only the local stack does, add it to FORBIDDEN here")
        elif not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{req} (pyproject.toml) but {pin.where} pins {pin.version}")
        elif not req.extras <= pin.extras:
            problems.append(f"{req} (pyproject.toml) but {pin.where} lacks extras {sorted(req.extras - pin.extras)}")
    assert not problems, "; ".join(problems)


# ---------------------------------------------------------------- assembled artifacts


@functools.lru_cache(maxsize=None)
def record(name: str) -> tuple[str, tuple[str, ...]]:
    """The distribution's site-packages folder and the files its RECORD lists there."""
    dist = installed(name)
    text = dist.read_text("RECORD") or ""
    files = tuple(row[0] for row in csv.reader(text.splitlines()) if row and not row[0].startswith(".."))
    return os.fspath(dist.locate_file("")), files


def link(source: str, dest: str, made: set[str]) -> None:
    """`dest` as a hard link to the venv's file (a symbolic one across file systems): as
    fast as it gets, and removing it, as `prune` does, leaves the venv alone."""
    parent = os.path.dirname(dest)
    if parent not in made:
        os.makedirs(parent, exist_ok=True)
        made.add(parent)
    try:
        os.link(source, dest)
    except OSError:
        os.symlink(source, dest)


def link_distribution(pin: Pin, target: Path) -> None:
    """Every installed file of the distribution (its RECORD) laid out as `pip install
    --target` lays it out; bytecode and files outside site-packages (scripts) left out."""
    root, files = record(pin.name)
    made: set[str] = set()
    for relative in files:
        if "__pycache__" in relative or relative.endswith(".pyc"):
            continue
        source = os.path.join(root, relative)
        if os.path.isfile(source):
            link(source, os.path.join(target, relative), made)


def link_bytecode(pin: Pin, target: Path) -> None:
    """The venv's compiled bytecode for each module the artifact still holds, so the runs
    below do not compile every dependency from source again (it is the same source: the
    bytecode checks the source's size and mtime, which the links report)."""
    root, files = record(pin.name)
    made: set[str] = set()
    for relative in files:
        if not relative.endswith(".pyc"):
            continue
        folder, cached = os.path.split(relative)  # <package>/__pycache__, <module>.cpython-311.pyc
        source = os.path.join(os.path.dirname(folder), cached.split(".", 1)[0] + ".py")
        if os.path.isfile(os.path.join(target, source)) and os.path.isfile(os.path.join(root, relative)):
            link(os.path.join(root, relative), os.path.join(target, relative), made)


def build_variables(function: str) -> list[str]:
    """The variables build-<function> sets for its steps, but REQUIREMENTS (KEEP_SWAGGER_UI=1…)."""
    recipe = makefile_targets().get(f"build-{function}", "")
    return [word for word in recipe.split()
            if re.fullmatch(r"[A-Z_]+=\S*", word) and not word.startswith("REQUIREMENTS=")]


def make(*targets: str, artifacts: Path, variables: list[str] = ()) -> subprocess.Popen:
    """functions/Makefile's own targets, run in functions/ as SAM runs them in its copy."""
    executable = shutil.which("make")
    if executable is None:
        pytest.skip("make is not installed")
    return subprocess.Popen([executable, "-s", "-C", str(FUNCTIONS_DIR), *targets, f"ARTIFACTS_DIR={artifacts}",
                             *variables], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@dataclass(frozen=True)
class Artifact:
    path: Path
    tops: frozenset[str]  # top-level names as the Makefile left them
    pyi: tuple[str, ...]  # type stubs left after `prune`
    caches: tuple[str, ...]  # __pycache__ folders left after `prune` and `code`


def assemble(functions: list[str], tmp_path_factory) -> dict[str, Artifact]:
    """Each function's artifact: its pins from the venv, then the Makefile's prune and code
    steps (and, for speed only, the venv's bytecode of the dependencies left)."""
    targets, steps = {}, {}
    for function in functions:
        targets[function] = tmp_path_factory.mktemp(function)
        for pin in read_pins(requirements_file(function)).values():
            link_distribution(pin, targets[function])
        steps[function] = make("prune", "code", artifacts=targets[function], variables=build_variables(function))
    built = {}
    for function, target in targets.items():
        output, _ = steps[function].communicate(timeout=60)
        assert steps[function].returncode == 0, f"make prune code failed:\n{output}"
        built[function] = Artifact(target, frozenset(top_level(target)),
                                   tuple(str(p) for p in target.rglob("*.pyi")),
                                   tuple(str(p) for p in target.rglob("__pycache__")))
        for pin in read_pins(requirements_file(function)).values():
            link_bytecode(pin, target)
    return built


# The expensive fixtures below serve one test each, so that under pytest-xdist no two
# workers build and run the same thing.
@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Artifact]:
    return assemble(list(FUNCTIONS), tmp_path_factory)


def top_level(artifact: Path) -> set[str]:
    names = set()
    for entry in artifact.iterdir():
        if entry.name.endswith(".dist-info"):
            names.add(canonicalize_name(entry.name[: -len(".dist-info")].rsplit("-", 1)[0]))
        else:
            names.add(entry.name.split(".", 1)[0])
    return names


def test_each_artifact_holds_its_code_and_its_dependencies_only(artifacts):
    source = FUNCTIONS_DIR / "leadflow"
    code_files = {p.relative_to(source) for p in source.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    problems: dict[str, list[str]] = {}
    for function, artifact in artifacts.items():
        found = problems.setdefault(function, [])
        # no local stack, emulator, test tool, or copy of the runtime's packages
        if artifact.tops & FORBIDDEN:
            found.append(f"ships {sorted(artifact.tops & FORBIDDEN)}")
        if artifact.tops & {canonicalize_name(d) for d in RUNTIME_PROVIDED}:
            found.append(f"ships runtime packages {sorted(artifact.tops & set(RUNTIME_PROVIDED))}")
        # a crypto library only where an ECDSA signature is verified
        crypto = artifact.tops & CRYPTO
        if function in ECDSA_VERIFIERS and not {"cryptography", "cffi", "_cffi_backend"} <= crypto:
            found.append(f"verifies SendGrid's ECDSA signatures but ships only {sorted(crypto)} of cryptography/cffi")
        if function not in ECDSA_VERIFIERS and crypto:
            found.append(f"verifies no ECDSA signature but ships {sorted(crypto)}")
        # the code: the leadflow package as it is, without bytecode caches; no type stubs
        code = artifact.path / "leadflow"
        shipped = {p.relative_to(code) for p in code.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
        if shipped != code_files:
            found.append(f"leadflow differs from functions/leadflow: extra {sorted(map(str, shipped - code_files))}, "
                         f"missing {sorted(map(str, code_files - shipped))}")
        if artifact.caches or artifact.pyi:
            found.append(f"left by prune/code: {[*artifact.caches, *artifact.pyi][:5]}")
        # prune: Powertools' Swagger UI bundle gone but where `GET /docs` serves it, its package kept
        swagger = artifact.path / "aws_lambda_powertools/event_handler/openapi/swagger_ui"
        served = function == "ApiFunction"
        if not (swagger / "html.py").is_file() or (swagger / "swagger-ui-bundle.min.js").exists() != served:
            found.append("the Swagger UI bundle is " + ("missing: GET /docs serves it" if served else "not pruned"))
    problems = {function: found for function, found in problems.items() if found}
    assert not problems, json.dumps(problems, indent=2)


# ---------------------------------------------------------------- running from the artifact alone


CHILD = r'''
import json, os, sys, traceback
spec = json.load(open(sys.argv[1], encoding="utf-8"))
assert not [p for p in sys.path if "site-packages" in p], sys.path
sys.path[:0] = spec["path"]
roots = [os.path.abspath(p) for p in sys.path]  # the artifact, the runtime's packages, the stdlib
steps = []

def step(name, call):
    try:
        value = call()
        steps.append({"step": name, "value": value if isinstance(value, (dict, list, str, int, type(None))) else repr(value)})
    except BaseException as exc:
        steps.append({"step": name, "error": f"{type(exc).__module__}.{type(exc).__qualname__}",
                      "detail": "".join(traceback.format_exception_only(exc))[-400:]})

class Context:
    function_name = "leadflow-artifact"; function_version = "$LATEST"; memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:leadflow-artifact"
    aws_request_id = "req-1"; log_group_name = "/aws/lambda/leadflow-artifact"; log_stream_name = "artifact"
    def get_remaining_time_in_millis(self):
        return 10_000

import importlib
module = importlib.import_module(spec["module"])
call = lambda event: (lambda: module.handler(event, Context()))
for name, event in spec["events"]:
    step(name, call(event))

if spec.get("record"):  # what a batch handler does per record, to see why it fails
    from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    kind, raw = spec["record"]
    record = DynamoDBRecord(raw) if kind == "dynamodb" else SQSRecord(raw)
    step("record_handler", lambda: module.record_handler(record))

if spec.get("sinks"):  # every sink the handoff wiring turns on, one delivery each
    wired = {}

    def wire():
        from leadflow import container
        from leadflow.adapters.dynamodb.store import item_to_lead
        from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
        image = DynamoDBRecord(spec["sinks"]).dynamodb.new_image
        wired["handoff"] = handoff = container.handoff()
        wired["notice"] = handoff.notices(item_to_lead(image), json.loads(image["moves"]))[-1]
        return sorted(handoff.sinks)

    step("sinks", wire)
    for sink_name, sink in (wired["handoff"].sinks.items() if wired else ()):
        step(f"deliver:{sink_name}", lambda sink=sink: sink.deliver(wired["notice"]))

if spec.get("escalate"):  # the SLA watchdog's escalation (JobsFunction)
    from leadflow import container
    from leadflow.domain.handoff import Notice
    notice = Notice.model_validate(spec["escalate"])
    step("escalate", lambda: container.sla_watch().escalator.escalate(
        notice, level=1, audience="owner", person=None, waited_minutes=90))

if spec.get("tracer"):
    from leadflow import observability
    step("tracer", lambda: type(observability.tracer).__module__ + "." + type(observability.tracer).__name__)

modules, foreign = {}, []
for name, mod in list(sys.modules.items()):
    path = getattr(mod, "__file__", None)
    if not path:
        continue
    path = os.path.abspath(path)  # as found on sys.path: symlinks not resolved
    if "." not in name:
        modules[name] = path
    if name not in ("__main__", "__mp_main__") and not any(path.startswith(r + os.sep) for r in roots):
        foreign.append(f"{name}: {path}")
json.dump({"steps": steps, "modules": modules, "foreign": foreign, "sys_path": sys.path}, open(spec["out"], "w"),
          default=repr)
'''

GENERIC_SECRET = "whsec_" + base64.b64encode(b"artifact-test-secret-0123456789").decode()
SLACK_SECRET = "artifact-slack-signing-secret"
BUYER = {"first_name": "Jane", "job_title": "VP Marketing", "company": "Acme", "company_size": 200,
         "industry": "software", "country": "US", "budget": "yes", "authority": "decision_maker", "need": "x",
         "timeline": "this_quarter"}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_event(method: str, path: str, body: str | None = None, headers: dict | None = None) -> dict:
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": {"content-type": "application/json", **(headers or {})},
        "requestContext": {
            "accountId": "123456789012", "apiId": "artifact", "domainName": "localhost", "domainPrefix": "localhost",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "t"},
            "requestId": "r", "routeKey": "$default", "stage": "$default", "time": "20/Nov/2026:10:00:00 +0000",
            "timeEpoch": 0,
        },
        "body": body, "isBase64Encoded": False,
    }


def api_events(sendgrid_private_key: str) -> list:
    """Requests whose code paths reach every lazily imported third-party module of the API:
    Slack's signature check (slack_sdk), Standard Webhooks (standardwebhooks), SendGrid's
    ECDSA check (cryptography), then the rules (PyYAML, tzdata) before DynamoDB is called."""
    from standardwebhooks.webhooks import Webhook

    from leadflow.adapters.vendor_webhooks.signatures import sign

    now = time.time()
    slack_body = "payload=" + json.dumps({"type": "view_submission"})
    stamp = str(int(now))
    slack_sig = "v0=" + hmac.new(SLACK_SECRET.encode(), f"v0:{stamp}:{slack_body}".encode(), hashlib.sha256).hexdigest()
    generic = json.dumps({"type": "page_viewed", "email": "gen@acme.io", "properties": {"url": "/pricing"}})
    at = datetime.fromtimestamp(int(now), tz=timezone.utc)
    sendgrid = (ROOT / "tests/fixtures/sendgrid/events_open_click_unsubscribe.json").read_bytes()
    sendgrid_headers = sign("sendgrid", sendgrid, sendgrid_private_key, now=now)
    return [
        ("GET /healthz", http_event("GET", "/healthz")),
        ("GET /openapi.json", http_event("GET", "/openapi.json")),  # the document's models, built lazily
        ("GET /docs/swagger-ui-bundle.js", http_event("GET", "/docs/swagger-ui-bundle.js")),  # kept by prune
        ("GET /console/login", http_event("GET", "/console/login")),  # Jinja2 and MarkupSafe, from the artifact
        ("POST /v1/webhooks/slack", http_event("POST", "/v1/webhooks/slack", slack_body, {
            "content-type": "application/x-www-form-urlencoded", "x-slack-request-timestamp": stamp,
            "x-slack-signature": slack_sig})),
        ("POST /v1/webhooks/generic", http_event("POST", "/v1/webhooks/generic", generic, {
            "webhook-id": "msg_1", "webhook-timestamp": str(int(now)),
            "webhook-signature": Webhook(GENERIC_SECRET).sign("msg_1", at, generic)})),
        ("POST /v1/webhooks/sendgrid", http_event("POST", "/v1/webhooks/sendgrid", sendgrid.decode(),
                                                  sendgrid_headers)),
    ]


def sql_lead_record() -> tuple[dict, dict]:
    """A lead write that moved a lead into SQL, as the table's stream delivers it, and the
    SQL move's notice (built with the venv's leadflow and an in-memory store)."""
    from boto3.dynamodb.types import TypeSerializer

    from leadflow.adapters.dynamodb.store import lead_to_item
    from leadflow.domain.events import parse_event
    from leadflow.settings import load_rules
    from leadflow.usecases.handoff import notices
    from leadflow.usecases.leads import LeadService
    from leadflow_infra.local.stream_poller import to_lambda_record
    from tests.conftest import TEST_LEAD_IDS
    from tests.unit.fakes import MemoryStore

    rules = load_rules(None)
    result = LeadService(MemoryStore(), rules, ids=TEST_LEAD_IDS).ingest(parse_event(
        {"type": "form_submitted", "email": "jane@acme.io", "traits": BUYER, "properties": {"form_kind": "demo_request"}}),
        source="artifact-test")
    assert result.lead.stage == "sql", result.lead.stage
    item = lead_to_item(result.lead)
    image = {k: TypeSerializer().serialize(v) for k, v in item.items()}
    raw = {"eventID": "1", "eventName": "MODIFY", "dynamodb": {
        "Keys": {"PK": image["PK"], "SK": image["SK"]}, "NewImage": image, "SequenceNumber": "100",
        "SizeBytes": 1000, "StreamViewType": "NEW_AND_OLD_IMAGES"}}
    record = to_lambda_record(raw, "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/1", "us-east-1")
    notice = notices(result.lead, result.lead.moves, rules)[-1]
    return record, notice.model_dump(mode="json")


def sqs_record(body: dict) -> dict:
    return {"messageId": "m-1", "receiptHandle": "r-1", "body": json.dumps(body),
            "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1763600000000"},
            "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:retry", "awsRegion": "us-east-1"}


def lambda_env(dead: str, sendgrid_public_key: str, *, tracing: bool) -> dict[str, str]:
    """A Lambda's environment as the template sets it, with every sink on and every
    endpoint (AWS included) on a closed loopback port."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")}
    env.update(
        AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing", AWS_ENDPOINT_URL=dead, AWS_MAX_ATTEMPTS="1", AWS_RETRY_MODE="standard",
        POWERTOOLS_SERVICE_NAME="leadflow", POWERTOOLS_METRICS_NAMESPACE="Leadflow", POWERTOOLS_LOG_LEVEL="ERROR",
        POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_TRACE_DISABLED="false" if tracing else "true",
        PYTHONTZPATH="",  # no system time zone database: only what the artifact ships
        LEADFLOW_TABLE="leadflow-artifact", LEADFLOW_LEAD_ID_KEY=TEST_LEAD_ID_KEY,
        LEADFLOW_API_KEY="artifact-api-key-0123456789abcdef",  # the console's login page renders
        LEADFLOW_SLACK_WEBHOOK_URL=f"{dead}/services/T/B/x", LEADFLOW_SES_FROM="alerts@acme.example",
        LEADFLOW_CRM_WEBHOOK_URL=f"{dead}/crm", LEADFLOW_CRM_WEBHOOK_SECRET=GENERIC_SECRET,
        LEADFLOW_HUBSPOT_TOKEN="pat-artifact", LEADFLOW_HUBSPOT_BASE_URL=dead,
        LEADFLOW_SALESFORCE_INSTANCE_URL=dead, LEADFLOW_SALESFORCE_CLIENT_ID="id",
        LEADFLOW_SALESFORCE_CLIENT_SECRET="secret", LEADFLOW_EVENT_BUS="default",
        LEADFLOW_RETRY_QUEUE_URL=f"{dead}/123456789012/retry", LEADFLOW_DLQ_URL=f"{dead}/123456789012/dlq",
        LEADFLOW_SINK_TIMEOUT="2", LEADFLOW_WEBHOOK_SECRET_SENDGRID=sendgrid_public_key,
        LEADFLOW_WEBHOOK_SECRET_SLACK=SLACK_SECRET, LEADFLOW_WEBHOOK_SECRET_GENERIC=GENERIC_SECRET,
    )
    if tracing:  # as in Lambda with Tracing: Active (the SDK's segments go to a UDP port nobody reads)
        env.update(AWS_LAMBDA_FUNCTION_NAME="leadflow-artifact", AWS_XRAY_CONTEXT_MISSING="IGNORE_ERROR",
                   AWS_XRAY_DAEMON_ADDRESS="127.0.0.1:2000")
    return env


@pytest.fixture(scope="module")
def runtime_dir(tmp_path_factory) -> Path:
    """The packages the Lambda runtime provides, and only those (linked from the venv)."""
    return link_runtime_packages(tmp_path_factory.mktemp("lambda-runtime"))


def launch(function: str, spec: dict, artifact: Path, runtime_dir: Path, work: Path, env: dict) -> tuple:
    """One handler, run from its artifact in a fresh interpreter: `python -I -S -B` (no
    site-packages, no PYTHON* variables, no bytecode written), sys.path = the artifact, the
    runtime's packages and the standard library."""
    key = spec["key"]
    child = work / "child.py"
    if not child.exists():
        child.write_text(CHILD, encoding="utf-8")
    spec = {**spec, "module": f"leadflow.handlers.{FUNCTIONS[function]}", "out": str(work / f"{key}.json"),
            "path": [str(artifact), str(runtime_dir)]}
    (work / f"{key}.spec.json").write_text(json.dumps(spec), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", str(child), str(work / f"{key}.spec.json")], cwd=work,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, work / f"{key}.json"


def collect(proc: subprocess.Popen, result_file: Path) -> dict:
    out, err = proc.communicate(timeout=180)
    if proc.returncode != 0 or not result_file.exists():
        return {"failed": f"exit {proc.returncode}\n{err[-3000:]}{out[-2000:]}"}
    return json.loads(result_file.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def inputs() -> dict:
    """The requests and records the runs feed the handlers (built with the venv's leadflow)."""
    from leadflow.adapters.vendor_webhooks.signatures import generate_sendgrid_keypair
    from leadflow.usecases.handoff import retry_message

    private, public = generate_sendgrid_keypair()
    record, notice = sql_lead_record()
    erased = {**record, "eventName": "REMOVE",
              "dynamodb": {k: v for k, v in record["dynamodb"].items() if k != "NewImage"}}
    return {"dead": f"http://127.0.0.1:{closed_port()}", "sendgrid_private": private, "sendgrid_public": public,
            "record": record, "notice": notice, "erased": erased,
            "retry": sqs_record(retry_message(notice["lead_id"], notice["move_id"], "slack", 2, "artifact test"))}


@pytest.fixture(scope="module")
def runs(artifacts, runtime_dir, inputs, tmp_path_factory) -> dict[str, dict]:
    """Every handler run from its artifact, all at once, tracing off (the default)."""
    record, retry, erased = inputs["record"], inputs["retry"], inputs["erased"]
    specs = {
        "ApiFunction": {"events": api_events(inputs["sendgrid_private"])},
        "EventLogFunction": {"events": [("stream batch", {"Records": [erased]})], "record": ["dynamodb", erased]},
        "HandoffFunction": {"events": [("stream batch", {"Records": [record]})], "record": ["dynamodb", record],
                            "sinks": record},
        "HandoffRetryFunction": {"events": [("retry batch", {"Records": [retry]})], "record": ["sqs", retry],
                                 "sinks": record},
        "JobsFunction": {"events": [("rescore", {"job": "rescore"}), ("sla", {"job": "sla"})],
                         "escalate": inputs["notice"]},
    }
    work = tmp_path_factory.mktemp("runs")
    env = lambda_env(inputs["dead"], inputs["sendgrid_public"], tracing=False)
    started = {f: launch(f, {**spec, "key": f}, artifacts[f].path, runtime_dir, work, env) for f, spec in specs.items()}
    return {function: collect(*proc) for function, proc in started.items()}


@pytest.fixture(scope="module")
def tracing_run(runtime_dir, inputs, tmp_path_factory) -> tuple[dict, Path]:
    """EventLogFunction (the smallest artifact) with tracing on, from an artifact of its own."""
    artifact = assemble(["EventLogFunction"], tmp_path_factory)["EventLogFunction"].path
    spec = {"key": "tracing", "events": [("stream batch", {"Records": [inputs["erased"]]})], "tracer": True}
    env = lambda_env(inputs["dead"], inputs["sendgrid_public"], tracing=True)
    return collect(*launch("EventLogFunction", spec, artifact, runtime_dir, tmp_path_factory.mktemp("tracing"), env)), \
        artifact


# For each function: the third-party modules its exercised code paths must have loaded
# (proof the exercise reached them), by top-level name.
REACHED = {
    "ApiFunction": {"aws_lambda_powertools", "pydantic", "pydantic_core", "yaml", "tzdata", "slack_sdk",
                    "standardwebhooks", "cryptography", "jinja2", "markupsafe"},
    "EventLogFunction": {"aws_lambda_powertools", "pydantic", "pydantic_core"},
    "HandoffFunction": {"aws_lambda_powertools", "pydantic", "yaml", "tzdata", "standardwebhooks"},
    "HandoffRetryFunction": {"aws_lambda_powertools", "pydantic", "yaml", "tzdata", "standardwebhooks"},
    "JobsFunction": {"aws_lambda_powertools", "pydantic", "yaml", "tzdata"},
}
ENDPOINT = "botocore.exceptions.EndpointConnectionError"  # DynamoDB, on the closed port
REFUSED = "leadflow.domain.errors.RetryableError"  # a sink's connection refused


def outcome(step: dict | None) -> str:
    return "missing" if step is None else step.get("error", "ok")


def run_problems(function: str, result: dict, artifact: Path, runtime_dir: Path) -> list[str]:
    """What is wrong with one handler's run: anything loaded from elsewhere than the
    artifact, the runtime's packages and the stdlib; any step that failed other than on
    the network; a lazily imported module the steps should have reached and did not."""
    if "failed" in result:
        return [result["failed"]]
    tracing = function.endswith("+tracing")
    function = function.removesuffix("+tracing")
    found = []
    if result["foreign"]:
        found.append(f"loaded from outside the artifact, the runtime's packages and the stdlib: {result['foreign']}")
    if result["sys_path"][:2] != [str(artifact), str(runtime_dir)] or any(
            "site-packages" in p for p in result["sys_path"]):
        found.append(f"sys.path was {result['sys_path']}")
    steps = {s["step"]: s for s in result["steps"]}
    for name, step in steps.items():
        if "error" in step and step["error"] not in (ENDPOINT, REFUSED):
            found.append(f"{name} failed other than on the network (a missing dependency?): "
                         f"{step['error']}: {step['detail']}")
    modules = result["modules"]
    if function in REACHED and not REACHED[function] <= set(modules):
        found.append(f"never loaded {sorted(REACHED[function] - set(modules))}: the exercise no longer reaches them")
    for name in ("boto3", "botocore"):
        if name in modules and not modules[name].startswith(f"{runtime_dir}{os.sep}"):
            found.append(f"{name} not from the runtime's packages: {modules[name]}")
    expected: dict[str, str] = {}
    if function == "ApiFunction":
        # Slack's signature verified (nothing to do); SendGrid's ECDSA and Standard Webhooks
        # verified and the events mapped, then DynamoDB is out of reach.
        found += [f"{n}: {str(steps.get(n, {}).get('value'))[:300]}"
                  for n in ("GET /healthz", "POST /v1/webhooks/slack", "GET /openapi.json",
                            "GET /docs/swagger-ui-bundle.js", "GET /console/login")
                  if (steps.get(n, {}).get("value") or {}).get("statusCode") != 200]
        expected = {"POST /v1/webhooks/sendgrid": ENDPOINT, "POST /v1/webhooks/generic": ENDPOINT}
    elif function == "JobsFunction":
        expected = {"rescore": ENDPOINT, "sla": ENDPOINT, "escalate": REFUSED}
    else:
        expected = {} if tracing else {"record_handler": ENDPOINT}
        batch = next((s for n, s in steps.items() if n.endswith("batch")), {})
        if len((batch.get("value") or {}).get("batchItemFailures", [])) != 1:
            found.append(f"the batch should report its one record failed: {batch}")
    if function in ("HandoffFunction", "HandoffRetryFunction"):
        # Slack and the signed CRM webhook (standardwebhooks) get as far as the network.
        expected.update({"deliver:slack": REFUSED, "deliver:webhook": REFUSED})
    for name, wanted in expected.items():
        if outcome(steps.get(name)) != wanted:
            got = steps.get(name) or {}
            found.append(f"{name}: {outcome(got or None)} ({str(got.get('value') or got.get('detail'))[:300]}), "
                         f"expected {wanted}")
    if "aws_xray_sdk" in modules and not tracing:
        found.append("loaded the X-Ray SDK with tracing off")
    return found


def test_each_handler_runs_from_its_artifact_alone(runs, artifacts, runtime_dir):
    problems = {f: run_problems(f, result, artifacts[f].path, runtime_dir) for f, result in runs.items()}
    problems = {f: found for f, found in problems.items() if found}
    assert not problems, json.dumps(problems, indent=2)


def test_a_rules_file_beside_the_code_is_shipped_for_rules_path(tmp_path):
    """README: to replace the rules in AWS, put the file in functions/ and pass RulesPath."""
    scratch = tmp_path / "functions"  # what SAM copies: the CodeUri, here with a user's rules file
    scratch.mkdir()
    shutil.copy2(MAKEFILE, scratch / "Makefile")
    shutil.copytree(FUNCTIONS_DIR / "leadflow", scratch / "leadflow", ignore=shutil.ignore_patterns("__pycache__"))
    (scratch / "acme-rules.yaml").write_text("version: acme-1\n", encoding="utf-8")
    target = tmp_path / "artifact"

    built = subprocess.run(["make", "-s", "-C", str(scratch), "code", f"ARTIFACTS_DIR={target}"],
                           capture_output=True, text=True, timeout=120)

    assert built.returncode == 0, built.stdout + built.stderr
    assert (target / "acme-rules.yaml").read_text(encoding="utf-8") == "version: acme-1\n"
    assert (target / "leadflow" / "rules" / "default.yaml").is_file()


def test_compiled_bytecode_is_shipped_for_every_module_and_used_without_the_source(tmp_path, runtime_dir):
    """A function's code directory is read-only, so Python cannot cache what it compiles:
    the build's compile step leaves a CPython 3.11 .pyc beside every module, hash-based and
    unchecked, and the entry module imports with its source replaced by an error."""
    function = "EventLogFunction"  # the smallest artifact; the step is the same for all
    target = tmp_path / "artifact"
    for pin in read_pins(requirements_file(function)).values():
        link_distribution(pin, target)
    built = subprocess.run(["make", "-s", "-C", str(FUNCTIONS_DIR), "prune", "code", "compile",
                            f"ARTIFACTS_DIR={target}", f"COMPILE_PYTHON={sys.executable}"],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr

    tag = sys.implementation.cache_tag
    missing = [str(p.relative_to(target)) for p in target.rglob("*.py")
               if not (p.parent / "__pycache__" / f"{p.stem}.{tag}.pyc").is_file()]
    flags = {int.from_bytes(pyc.read_bytes()[4:8], "little") for pyc in target.rglob("*.pyc")}
    assert tag == "cpython-311" and not missing, missing[:10]
    assert flags == {0b01}  # PEP 552: hash-based (bit 0), the source not checked (bit 1 clear)

    for source in (target / "leadflow").rglob("*.py"):  # a copy (`code`), not the repository's file
        source.write_text("raise ImportError('the source was read')\n", encoding="utf-8")
    probe = ("import sys; sys.path[:0] = sys.argv[1:]; "
             f"import leadflow.handlers.{FUNCTIONS[function]} as m; print(m.handler.__module__)")
    env = {"LEADFLOW_TABLE": "leadflow", "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "true"}
    ran = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", probe, str(target), str(runtime_dir)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]


def test_tracing_active_loads_the_xray_sdk_from_the_artifact_and_botocore_from_the_runtime(tracing_run, runtime_dir):
    """Tracing=Active (POWERTOOLS_TRACE_DISABLED=false in Lambda): Powertools' Tracer, the
    X-Ray SDK and wrapt from the artifact, the SDK's patch on the runtime's botocore, through
    a batch whose (patched) DynamoDB call fails on the network."""
    result, artifact = tracing_run
    assert not run_problems("EventLogFunction+tracing", result, artifact, runtime_dir)
    steps = {s["step"]: s for s in result["steps"]}
    assert steps["tracer"]["value"] == "aws_lambda_powertools.tracing.tracer.Tracer"
    assert len(steps["stream batch"]["value"]["batchItemFailures"]) == 1
    for name in ("aws_xray_sdk", "wrapt"):
        assert result["modules"][name].startswith(f"{artifact}{os.sep}"), result["modules"].get(name)
    assert not (artifact / "botocore").exists()
