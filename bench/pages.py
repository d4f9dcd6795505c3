"""The console as a browser meets it: a session from a single-use link, a page's assets."""

from __future__ import annotations

import http.client
import json
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from urllib.parse import urljoin, urlsplit

from api.console.access import COOKIE_NAME


def console_cookie(port: int, api_key: str) -> str:
    """A ``Cookie`` header for a new whole-organisation session: mint a link, open it once."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST", "/v1/console-sessions", headers={"Authorization": f"Bearer {api_key}"}
        )
        response = connection.getresponse()
        body = response.read()
        assert response.status == 201, body[:300]
        link = urlsplit(json.loads(body)["url"])
        assert link.path.startswith("/console/enter/"), link
        connection.request("GET", link.path)
        response = connection.getresponse()
        body = response.read()
        assert response.status == 303, body[:300]
        cookies: SimpleCookie = SimpleCookie()
        for header in response.headers.get_all("Set-Cookie") or []:
            cookies.load(header)
        return f"{COOKIE_NAME}={cookies[COOKIE_NAME].value}"
    finally:
        connection.close()


class AssetReferences(HTMLParser):
    """The stylesheets and scripts a page references, in order: what a first visit fetches."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        rel = (found.get("rel") or "").lower().split()
        if tag == "link" and "stylesheet" in rel and found.get("href"):
            self.urls.append(str(found["href"]))
        elif tag == "script" and found.get("src"):
            self.urls.append(str(found["src"]))


def first_visit(port: int, path: str, cookie: str) -> tuple[int, dict[str, int]]:
    """Bytes of a page's HTML and of each asset it references, uncompressed as served."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Cookie": cookie}
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        html = response.read()
        assert response.status == 200, html[:300]
        parser = AssetReferences()
        parser.feed(html.decode(response.headers.get_content_charset() or "utf-8"))
        parser.close()
        assets: dict[str, int] = {}
        for reference in dict.fromkeys(parser.urls):
            url = urlsplit(urljoin(path, reference))
            assert url.netloc in ("", f"127.0.0.1:{port}"), f"not served here: {reference}"
            target = url.path + (f"?{url.query}" if url.query else "")
            connection.request("GET", target, headers=headers)
            response = connection.getresponse()
            body = response.read()
            assert response.status == 200, (reference, response.status)
            assert not response.headers.get("Content-Encoding"), reference
            assets[url.path] = len(body)
        return len(html), assets
    finally:
        connection.close()
