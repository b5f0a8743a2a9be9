"""The built website, opened page by page in headless Chromium.

Run after ``jupyter-book build .`` (``make browser`` does both). The site is served from ``_build/html``
on 127.0.0.1, every request that is not to loopback is blocked (and recorded: no page may even try one,
so MathJax must come from the site itself), and a screenshot of each page is saved under
``_build/screenshots`` (a build artifact, not committed).
"""

from __future__ import annotations

import functools
import http.server
import re
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
# A term from a chapter's prose that the search page must find, and the page it must find it on.
SEARCH_TERM, SEARCH_HIT = "GradNorm", "chapters/05_gradnorm.html"

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
PAGES = [TOC["root"]] + [
    e["file"] for part in TOC["parts"] for c in part["chapters"] for e in (c, *c.get("sections", []))
]
CHAPTERS = [p for p in PAGES if p.startswith("chapters/")]
# TeX delimiters that MathJax replaces: one left in the text is a formula the reader sees as source.
RAW_TEX = re.compile(r"\\[()\[\]]|\$\$")
# Where TeX-like text is code, not math (MathJax skips these elements too).
NOT_PROSE = ("pre", "code", "script", "style", "textarea")


def _prose_text(soup: BeautifulSoup) -> str:
    return " ".join(
        text for text in soup.find_all(string=True) if not any(p.name in NOT_PROSE for p in text.parents)
    )


def math_pages() -> dict[str, int]:
    """Every built page with math, from its HTML: elements of class ``math``, or TeX delimiters in the
    prose. Mapped to its number of display formulas. Empty before the site is built."""
    found = {}
    for path in sorted(HTML.rglob("*.html")):
        relative = path.relative_to(HTML)
        if relative.parts[0] in {"_static", "_sources", "_images"}:
            continue
        soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
        if soup.select(".math") or RAW_TEX.search(_prose_text(soup)):
            found[relative.with_suffix("").as_posix()] = len(soup.select("div.math"))
    return found


MATH_PAGES = math_pages()
# Two chapters with display formulas (the first two in reading order) get a screenshot of one.
MATH_SCREENSHOTS = [c for c in CHAPTERS if MATH_PAGES.get(c, 0) > 0][:2]


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
    assert remote_requests == [], "the page tried to reach the network (blocked)"

    if name in CHAPTERS:
        figures = page.locator(".cell_output img")
        assert figures.count() >= 1, "a chapter shows at least one figure"
        colab = page.locator('a[href*="colab.research.google.com"]')
        assert colab.count() >= 1, "the chapter has no Open in Colab link"
        assert {colab.nth(k).get_attribute("href") for k in range(colab.count())} == {colab_link(name)}
        assert page.locator("div.cell_input button.copybtn").count() >= 1, "code cells have copy buttons"


def typeset_math(page: Page) -> dict:
    """Wait for MathJax's first typeset pass, then report what a reader would still see as TeX.

    Returns ``status`` ('typeset', or why not), the numbers of ``.math`` elements and of MathJax's
    ``mjx-container`` outputs, the ``.math`` elements left without an output, MathJax's TeX errors
    (``mjx-merror``), raw delimiters left in the visible text (``innerText`` with code hidden), and raw
    delimiters left in any prose text node, hidden ones too (closed solutions, collapsed outputs).
    """
    return page.evaluate(
        """async ([pattern, notProse]) => {
            const deadline = Date.now() + 5000;  // the page has loaded: its deferred scripts have run
            while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
                if (Date.now() > deadline) return {status: 'MathJax never loaded (no MathJax.startup)'};
                await new Promise(resolve => setTimeout(resolve, 100));
            }
            await MathJax.startup.promise;
            const tex = new RegExp(pattern);
            const excerpt = (text, at) => text.slice(Math.max(0, at - 30), at + 50);
            const skip = notProse.join(', ') + ', mjx-container';
            const hidden = [];
            const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
            for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                const at = node.textContent.search(tex);
                if (at >= 0 && !node.parentElement.closest(skip)) hidden.push(excerpt(node.textContent, at));
            }
            const noCode = document.createElement('style');
            noCode.textContent = notProse.join(', ') + ' { display: none !important; }';
            document.head.appendChild(noCode);
            const visible = document.body.innerText;
            noCode.remove();
            const at = visible.search(tex);
            const math = Array.from(document.querySelectorAll('.math'));
            return {
                status: 'typeset',
                math: math.length,
                containers: document.querySelectorAll('mjx-container').length,
                untypeset: math.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent),
                errors: Array.from(document.querySelectorAll('mjx-merror'), e => e.textContent),
                visible_raw: at >= 0 ? [excerpt(visible, at)] : [],
                raw: hidden,
            };
        }""",
        [RAW_TEX.pattern, list(NOT_PROSE)],
    )


def test_math_pages_are_found():
    assert MATH_PAGES, "no built page has math: build the site first (make book), or the detection broke"
    assert len(MATH_SCREENSHOTS) == 2, "two chapters with display math are needed for the screenshots"


@pytest.mark.parametrize("name", list(MATH_PAGES))
def test_math_is_typeset_offline(page: Page, site: str, remote_requests: list[str], name: str):
    open_page(page, f"{site}/{name}.html")
    result = typeset_math(page)
    assert result["status"] == "typeset", f"{result['status']}; blocked requests: {remote_requests}"
    if name in MATH_SCREENSHOTS:
        page.locator("div.math mjx-container").first.evaluate("e => e.scrollIntoView({block: 'center'})")
        screenshot(page, "math-" + name.replace("/", "__"))

    assert remote_requests == [], "MathJax (or anything else) was requested from the network"
    assert result["containers"] >= max(result["math"], 1), "MathJax produced fewer outputs than formulas"
    assert result["untypeset"] == [], "formulas left as TeX"
    assert result["visible_raw"] == [], "raw TeX delimiters in the visible text (innerText)"
    assert result["raw"] == [], "raw TeX delimiters left in the text of hidden prose"
    assert result["errors"] == [], "MathJax could not parse these formulas"


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
