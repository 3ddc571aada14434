"""`GET /docs` in a real browser: Swagger UI, served by the API itself, renders every
operation of `/openapi.json`, offers the bearer key, and asks nothing of the internet."""

from __future__ import annotations

import json
import urllib.request

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}

# Each rendered operation as "METHOD path": the method badge's text and the raw path that
# Swagger UI keeps in data-path (the visible text has break opportunities inserted).
SHOWN_OPERATIONS = """els => els.map(el => {
  const method = el.querySelector('.opblock-summary-method');
  const path = el.querySelector('.opblock-summary-path');
  return (method ? method.textContent.trim().toUpperCase() : '?') + ' ' + (path ? path.dataset.path : '?');
})"""


def operations(document: dict) -> set[str]:
    return {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item
            if method in METHODS}


def test_docs_page_shows_every_operation_of_the_document(page, page_log, stack, expect):
    with urllib.request.urlopen(stack.base + "/openapi.json", timeout=30) as resp:
        document = json.load(resp)
    expected = operations(document)
    assert {"GET /healthz", "POST /v1/events", "GET /v1/leads/{lead_id}"} <= expected, expected

    page.goto("/docs")
    # Swagger UI fetches the document, then renders one .opblock per operation in one pass:
    # wait for all of them; a count that never comes is reported below as a difference.
    try:
        expect(page.locator(".opblock")).to_have_count(len(expected))
    except AssertionError:
        pass
    shown = page.locator(".opblock").evaluate_all(SHOWN_OPERATIONS)
    assert len(shown) == len(set(shown)), f"operations shown twice: {sorted(shown)}"
    assert set(shown) == expected, (f"missing from the page: {sorted(expected - set(shown))}; "
                                    f"on the page only: {sorted(set(shown) - expected)}")

    expect(page.locator(".information-container .title")).to_contain_text(document["info"]["title"])

    # The document declares bearer auth: the Authorize button opens the bearer scheme.
    assert "bearer" in document["components"]["securitySchemes"]
    authorize = page.locator("button.authorize")
    expect(authorize).to_be_visible()
    authorize.click()
    dialog = page.locator(".dialog-ux .modal-ux")
    expect(dialog).to_contain_text("bearer")
    dialog.locator("button.close-modal").click()
    expect(dialog).to_have_count(0)

    # Everything came from the stack itself: the page, its assets and the document.
    asked = {req.split("?")[0].removeprefix(stack.base) for req in page_log.requests}
    assert {"/docs", "/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js", "/openapi.json"} <= asked, asked
    page_log.assert_clean()
