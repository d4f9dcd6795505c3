"""``/v1/docs``: Swagger UI renders the served document under its strict CSP, offline."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


class TestApiReferencePage:
    def test_swagger_ui_renders_every_operation_with_no_csp_violation(self, live_server, browser):
        # The CSP allows this origin only, so a script, style or request anywhere else (a
        # CDN, a validator badge) would be refused and reported in the console.
        browser.get(f"{live_server.url}/v1/docs")
        WebDriverWait(browser, 20).until(
            lambda driver: driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        )
        paths = {
            element.get_attribute("data-path")
            for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        }
        assert "/v1/events" in paths and "/v1/exports/{export_id}/download" in paths
        title = browser.find_element(By.CSS_SELECTOR, ".info .title").text
        assert title.startswith("auditlog")
        violations = [
            entry["message"]
            for entry in browser.get_log("browser")
            if "Content Security Policy" in entry["message"] or entry["level"] == "SEVERE"
        ]
        assert violations == []
