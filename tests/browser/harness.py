"""Helpers for browser tests: accessibility checks (axe-core), screenshots, time zones.

Import them in a test module::

    from tests.browser.harness import axe_violations, screenshot, set_timezone

The fixtures that make the browser and the server are in ``conftest.py`` beside this file.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from selenium.webdriver.chrome.webdriver import WebDriver

VENDOR = Path(__file__).parent / "vendor"
#: axe-core, vendored unmodified from npm (version and licence in vendor/VERSION).
AXE_PATH = VENDOR / "axe.min.js"

DEFAULT_IMPACTS = ("serious", "critical")

_RUN_AXE = """
const [context, options, done] = arguments;
axe.run(context || document, Object.assign({resultTypes: ["violations"]}, options || {}))
  .then((results) => done({violations: results.violations}))
  .catch((error) => done({error: String((error && error.stack) || error)}));
"""


@cache
def axe_source() -> str:
    return AXE_PATH.read_text(encoding="utf-8")


@dataclass(frozen=True)
class AxeViolation:
    """One axe rule that failed, and where (a CSS selector for each failing node)."""

    id: str
    impact: str
    help: str
    help_url: str
    targets: tuple[str, ...]

    def __str__(self) -> str:
        nodes = "\n".join(f"      {target}" for target in self.targets)
        return f"  {self.id} ({self.impact}): {self.help}\n    {self.help_url}\n{nodes}"


class AxeViolations(list[AxeViolation]):
    """A list of violations whose repr stays short enough for pytest to show whole.

    ``assert not axe_violations(browser)`` then fails with, for example,
    ``<2 axe violations: image-alt (critical) at img; label (critical) at input>``;
    ``str()`` gives the full report (help text, link, every node).
    """

    def __repr__(self) -> str:
        if not self:
            return "<no axe violations>"
        parts = []
        for violation in self:
            where = ", ".join(violation.targets[:3])
            more = f" +{len(violation.targets) - 3}" if len(violation.targets) > 3 else ""
            parts.append(f"{violation.id} ({violation.impact}) at {where}{more}")
        noun = "violation" if len(self) == 1 else "violations"
        return f"<{len(self)} axe {noun}: {'; '.join(parts)}>"

    def __str__(self) -> str:
        if not self:
            return "no axe violations"
        return f"{len(self)} axe violation(s):\n" + "\n".join(str(v) for v in self)


def _target(selector: Any) -> str:
    # A node inside an iframe or a shadow root has a list of selectors, outermost first.
    if isinstance(selector, list):
        return " >>> ".join(_target(part) for part in selector)
    return str(selector)


def axe_violations(
    driver: WebDriver,
    impacts: Iterable[str] = DEFAULT_IMPACTS,
    *,
    context: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> AxeViolations:
    """Run axe-core on the current page; return the violations of the given impacts.

    ``impacts`` is a subset of ``minor``, ``moderate``, ``serious``, ``critical``;
    ``context`` an optional CSS selector to check instead of the whole document;
    ``options`` is passed to ``axe.run`` (for example ``{"rules": {"region": {"enabled":
    False}}}`` or ``{"runOnly": ["wcag2a", "wcag2aa"]}``).
    """
    wanted = set(impacts)
    unknown = wanted - {"minor", "moderate", "serious", "critical"}
    if unknown:
        raise ValueError(f"unknown axe impact(s): {sorted(unknown)}")
    if not driver.execute_script("return typeof window.axe === 'object'"):
        driver.execute_script(axe_source())
    outcome = driver.execute_async_script(_RUN_AXE, context, dict(options or {}))
    if not isinstance(outcome, dict) or "violations" not in outcome:
        raise RuntimeError(f"axe.run failed on {driver.current_url[:200]}: {outcome!r}")
    found = AxeViolations()
    for violation in outcome["violations"]:
        if violation.get("impact") not in wanted:
            continue
        found.append(
            AxeViolation(
                id=violation["id"],
                impact=violation["impact"],
                help=violation["help"],
                help_url=violation.get("helpUrl", ""),
                targets=tuple(_target(node["target"]) for node in violation["nodes"]),
            )
        )
    return found


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def screenshot(driver: WebDriver, name: str) -> Path | None:
    """Save ``$SCREENSHOTS_DIR/<name>.png`` (the whole page); without that variable, nothing.

    ``make screenshots`` sets it to docs/screenshots and runs the tests named ``*screenshot*``.
    """
    directory = os.environ.get("SCREENSHOTS_DIR")
    if not directory:
        return None
    if not _NAME.fullmatch(name):
        raise ValueError(f"screenshot name {name!r}: use letters, digits, '.', '_' and '-'")
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    clip = {
        "x": 0,
        "y": 0,
        "width": max(1, int(size["width"])),
        "height": max(1, int(size["height"])),
        "scale": 1,
    }
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "clip": clip},
    )
    path = Path(directory) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def set_timezone(driver: WebDriver, timezone: str | None) -> None:
    """Make the current tab's JavaScript dates use an IANA zone (``None``: the default, UTC).

    The override lasts across navigations in that tab; the ``browser`` fixture clears it after
    each test.
    """
    driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": timezone or ""})
