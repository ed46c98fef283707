"""/docs and /redoc in headless Chromium with the network off: what a user on an
air-gapped machine sees.

The real service (``python -m serving``) serves the fixture model on a loopback port.
Chromium resolves no host name but 127.0.0.1, and every request the pages make to
anything else is recorded and aborted: the test fails if one was attempted (but for the
Redocly logo ReDoc always asks its CDN for, shown only when it loads). On /docs it
expands POST /predict, checks the request body's example (the feature schema's example)
and the Transaction schema, then does what a user does: Try it out, Execute, a 200 with a
probability. On /redoc it checks the title and the transaction's fields.

``UPDATE_SCREENSHOTS=1`` writes the expanded operation to docs/images/swagger-ui-offline.png
(docs/serving.md shows it); otherwise it goes to the test's tmp_path only.
Slow: a service start and a browser (about 15 s here)."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser import chromium
from tests.serving.conftest import API_KEYS, ServedModel, Service

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs/images/swagger-ui-offline.png"
AUTHORIZE_SCREENSHOT = ROOT / "docs/images/swagger-ui-authorize.png"
RENDER_TIMEOUT_MS = 30_000
TITLE = "Fraud detection API"
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


class Browser:
    """A Chromium page that can reach only ``origin``; the rest is recorded and aborted."""

    def __init__(self, page: Any, origin: str, left_loopback: list[str]) -> None:
        self.page, self.origin, self.left_loopback = page, origin, left_loopback

    def open(self, path: str) -> Any:
        self.page.goto(f"{self.origin}{path}", wait_until="load")
        return self.page


@pytest.fixture(scope="module")
def launch_options() -> dict[str, Any]:
    """Chromium, or a skip: requested before the service, so no service starts for nothing."""
    return chromium().launch_options(offline=True)


@pytest.fixture
def browser(launch_options: dict[str, Any], service: Service) -> Iterator[Browser]:
    yield from _browser(launch_options, service)


@pytest.fixture
def keyed_browser(launch_options: dict[str, Any], keyed_service: Service) -> Iterator[Browser]:
    """The same on a service that asks for API keys."""
    yield from _browser(launch_options, keyed_service)


def _browser(launch_options: dict[str, Any], service: Service) -> Iterator[Browser]:
    from playwright.sync_api import Route, sync_playwright  # noqa: PLC0415

    ours = urlsplit(service.url).netloc
    left_loopback: list[str] = []

    def only_the_service(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).scheme in {"http", "https", "ws", "wss"} and urlsplit(url).netloc != ours:
            left_loopback.append(url)
            route.abort("internetdisconnected")
        else:
            route.continue_()

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(**launch_options)
        try:
            context = launched.new_context(viewport={"width": 1280, "height": 900})
            context.route("**/*", only_the_service)
            yield Browser(context.new_page(), service.url, left_loopback)
        finally:
            launched.close()


def wait_for(page: Any, selector: str, what: str, browser: Browser) -> Any:
    """The first element matching ``selector`` once visible; a blank page fails saying so."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: PLC0415

    element = page.locator(selector).first
    try:
        element.wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
    except PlaywrightTimeout:
        body = page.locator("body").inner_text()[:500]
        pytest.fail(
            f"{page.url}: {what} never rendered in {RENDER_TIMEOUT_MS / 1000:.0f} s; the page "
            f"shows {body!r}; requests that tried to leave loopback: {browser.left_loopback}",
            pytrace=False,
        )
    return element


def same_values(shown: dict[str, Any], expected: dict[str, Any]) -> bool:
    return shown.keys() == expected.keys() and all(
        math.isclose(float(shown[name]), float(value), rel_tol=1e-12)
        for name, value in expected.items()
    )


def test_swagger_ui_works_offline(browser, served: ServedModel, tmp_path):
    page = browser.open("/docs")
    wait_for(page, ".information-container .title", "the API title", browser)
    assert TITLE in page.locator(".information-container .title").inner_text()

    operation = page.locator(".opblock-post").filter(
        has=page.locator('.opblock-summary-path[data-path="/predict"]')
    )
    wait_for(page, '.opblock-summary-path[data-path="/predict"]', "POST /predict", browser)
    operation.locator(".opblock-summary").first.click()
    body = operation.locator(".opblock-section-request-body")
    example = wait_for(
        body, ".body-param__example, .highlight-code", "the request body's example", browser
    )
    shown = json.loads(example.inner_text())
    # Every feature with the schema's example value, in the schema's order.
    assert list(shown) == served.schema.names
    assert same_values(shown, served.schema.example), (shown, served.schema.example)
    # The body's component is listed in the Schemas section (as is the batch's).
    schemas = wait_for(page, "section.models", "the Schemas section", browser)
    components = schemas.locator('article[data-json-schema-level="0"]')
    titles = components.locator(":scope > .json-schema-2020-12-head .json-schema-2020-12__title")
    assert {"Transaction", "TransactionBatch"} <= set(titles.all_inner_texts())
    transaction = components.filter(has=page.get_by_text("Transaction", exact=True)).first
    transaction.locator(".json-schema-2020-12-accordion").first.click()
    fields = transaction.locator(".json-schema-2020-12-body").first.inner_text()
    assert all(name in fields for name in served.schema.names), fields

    screenshot = tmp_path / SCREENSHOT.name
    operation.scroll_into_view_if_needed()
    take_screenshot(page, operation, screenshot)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(screenshot, SCREENSHOT)

    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    response = wait_for(
        operation, ".live-responses-table .response", "the response to Execute", browser
    )
    assert response.locator(".response-col_status").inner_text().strip() == "200"
    answer = json.loads(response.locator(".response-col_description pre").first.inner_text())
    assert 0.0 <= answer["probability"] <= 1.0
    assert answer["probability"] == pytest.approx(served.probability(served.schema.example))
    assert browser.left_loopback == []


def test_swagger_ui_takes_the_api_key_and_sends_it(keyed_browser, served: ServedModel, tmp_path):
    page = keyed_browser.open("/docs")
    authorize = wait_for(page, "button.authorize", "the Authorize button", keyed_browser)
    wait_for(page, '.opblock-summary-path[data-path="/predict"]', "POST /predict", keyed_browser)
    operation = page.locator(".opblock-post").filter(
        has=page.locator('.opblock-summary-path[data-path="/predict"]')
    )
    # The operation shows it needs the key (the padlock), and without one it is a 401.
    assert operation.locator(".authorization__btn").count() == 1
    operation.locator(".opblock-summary").first.click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    # A documented answer: the status alone (an undocumented one reads "Undocumented").
    assert _status(operation, keyed_browser) == ["401"]
    assert "Missing or invalid API key" in operation.locator(".responses-wrapper").inner_text()

    authorize.click()
    dialog = wait_for(page, ".modal-ux", "the Authorize dialog", keyed_browser)
    assert "X-API-Key" in dialog.inner_text()
    dialog.locator("input").first.fill(API_KEYS[0])
    screenshot = tmp_path / AUTHORIZE_SCREENSHOT.name
    dialog.screenshot(path=str(screenshot))
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(screenshot, AUTHORIZE_SCREENSHOT)
    # By text: Swagger UI labels them for screen readers "Apply credentials" and so on.
    dialog.locator(".auth-btn-wrapper button", has_text="Authorize").click()
    dialog.locator(".auth-btn-wrapper button", has_text="Close").click()

    operation.get_by_role("button", name="Execute").click()
    page.wait_for_function(
        "() => document.querySelector('.live-responses-table .response .response-col_status')"
        "?.innerText.trim() === '200'",
        timeout=RENDER_TIMEOUT_MS,
    )
    answer = json.loads(
        operation.locator(
            ".live-responses-table .response .response-col_description pre"
        ).first.inner_text()
    )
    assert answer["probability"] == pytest.approx(served.probability(served.schema.example))
    assert keyed_browser.left_loopback == []


def _status(operation: Any, browser: Browser) -> list[str]:
    """The live response's status and, under it, how the document describes it."""
    response = wait_for(
        operation, ".live-responses-table .response", "the response to Execute", browser
    )
    return str(response.locator(".response-col_status").inner_text()).strip().splitlines()


def take_screenshot(page: Any, operation: Any, target: Path) -> None:
    """The page from its top through the end of the expanded operation's request body."""
    top = page.locator(".information-container").bounding_box()
    bottom = operation.locator(".opblock-section-request-body").bounding_box()
    assert top is not None
    assert bottom is not None
    page.evaluate("document.activeElement && document.activeElement.blur()")  # no focus ring
    scroll = page.evaluate("window.scrollY")
    margin = 16
    page.screenshot(
        path=str(target),
        full_page=True,
        clip={
            "x": 0,
            "y": max(top["y"] + scroll - margin, 0),
            "width": page.viewport_size["width"],
            "height": bottom["y"] + bottom["height"] - top["y"] + 2 * margin,
        },
    )


def test_redoc_works_offline(browser, served: ServedModel):
    page = browser.open("/redoc")
    title = wait_for(page, "h1", "the API title", browser)
    assert TITLE in title.inner_text()
    wait_for(page, 'h2:has-text("Score one transaction")', "POST /predict", browser)
    text = page.locator("body").inner_text()
    assert "request body schema: application/json" in text.lower()  # shown in capitals
    for name in served.schema.names:
        assert name in text, name
    # ReDoc's side menu always shows the Redocly logo from its CDN (no option turns it
    # off); offline the image fails and is hidden. Nothing else may leave loopback.
    assert set(browser.left_loopback) <= {REDOCLY_LOGO}, browser.left_loopback
