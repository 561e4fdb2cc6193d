"""Pages people look at, tested as they see them: the system's headless Chromium, driven by Playwright, opens a
file and hands back what a person would notice (the full-page screenshot, console errors, anything fetched)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

_FACTS = """() => ({
    title: document.title,
    text: document.body.innerText,
    svgs: [...document.querySelectorAll("svg")].filter(svg => {
        const box = svg.getBoundingClientRect();
        return box.width > 0 && box.height > 0;
    }).length,
})"""


@dataclass
class PageView:
    """What the page showed: console errors and warnings and uncaught page errors, every request other than
    the file itself (aborted, never sent), and how many `<svg>` elements were drawn with a non-zero size."""

    title: str
    text: str
    svg_count: int
    console_errors: list[str]
    outside_requests: list[str]


def chromium() -> str:
    """The system's Chromium (`make unit` installs it); skips on a laptop without it, fails under CI=true."""
    path = shutil.which("chromium")
    problem = None
    if path is None:
        problem = (
            "Chromium is not installed; the HTML reports are tested in it. `make unit` installs it as root "
            "(apt-get install -y --no-install-recommends chromium)"
        )
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "Playwright is not installed: pip install -e '.[test]'"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    assert path is not None
    return path


def open_page(path: Path, screenshot: Path, *, width: int = 1280, height: int = 900) -> PageView:
    """Open a local file in headless Chromium, write the full page's screenshot (PNG) and report what it did."""
    from playwright.sync_api import Request, Route, sync_playwright

    executable = chromium()
    address = path.resolve().as_uri()
    console_errors: list[str] = []
    outside_requests: list[str] = []

    def refuse_outside(route: Route, request: Request) -> None:
        if request.url == address:
            route.continue_()
        else:
            outside_requests.append(request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, timeout=20_000)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on(
                "console",
                lambda message: (
                    console_errors.append(f"console {message.type}: {message.text}")
                    if message.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda error: console_errors.append(f"page error: {error}"))
            page.route("**/*", refuse_outside)
            page.goto(address, wait_until="load", timeout=10_000)
            page.screenshot(path=screenshot, full_page=True)
            facts = page.evaluate(_FACTS)
        finally:
            browser.close()
    return PageView(
        title=facts["title"],
        text=facts["text"],
        svg_count=facts["svgs"],
        console_errors=console_errors,
        outside_requests=outside_requests,
    )
