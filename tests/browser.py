"""Headless Chromium for tests that look at a web page the way a person would (the Prefect UI).

Debian's ``chromium`` package, driven by the Python ``playwright`` package through
``executable_path``: no browser download. Where either is missing, :func:`chromium`
skips the test and says which and how to get it.

    pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")

    with chromium() as browser:
        page = browser.open(url, wait_for_text=["my-artifact-key"], screenshot=Path("docs/screenshots/x.png"))
    assert ["video_1", "completed"] in page.table_with("video_1") and not page.broken_images

A page is "rendered" once every ``wait_for_text`` string is in its visible text and every
``wait_for_selector`` matches a visible element; then the images are scrolled into view and
awaited, the screenshot is taken and the ``<img>`` elements are reported loaded or broken.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

# The flags that let Chromium run headless as root on a machine whose only open network is
# package registries: without the background-networking ones its own connections are refused.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
# Every host but the loopback one resolves to nothing: a page under test reaches only the
# local servers, whatever its scripts try (Prefect's V2 UI fetches Amplitude's config).
OFFLINE_FLAG = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]"
# Debian's package; SORA_TEST_CHROMIUM names another binary.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
INSTALL_HINT = "apt-get install -y chromium (`.ci/run` does so when it runs as root or with sudo)"

# Every <img> on the page with what the browser made of it: loaded means complete with pixels.
IMAGES_SCRIPT = """() => Array.from(document.images).map((img) => ({
    src: img.currentSrc || img.src || "",
    alt: img.alt || "",
    complete: img.complete,
    natural_width: img.naturalWidth,
    natural_height: img.naturalHeight,
}))"""
IMAGES_SETTLED_SCRIPT = "() => Array.from(document.images).every((img) => img.complete)"
# Every <table> as rows of cell texts (header and body rows alike), for asserting on cells.
TABLES_SCRIPT = """() => Array.from(document.querySelectorAll("table")).map((table) =>
    Array.from(table.rows).map((row) => Array.from(row.cells).map((cell) => cell.innerText.trim())))"""
# Every link's href as written in the page (before the browser resolves it), and every heading's text.
LINKS_SCRIPT = """() => Array.from(document.querySelectorAll("a[href], area[href]")).map((link) =>
    link.getAttribute("href") || "")"""
HEADINGS_SCRIPT = """() => Array.from(document.querySelectorAll("h1, h2, h3, h4, h5, h6")).map((heading) =>
    heading.innerText.trim())"""
TEXTS_SCRIPT = "(texts) => texts.every((text) => document.body && document.body.innerText.includes(text))"


@dataclass(frozen=True)
class ImageState:
    """One ``<img>`` element: loaded when complete with a natural width above 0, else broken."""

    src: str
    alt: str
    complete: bool
    natural_width: int
    natural_height: int

    @property
    def loaded(self) -> bool:
        return self.complete and self.natural_width > 0


@dataclass
class RenderedPage:
    """What a page showed once rendered: its address, visible text, images and screenshot."""

    url: str
    title: str
    text: str
    images: list[ImageState]
    tables: list[list[list[str]]] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # every <a href>, as the page wrote it
    headings: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)  # no answer: refused, unresolved, aborted
    error_responses: list[str] = field(default_factory=list)  # answered 400 or above

    @property
    def loaded_images(self) -> list[ImageState]:
        return [image for image in self.images if image.loaded]

    @property
    def broken_images(self) -> list[ImageState]:
        return [image for image in self.images if not image.loaded]

    def images_from(self, prefix: str) -> list[ImageState]:
        """The images whose source starts with ``prefix`` (e.g. a test server's base URL)."""
        return [image for image in self.images if image.src.startswith(prefix)]

    def table_with(self, text: str) -> list[list[str]]:
        """The first table with a cell reading ``text`` exactly (rows of cell texts); [] if none."""
        return next((table for table in self.tables if any(text in row for row in table)), [])

    def describe(self) -> str:
        """A failure message's worth of the page: where it ended up, its errors and images."""
        images = "\n".join(
            f"  {'loaded' if image.loaded else 'BROKEN'} {image.natural_width}x{image.natural_height} {image.src[:160]}"
            for image in self.images
        )
        return (
            f"page {self.url} ({self.title!r}), screenshot {self.screenshot}\n"
            f"images:\n{images or '  none'}\ntables: {self.tables}\n"
            f"console errors: {self.console_errors[:10]}\nfailed requests: {self.failed_requests[:10]}\n"
            f"error responses: {self.error_responses[:10]}\n"
            f"text: {self.text[:2000]!r}"
        )


def find_chromium() -> str | None:
    """The Chromium binary to drive: ``$SORA_TEST_CHROMIUM``, else Debian's, else one on PATH."""
    configured = os.environ.get("SORA_TEST_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def missing_reason() -> str | None:
    """Why no browser can be driven here (a skip reason), or None when one can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the `playwright` Python package is not installed (pip install -e '.[dev]')"
    if find_chromium() is None:
        configured = os.environ.get("SORA_TEST_CHROMIUM")
        where = f"SORA_TEST_CHROMIUM={configured} is not executable" if configured else "no Chromium on this machine"
        return f"{where}: {INSTALL_HINT}"
    return None


def require_browser() -> str:
    """The Chromium binary, or skip the calling test saying what is missing and how to get it."""
    reason = missing_reason()
    binary = find_chromium()
    if reason is not None or binary is None:
        pytest.skip(reason or "no Chromium")
    return binary


class Browser:
    """One headless Chromium; :meth:`open` loads a page in a fresh tab and reports what it showed."""

    def __init__(self, context: Any, timeout: float) -> None:
        self._context = context
        self.timeout = timeout

    def open(
        self,
        url: str,
        *,
        click: str | Sequence[str] = (),
        wait_for_text: str | Sequence[str] = (),
        wait_for_selector: str | Sequence[str] = (),
        screenshot: str | Path | None = None,
        full_page: bool = True,
        network_idle: bool = True,
        timeout: float | None = None,
    ) -> RenderedPage:
        """Load ``url``, wait until it has rendered, save a screenshot and report its images.

        ``click``: Playwright selectors (``"role=tab[name='Artifacts']"``, ``"text=Artifacts"``)
        clicked in order once each is visible, before the waiting (a tab, a toggle).

        ``network_idle``: then also wait (up to 10 s) for half a second without requests, so
        what draws from late answers (Prefect's run graph, a canvas) is in the screenshot.

        Raises ``AssertionError`` (with the page's text, errors and a screenshot) when the
        texts or selectors do not appear within ``timeout`` seconds.
        """
        from playwright.sync_api import Error as PlaywrightError

        clicks = [click] if isinstance(click, str) else list(click)
        texts = [wait_for_text] if isinstance(wait_for_text, str) else list(wait_for_text)
        selectors = [wait_for_selector] if isinstance(wait_for_selector, str) else list(wait_for_selector)
        limit_ms = (timeout if timeout is not None else self.timeout) * 1000
        page = self._context.new_page()
        console_errors: list[str] = []
        failed_requests: list[str] = []
        error_responses: list[str] = []

        def on_console(message: Any) -> None:
            if message.type == "error":
                console_errors.append(message.text)

        def on_response(answer: Any) -> None:
            if answer.status >= 400:
                error_responses.append(f"{answer.status} {answer.url}")

        page.on("console", on_console)
        page.on("requestfailed", lambda request: failed_requests.append(f"{request.url}: {request.failure}"))
        page.on("response", on_response)
        seen = (console_errors, failed_requests, error_responses)
        try:
            page.goto(url, wait_until="domcontentloaded", timeout=limit_ms)
            try:
                for target in clicks:
                    page.locator(target).first.click(timeout=limit_ms)
                if texts:
                    page.wait_for_function(TEXTS_SCRIPT, arg=texts, timeout=limit_ms, polling=200)
                for selector in selectors:
                    page.locator(selector).first.wait_for(state="visible", timeout=limit_ms)
            except PlaywrightError as error:
                rendered = self._report(page, screenshot, full_page, seen)
                missing = [text for text in texts if text not in rendered.text]
                raise AssertionError(
                    f"{url} did not render {missing or selectors or clicks} within {limit_ms / 1000:.0f} s "
                    f"({str(error).splitlines()[0]})\n{rendered.describe()}"
                ) from None
            if network_idle:
                with suppress(PlaywrightError):
                    page.wait_for_load_state("networkidle", timeout=min(limit_ms, 10_000))
            self._settle_images(page, limit_ms)
            return self._report(page, screenshot, full_page, seen)
        finally:
            page.close()

    @staticmethod
    def _settle_images(page: Any, limit_ms: float) -> None:
        """Scroll each image into view (lazy ones load only then) and wait for all to finish."""
        from playwright.sync_api import Error as PlaywrightError

        budget_ms = min(limit_ms, 15_000)
        for image in page.locator("img").all():
            try:
                image.scroll_into_view_if_needed(timeout=2000)
                page.wait_for_function("(img) => img.complete", arg=image.element_handle(), timeout=budget_ms)
            except PlaywrightError:
                pass  # hidden, or still loading: reported as it is (incomplete counts as broken)
        page.evaluate("() => window.scrollTo(0, 0)")
        with suppress(PlaywrightError):
            page.wait_for_function(IMAGES_SETTLED_SCRIPT, timeout=2000, polling=200)
        page.wait_for_timeout(300)  # the last layout after the images took their size

    @staticmethod
    def _report(
        page: Any, screenshot: str | Path | None, full_page: bool, seen: tuple[list[str], list[str], list[str]]
    ) -> RenderedPage:
        saved: Path | None = None
        if screenshot is not None:
            saved = Path(screenshot)
            saved.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(saved), full_page=full_page, animations="disabled")
        return RenderedPage(
            url=page.url,
            title=page.title(),
            text=page.evaluate("() => document.body ? document.body.innerText : ''"),
            images=[ImageState(**state) for state in page.evaluate(IMAGES_SCRIPT)],
            tables=page.evaluate(TABLES_SCRIPT),
            links=page.evaluate(LINKS_SCRIPT),
            headings=page.evaluate(HEADINGS_SCRIPT),
            screenshot=saved,
            console_errors=list(seen[0]),
            failed_requests=list(seen[1]),
            error_responses=list(seen[2]),
        )


@contextmanager
def chromium(
    *,
    viewport: tuple[int, int] = (1400, 900),
    timeout: float = 60.0,
    color_scheme: Literal["light", "dark", "no-preference"] = "light",
    offline: bool = True,
) -> Iterator[Browser]:
    """Headless Chromium with a new, empty profile; skips the test where none can be driven.

    ``offline``: only localhost, 127.0.0.1 and [::1] are reachable, so pages reach only the
    test's servers. ``timeout`` is the default for :meth:`Browser.open`.
    """
    binary = require_browser()
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        with sync_playwright() as driver:
            context = driver.chromium.launch_persistent_context(
                profile,
                executable_path=binary,
                headless=True,
                args=[*CHROMIUM_FLAGS, *([OFFLINE_FLAG] if offline else [])],
                viewport={"width": viewport[0], "height": viewport[1]},
                device_scale_factor=1,
                color_scheme=color_scheme,
                timeout=timeout * 1000,
            )
            try:
                yield Browser(context, timeout)
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
