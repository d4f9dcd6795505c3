"""``/v1/docs`` serves Swagger UI from the app's own files, under a strict CSP."""

from __future__ import annotations

import re

from api.docs import SWAGGER_UI_VERSION


class TestApiDocsPage:
    def test_the_page_and_its_assets_come_from_the_app_itself(self, client):
        page = client.get("/v1/docs")
        assert page.status_code == 200
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "style-src 'self';" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        html = page.get_data(as_text=True)
        assert "<script>" not in html and "style=" not in html
        references = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert all(ref.startswith("/") or ref.startswith("data:") for ref in references)
        for ref in references:
            if ref.startswith("/"):
                with client.get(ref) as asset:
                    assert asset.status_code == 200, ref
        assert f"swagger-ui-bundle-{SWAGGER_UI_VERSION}.js" in html
        assert 'data-spec-url="/v1/openapi.json"' in html

    def test_it_needs_no_key_and_is_not_an_operation_of_the_document(self, client):
        document = client.get("/v1/openapi.json").get_json()
        assert document["openapi"].startswith("3.1")
        assert "/v1/docs" not in document["paths"]
