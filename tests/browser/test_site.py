"""The built website, opened page by page in headless Chromium.

Run after ``jupyter-book build .`` (``make browser`` does both). The site is served from ``_build/html``
on 127.0.0.1, every request that is not to loopback is blocked, and a screenshot of each page is saved
under ``_build/screenshots`` (a build artifact, not committed).
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest
import yaml
from bs4 import BeautifulSoup
from playwright.sync_api import Browser, Page, Route, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
# The one remote resource the theme loads: MathJax from its CDN. It is blocked here like everything
# else that is not loopback; a reader's browser fetches it.
EXPECTED_REMOTE_HOSTS = {"cdn.jsdelivr.net"}
# A term from a chapter's prose that the search page must find, and the page it must find it on.
SEARCH_TERM, SEARCH_HIT = "GradNorm", "chapters/05_gradnorm.html"

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
PAGES = [TOC["root"]] + [c["file"] for part in TOC["parts"] for c in part["chapters"]]
CHAPTERS = [p for p in PAGES if p.startswith("chapters/")]


def colab_link(page: str) -> str:
    """The "Open in Colab" address the book's configuration implies for ``page``."""
    repository = urlsplit(CONFIG["repository"]["url"]).path.strip("/")
    colab = CONFIG["launch_buttons"]["colab_url"].rstrip("/")
    return f"{colab}/github/{repository}/blob/{CONFIG['repository']['branch']}/{page}.ipynb"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output to the test results
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    assert (HTML / "index.html").is_file(), "build the site first: make book (or make browser)"
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def remote_requests() -> list[str]:
    return []


@pytest.fixture
def page(browser: Browser, remote_requests: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")

    def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            remote_requests.append(route.request.url)
            route.abort()

    context.route("**/*", loopback_only)
    page = context.new_page()
    yield page
    context.close()


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png")


def open_page(page: Page, url: str) -> None:
    response = page.goto(url, wait_until="load")
    assert response is not None and response.ok, f"{url} answered {response and response.status}"


def images_not_loaded(page: Page) -> list[str]:
    """Every local image decodes to a positive width (lazy ones, and ones in closed dropdowns, too)."""
    return page.evaluate(
        """async () => {
            const local = Array.from(document.images).filter(img => img.src.startsWith(location.origin));
            local.forEach(img => { img.loading = 'eager'; });
            await Promise.all(local.map(img => img.decode().catch(() => null)));
            const broken = local.filter(img => !(img.complete && img.naturalWidth > 0));
            return broken.map(img => img.getAttribute('src'));
        }"""
    )


def visible_errors(page: Page) -> list[str]:
    """Tracebacks and stderr/error outputs of notebook cells that a reader would see."""
    found = [
        text[:200]
        for element in page.locator(".output.stderr, .output.traceback, .output.error").all()
        if element.is_visible() and (text := element.inner_text())
    ]
    body = page.locator("body").inner_text()
    if "Traceback (most recent call last)" in body:
        found.append("a Python traceback in the page text")
    return found


def broken_internal_links(page: Page, site: str) -> list[str]:
    """Links to pages of this site that do not exist, or to anchors the target page does not have."""
    hrefs = page.evaluate("() => Array.from(document.querySelectorAll('a[href]'), a => a.href)")
    broken = []
    for href in sorted(set(hrefs)):
        if not href.startswith(site):
            continue
        url, fragment = urldefrag(href)
        target = HTML / unquote(urlsplit(url).path).lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(href)
        elif fragment and target.suffix == ".html" and unquote(fragment) not in _anchors(target):
            broken.append(href)
    return broken


@functools.cache
def _anchors(path: Path) -> frozenset[str]:
    soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
    return frozenset(tag["id"] for tag in soup.find_all(id=True)) | frozenset(
        tag["name"] for tag in soup.find_all("a", attrs={"name": True})
    )


@pytest.mark.parametrize("name", PAGES)
def test_page(page: Page, site: str, remote_requests: list[str], name: str):
    open_page(page, f"{site}/{name}.html")
    screenshot(page, name.replace("/", "__"))

    assert page.title(), "the page has no title"
    assert images_not_loaded(page) == []
    assert visible_errors(page) == []
    assert broken_internal_links(page, site) == []
    assert {urlsplit(url).hostname for url in remote_requests} <= EXPECTED_REMOTE_HOSTS

    if name in CHAPTERS:
        figures = page.locator(".cell_output img")
        assert figures.count() >= 1, "a chapter shows at least one figure"
        colab = page.locator('a[href*="colab.research.google.com"]')
        assert colab.count() >= 1, "the chapter has no Open in Colab link"
        assert {colab.nth(k).get_attribute("href") for k in range(colab.count())} == {colab_link(name)}
        assert page.locator("div.cell_input button.copybtn").count() >= 1, "code cells have copy buttons"


WITH_SOLUTIONS = [c for c in CHAPTERS if "{solution-start}" in (ROOT / f"{c}.ipynb").read_text()]


@pytest.mark.parametrize("name", WITH_SOLUTIONS)
def test_solutions_are_hidden_until_clicked(page: Page, site: str, name: str):
    open_page(page, f"{site}/{name}.html")
    solutions = page.locator("div.solution.dropdown")
    assert solutions.count() >= 1
    for k in range(solutions.count()):
        solution = solutions.nth(k)
        body = solution.locator("section").first
        assert not body.is_visible(), f"solution {k + 1} is shown before it is clicked"
        solution.locator("button.toggle-button").click()
        body.wait_for(state="visible", timeout=5_000)


def test_search_finds_a_term_from_a_chapter(page: Page, site: str):
    open_page(page, f"{site}/search.html?q={SEARCH_TERM}")
    hits = page.locator("#search-results a")
    hits.first.wait_for(timeout=15_000)
    screenshot(page, "search")
    assert any(SEARCH_HIT in (hits.nth(k).get_attribute("href") or "") for k in range(hits.count()))


def test_figures_stay_readable_in_dark_mode(page: Page, site: str):
    page.add_init_script("localStorage.setItem('mode', 'dark'); localStorage.setItem('theme', 'dark');")
    open_page(page, f"{site}/{CHAPTERS[0]}.html")
    assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    figure = page.locator(".cell_output img").first
    figure.scroll_into_view_if_needed()
    screenshot(page, "dark-mode-first-figure")
    # The figure keeps its own opaque light background, so dark text on it stays dark-on-light.
    background = figure.evaluate(
        """img => { const c = document.createElement('canvas'); c.width = img.naturalWidth;
                    c.height = img.naturalHeight; const x = c.getContext('2d'); x.drawImage(img, 0, 0);
                    return Array.from(x.getImageData(1, 1, 1, 1).data); }"""
    )
    assert background[3] == 255 and min(background[:3]) > 200, f"corner pixel RGBA {background}"
