"""The course site in a real browser: headless Chromium opens it from disk with the network cut off.

The site is built into a temporary folder from the committed notebooks plus a made-up reproduction
run holding one "executed" notebook (notebook 01 with a PNG output in its first figure cell), so
that both kinds of page are seen and a figure can be checked without executing anything. Chromium
runs with a proxy on a dead port and every host name unresolvable, and writes a net log: a request
the pages make for an http(s) URL shows up there (Chromium's own background requests are told
apart by their network isolation key, which is ``file://`` only for the pages' requests). The
screenshots go to ``reports/screenshots/`` (git-ignored) and the temporary folder.

Chromium comes from Debian's ``chromium`` package (``.ci/run`` installs it); without it the test is
skipped.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow

SCREENSHOTS = REPO_ROOT / "reports" / "screenshots"
WINDOW = (1280, 760)  # the decks' size, so that a slide fills the screenshot


def _chromium() -> str | None:
    for name in (os.environ.get("GIGACOUNT_CHROMIUM"), "chromium", "chromium-browser", "google-chrome",
                 "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


CHROMIUM = _chromium()
if CHROMIUM is None:
    pytest.skip("headless Chromium not found (Debian: apt-get install -y chromium; .ci/run installs it when "
                "run as root); the offline site is not checked in a browser", allow_module_level=True)


class Browser:
    """One headless Chromium process per page load: the DOM after scripts ran, or a screenshot."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.calls = 0

    def _run(self, url: str, mode: list[str], height: int = WINDOW[1]) -> tuple[str, list[str]]:
        self.calls += 1
        netlog = self.workdir / f"net-{self.calls}.json"
        profile = self.workdir / f"profile-{self.calls}"
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
               f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-default-apps", "--disable-extensions", f"--window-size={WINDOW[0]},{height}",
               "--virtual-time-budget=6000",
               # the network is cut off: a dead proxy and no name resolves
               "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
               f"--log-net-log={netlog}", *mode, url]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        done = subprocess.run(["nice", "-n", "19", *cmd] if shutil.which("nice") else cmd, capture_output=True,
                              text=True, timeout=120, env=env)
        assert done.returncode == 0, f"chromium failed on {url}:\n{done.stderr[-2000:]}"
        shutil.rmtree(profile, ignore_errors=True)
        return done.stdout, _page_requests(netlog)

    def dom(self, url: str) -> tuple[str, list[str]]:
        return self._run(url, ["--dump-dom"])

    def screenshot(self, url: str, path: Path, height: int = WINDOW[1]) -> tuple[np.ndarray, list[str]]:
        _, requests = self._run(url, [f"--screenshot={path}"], height=height)
        assert path.is_file(), f"no screenshot of {url}"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / path.name)
        return np.asarray(Image.open(path).convert("RGB")), requests


def _page_requests(netlog: Path) -> list[str]:
    """The http(s)/ws(s) URLs the page asked for, from Chromium's net log."""
    text = netlog.read_text() if netlog.is_file() else ""
    if not text.strip():
        return []
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # a log cut off at exit lacks its closing brackets
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    kinds = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    urls = []
    for event in log.get("events", []):
        params = event.get("params") or {}
        if kinds.get(event.get("type")) != "URL_REQUEST_START_JOB":
            continue
        url = str(params.get("url", ""))
        from_page = "file://" in str(params.get("network_isolation_key", "")) or params.get("initiator") == "null"
        if from_page and re.match(r"(https?|wss?)://", url):
            urls.append(url)
    return urls


_REMOTE = re.compile(r'<(script|link|img|iframe|source|video|audio)\b[^>]*\b(?:src|href)="((?:https?:)?//[^"]*)"',
                     re.I)


def _remote_resources(dom: str) -> list[str]:
    return [f"{tag}: {url}" for tag, url in _REMOTE.findall(dom)]


class _Sections(HTMLParser):
    """The reveal.js position (``h``, ``v``) of the first slide holding an image."""

    def __init__(self) -> None:
        super().__init__()
        self.depth, self.h, self.v, self.found = 0, -1, -1, None

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.depth += 1
            if self.depth == 1:
                self.h, self.v = self.h + 1, -1
            elif self.depth == 2:
                self.v += 1
        elif tag == "img" and self.found is None and self.depth:
            self.found = (self.h, max(self.v, 0))

    def handle_endtag(self, tag):
        if tag == "section":
            self.depth -= 1


def _figure_png() -> str:
    """A colourful 720x420 test figure (bands of hue with a gradient), base64 PNG."""
    y, x = np.mgrid[0:420, 0:720]
    rgb = np.stack([(x * 255 // 719), (y * 255 // 419), ((x // 60) % 2) * 200 + 30], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from gigacount_lib.reproduce import list_notebooks
    from gigacount_lib.site import build_site
    from gigacount_lib.slides import makes_figure

    tmp = tmp_path_factory.mktemp("site_browser")
    first = list_notebooks()[0]
    run = tmp / "reports" / "20990101-000000-tiny"
    run.mkdir(parents=True)
    nb = nbformat.read(str(first), as_version=4)
    cell = next(c for c in nb.cells if makes_figure(c))
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": _figure_png(),
                                                                   "text/plain": "<Figure size 720x420>"})]
    cell.execution_count = 1
    nbformat.write(nb, str(run / first.name))
    (run / "manifest.json").write_text(json.dumps({
        "run": run.name, "preset": "tiny", "started": "2099-01-01T00:00:00+00:00",
        "data_label": "synthetic data (made up for the browser test)",
        "notebooks": [{"notebook": first.name, "status": "ok", "executed": str(run / first.name)}]}))
    (run / "report.html").write_text("<!DOCTYPE html><html><body><h1>report</h1></body></html>")
    index = build_site(tmp / "site", reports_dir=tmp / "reports")
    return {"tmp": tmp, "index": index, "site": index.parent, "first": first,
            "browser": Browser(tmp), "shots": tmp / "screenshots"}


def _url(path: Path, fragment: str = "") -> str:
    return path.resolve().as_uri() + fragment


def test_index_opens_offline_and_links_every_page(site):
    index, root = site["index"], site["site"]
    site["shots"].mkdir(exist_ok=True)
    dom, requests = site["browser"].dom(_url(index))
    assert requests == [], f"the index asked the network for {requests}"
    assert _remote_resources(dom) == []
    links = re.findall(r'<a href="([^"]+)"', dom)
    local = [h for h in links if not h.startswith("https://colab.research.google.com/")]
    assert all(not re.match(r"[a-z]+://", h) and not h.startswith("/") for h in local), local
    for href in local:
        assert (root / href.split("#")[0]).is_file(), f"index links to a missing {href}"
    assert "report.html" in local
    assert len([h for h in links if h.startswith("https://colab.research.google.com/")]) >= 6
    assert "20990101-000000-tiny" in dom and "built from the unexecuted notebook" in dom
    pixels, requests = site["browser"].screenshot(_url(index), site["shots"] / "site_index.png", height=1400)
    assert requests == [] and pixels.std() > 10, "the index renders as a blank page"


def test_notebook_page_renders_its_figure_and_typesets_offline(site):
    page = site["site"] / "notebooks" / f"{site['first'].stem}.html"
    dom, requests = site["browser"].dom(_url(page))
    assert requests == [], f"the notebook page asked the network for {requests}"
    assert _remote_resources(dom) == []
    assert re.search(r'<img[^>]+src="data:image/png;base64,', dom), "the executed figure is not on the page"
    assert "MathJax" in dom and re.search(r'class="MathJax', dom), "LaTeX was not typeset by the local MathJax"
    pixels, requests = site["browser"].screenshot(_url(page), site["shots"] / "site_notebook_page.png")
    assert requests == [] and pixels.std() > 10


def test_slide_deck_advances_and_shows_the_figure_full_size(site):
    deck = site["site"] / "slides" / f"{site['first'].stem}.slides.html"
    browser, shots = site["browser"], site["shots"]
    dom, requests = browser.dom(_url(deck, "#/0"))
    assert requests == [], f"the deck asked the network for {requests}"
    assert _remote_resources(dom) == []
    assert re.search(r'class="reveal [^"]*\bready\b', dom), "reveal.js did not start (not loaded from reveal.js/?)"
    first, _ = browser.screenshot(_url(deck, "#/0"), shots / "slides_0.png")
    third, requests = browser.screenshot(_url(deck, "#/2"), shots / "slides_2.png")
    assert requests == []
    assert first.std() > 5 and third.std() > 5, "a blank slide"
    assert np.abs(first.astype(int) - third.astype(int)).mean() > 1, "#/2 shows the same slide as #/0"

    parser = _Sections()
    parser.feed(deck.read_text())
    assert parser.found is not None, "no slide holds the figure"
    h, v = parser.found
    figure, requests = browser.screenshot(_url(deck, f"#/{h}/{v}"), shots / "slides_figure.png")
    assert requests == []
    rgb = figure.astype(int)
    colourful = (rgb.max(axis=2) - rgb.min(axis=2)) > 60
    assert colourful.mean() > 0.45, f"the figure covers {colourful.mean():.0%} of its slide; expected most of it"


def test_the_network_check_sees_a_page_that_fetches_from_a_cdn(site):
    """The checks above are not vacuous: a page with a CDN script is caught by both."""
    bad = site["tmp"] / "cdn_page.html"
    bad.write_text('<!DOCTYPE html><html><head><script src="https://cdn.example.org/lib.js"></script></head>'
                   "<body>remote</body></html>")
    dom, requests = site["browser"].dom(_url(bad))
    assert requests == ["https://cdn.example.org/lib.js"]
    assert _remote_resources(dom) == ["script: https://cdn.example.org/lib.js"]
