"""/docs and /redoc are served by the service itself (fastapi-offline's bundled Swagger UI
and ReDoc), so they work without internet: the pages reference only the service's own
paths, and every file they load is there. (The browser test, test_docs_browser.py, loads
them in Chromium with the network off.)"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import fastapi_offline
import pytest
from fastapi.testclient import TestClient

from tests.serving.test_service import metric_samples

BUNDLED = Path(fastapi_offline.__file__).parent / "static"
PAGES = ("/docs", "/redoc", "/docs/oauth2-redirect")
# What each kind of reference must answer with.
CONTENT_TYPES = {"script": "text/javascript", "stylesheet": "text/css", "icon": "image/png"}


class References(HTMLParser):
    """The URLs a page loads: (kind, url) for scripts, stylesheets and icons."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.found.append(("script", str(values["src"])))
        elif tag == "link" and values.get("href"):
            rel = str(values.get("rel"))
            self.found.append(
                ("stylesheet" if rel == "stylesheet" else "icon", str(values["href"]))
            )


def references(html: str) -> list[tuple[str, str]]:
    parser = References()
    parser.feed(html)
    return parser.found


@pytest.mark.parametrize("page", PAGES)
def test_the_docs_pages_reference_no_other_host(shared_client, page):
    response = shared_client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert re.findall(r"https?://[^\s\"'<>]*", html) == []
    assert re.findall(r"//[a-z0-9.-]+\.[a-z]{2,}", html, flags=re.IGNORECASE) == []
    assert "cdn" not in html.lower()
    assert "fonts.googleapis" not in html
    assert all(url.startswith("/") for _, url in references(html)), references(html)


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/docs", {"script": 1, "stylesheet": 1, "icon": 1}),
        ("/redoc", {"script": 1, "icon": 1}),
    ],
)
def test_every_file_the_docs_pages_load_is_served(shared_client, page, expected):
    found = references(shared_client.get(page).text)
    kinds = {kind: sum(1 for k, _ in found if k == kind) for kind in CONTENT_TYPES}
    assert {kind: count for kind, count in kinds.items() if count} == expected
    for kind, url in found:
        response = shared_client.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith(CONTENT_TYPES[kind]), (url, kind)
        # The files of the installed package, not copies kept in this repository.
        assert response.content == (BUNDLED / url.rsplit("/", 1)[-1]).read_bytes(), url


def test_swagger_ui_is_loaded_from_the_service_with_no_validator(shared_client):
    html = shared_client.get("/docs").text
    assert "url: '/openapi.json'" in html
    assert '"validatorUrl": null' in html  # no badge fetched from validator.swagger.io


def test_the_docs_pages_honour_the_root_path(make_app):
    """Behind a proxy that serves the app under a prefix, the pages load from it."""
    with TestClient(make_app(), root_path="/fraud") as client:
        for page in ("/fraud/docs", "/fraud/redoc"):
            found = references(client.get(page).text)
            assert found, page
            for _, url in found:
                assert url.startswith("/fraud/static-offline-docs/"), url
                assert client.get(url).status_code == 200, url


def test_the_docs_files_share_one_metrics_series(make_app):
    """The mount is labelled by its template: a scanner's URLs under it (404, 405 for a
    POST) cannot create a series each."""
    with TestClient(make_app()) as client:
        assert client.get("/static-offline-docs/swagger-ui.css").status_code == 200
        assert client.get("/static-offline-docs/redoc.standalone.js").status_code == 200
        for name in ("a", "b", "c"):
            assert client.post(f"/static-offline-docs/{name}").status_code == 405
            assert client.get(f"/static-offline-docs/{name}").status_code == 404
        text = client.get("/metrics").text
    samples = metric_samples(text, "http_requests_total")
    mount = "/static-offline-docs/{path}"
    endpoints = {dict(labels)["endpoint"] for labels in samples}
    assert {e for e in endpoints if e.startswith("/static-offline-docs")} == {mount}
    assert samples[(("endpoint", mount), ("method", "GET"), ("status", "200"))] == 2
    assert samples[(("endpoint", mount), ("method", "POST"), ("status", "405"))] == 3
    assert samples[(("endpoint", "unmatched"), ("method", "GET"), ("status", "404"))] == 3
