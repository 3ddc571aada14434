"""Pages in a real headless browser: Debian's Chromium driven by Playwright, against a real
`leadflow serve` on 127.0.0.1.

Every test in this directory carries the `browser` marker. Without Chromium (or without
the Playwright package) the tests are skipped with the command that installs it, unless
LEADFLOW_REQUIRE_BROWSER=1 is set, as CI sets it: then they fail, so a run that should
have driven a browser can never pass quietly without one.

Each test leaves a full-page screenshot in test-artifacts/screenshots/ (passed or
failed: the screenshot of a passing page is the record of what it looked like), and the
run's summary lists them.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import API_KEY, Client, serving

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"

# The machine's network may be closed: without these, Chromium keeps trying Google's
# services at start (refused connections, name lookups) and stalls. Playwright gives each
# launch a fresh, empty profile directory of its own (--user-data-dir is its to set).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a small /dev/shm; Chromium crashes on it
]
# Generous: a page that renders is waited for, never slept for; on a loaded machine
# parsing a megabyte of JavaScript can take seconds, and a deadline only bounds a failure.
TIMEOUT_MS = 60_000
LOCAL_HOSTS = {"127.0.0.1"}
LOCAL_SCHEMES = {"data", "blob", "about"}


def chromium_path() -> str | None:
    """The Chromium to drive: LEADFLOW_CHROMIUM if set, else Debian's on the PATH."""
    configured = os.environ.get("LEADFLOW_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("chromium")


def pytest_collection_modifyitems(config, items):
    # Every test under this directory is a browser test, so `-m "not browser"` leaves
    # them all out and a new test file cannot forget the marker.
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session", autouse=True)
def _browser_available():
    """Skip, or fail under LEADFLOW_REQUIRE_BROWSER=1, before anything is started."""
    missing = []
    if chromium_path() is None:
        where = os.environ.get("LEADFLOW_CHROMIUM") or "chromium on the PATH"
        missing.append(f"Chromium ({where}; Debian's: apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (.venv/bin/pip install -e '.[dev]')")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("LEADFLOW_REQUIRE_BROWSER") == "1":
            pytest.fail(message + "; LEADFLOW_REQUIRE_BROWSER=1 requires them here", pytrace=False)
        pytest.skip(message + "; LEADFLOW_REQUIRE_BROWSER=1 turns this skip into a failure")


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """One `leadflow serve` for the browser tests of this process (each xdist worker has
    its own); a test that writes uses its own leads, so tests do not see each other's."""
    data = tmp_path_factory.mktemp("browser-data")
    with serving(data, {"LEADFLOW_API_KEY": API_KEY}) as base:
        yield Client(base, data=data)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS,
                                              timeout=TIMEOUT_MS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def expect():
    """Playwright's assertions, which wait (up to TIMEOUT_MS) for the condition to hold.
    A fixture rather than a module import, so that a machine without Playwright skips."""
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=TIMEOUT_MS)
    return playwright_expect


@dataclass
class PageLog:
    """What a page did: every URL it asked for, those it was refused because they were
    not on 127.0.0.1, and the errors its scripts logged or threw."""

    requests: list[str] = field(default_factory=list)
    off_host: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.off_host == [], f"the page asked for addresses outside 127.0.0.1: {self.off_host}"
        assert self.console_errors == [], f"the page logged errors: {self.console_errors}"
        assert self.page_errors == [], f"the page's scripts threw: {self.page_errors}"


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in LOCAL_SCHEMES or parts.hostname in LOCAL_HOSTS


@pytest.fixture
def page_log() -> PageLog:
    return PageLog()


@pytest.fixture
def page(browser, stack, page_log):
    """A fresh browser context and page on the stack (`page.goto("/docs")`). Anything
    outside 127.0.0.1 is refused and recorded: a page must carry everything it needs."""
    context = browser.new_context(base_url=stack.base, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)

    def refuse(route):
        page_log.off_host.append(route.request.url)
        route.abort("blockedbyclient")

    context.route(lambda url: not is_local(url), refuse)
    context.on("request", lambda req: page_log.requests.append(req.url))
    new_page = context.new_page()
    new_page.on("console", lambda msg: msg.type == "error" and page_log.console_errors.append(
        " at ".join(filter(None, (msg.text, msg.location.get("url"))))))
    new_page.on("pageerror", lambda exc: page_log.page_errors.append(str(exc)))
    try:
        yield new_page
    finally:
        context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """At the end of each test that drove a page, passed or failed, a full-page screenshot
    of where the page stands; a failure's report names the file."""
    report = yield
    page = getattr(item, "funcargs", {}).get("page")
    if report.when == "call" and page is not None:
        line = _screenshot(page, item)
        report.user_properties.append(("screenshot", line))
        if report.failed:
            report.sections.append(("browser screenshot", line))
    return report


def _screenshot(page, item) -> str:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{item.path.stem}__{item.name}")
    path = SCREENSHOTS / f"{name}.png"
    try:
        page.screenshot(path=str(path), full_page=True, timeout=TIMEOUT_MS)
    except Exception as exc:  # a crashed page must not hide the test's own failure
        return f"{path.relative_to(ROOT)} not saved: {exc}"
    return str(path.relative_to(ROOT))


# The run's summary lists the screenshots when this directory's conftest is loaded where
# the summary is printed: always without xdist, and under xdist when tests/browser is
# named on the command line (the controller loads the conftests of the paths it is given;
# under `make test` only the workers load this one, and the files are still written).
_saved: list[str] = []


def pytest_runtest_logreport(report):
    if report.when == "call":
        _saved.extend(f"{value}  ({report.nodeid})" for key, value in report.user_properties if key == "screenshot")


def pytest_terminal_summary(terminalreporter):
    if _saved:
        terminalreporter.write_line(f"browser screenshots ({len(_saved)}):")
        for line in _saved:
            terminalreporter.write_line(f"  {line}")
