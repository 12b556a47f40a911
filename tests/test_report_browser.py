"""The report of the demo run, loaded in headless Chromium through the DevTools protocol.

Chromium is driven over `--remote-debugging-pipe` (JSON messages on file
descriptors 3 and 4), so no websocket library and no browser download is needed.
Skipped when /usr/bin/chromium is absent, except under CI=true, where it fails.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("CURATE_CHROMIUM", "/usr/bin/chromium")
SECTIONS = ["funnel", "mix", "model", "duplicates", "histograms", "examples", "run-facts"]


def require_chromium() -> str:
    if Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    msg = (f"{CHROMIUM} is absent: install Debian's chromium package "
           "(apt-get install -y chromium) to run the browser checks of the report")
    if os.environ.get("CI") == "true":
        pytest.fail(msg + "; CI=true requires it")
    pytest.skip(msg)


class Chromium:
    """A headless Chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, binary: str, width: int = 1280, height: int = 1800) -> None:
        self._profile = tempfile.mkdtemp(prefix="curate-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds() -> None:  # Chromium reads commands on fd 3 and writes on fd 4
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--disable-default-apps", "--hide-scrollbars",
             f"--user-data-dir={self._profile}", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=wire_fds, close_fds=False,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.call(domain, session=True)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                  session=True)

    def _recv(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise EOFError("Chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: bool = False,
             timeout: float = 30) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._recv(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def load(self, url: str, timeout: float = 30) -> None:
        self.call("Page.navigate", {"url": url}, session=True)
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._recv(deadline))

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                        session=True)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"])
        return res["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"},
                                          session=True)["data"])

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions and failed loads seen so far."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error",
                                                                                   "warning",
                                                                                   "assert"):
                out.append(f"console.{p['type']}: " + " ".join(
                    str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif e.get("method") == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(p.get("exceptionDetails"))[:500])
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] in ("error",
                                                                                "warning"):
                out.append(f"log.{p['entry']['level']}: {p['entry'].get('text')}")
        return out

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (OSError, EOFError, TimeoutError, RuntimeError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo run (plus dedup while the demo does not run it) and its report."""
    from curate.report import build_report
    from tests.report_support import demo_run, shared

    root = shared(tmp_path_factory, "demo-run", demo_run)
    return build_report([root], tmp_path_factory.mktemp("report") / "report.html")


@pytest.fixture(scope="module")
def page(request: pytest.FixtureRequest):
    binary = require_chromium()  # before the demo run is built, so a skip is quick
    report: Path = request.getfixturevalue("demo_report")
    browser = Chromium(binary)
    try:
        browser.load(report.resolve().as_uri())
        yield browser
    finally:
        browser.close()


def test_report_loads_without_console_errors(page: Chromium) -> None:
    assert page.evaluate("document.body.getAttribute('data-ready')") == "yes", \
        "the page's script did not run to the end"
    assert page.problems() == []


def test_every_section_is_present_and_filled(page: Chromium) -> None:
    info = page.evaluate("""JSON.stringify(Array.from(document.querySelectorAll('section')).map(
        s => ({id: s.id, h2: s.querySelector('h2').textContent,
               text: s.textContent.length, svgs: s.querySelectorAll('svg').length,
               imgs: s.querySelectorAll('img').length})))""")
    sections = {s["id"]: s for s in json.loads(info)}
    assert list(sections) == SECTIONS
    assert sections["funnel"]["svgs"] >= 2  # per stage and per source
    assert sections["histograms"]["svgs"] >= 2
    assert sections["duplicates"]["imgs"] >= 2  # a survivor and its copy, side by side
    assert sections["examples"]["imgs"] >= 1
    assert all(s["text"] > 200 for s in sections.values())
    assert page.evaluate("document.querySelectorAll('.cluster .survivor').length") >= 1
    assert "Hamming" in page.evaluate("document.getElementById('duplicates').textContent")


def test_every_image_decodes_in_the_browser(page: Chromium) -> None:
    broken = page.evaluate("Array.from(document.images).filter(i => !i.complete || "
                           "i.naturalWidth === 0).length")
    assert page.evaluate("document.images.length") > 0
    assert broken == 0


def test_page_makes_no_network_requests(demo_report: Path) -> None:
    text = demo_report.read_text()
    for needle in ("http://", "https://", "//cdn", "<link ", " src=\"http"):
        hits = [i for i in range(len(text)) if text.startswith(needle, i)]
        allowed = [i for i in hits if text.startswith("http://www.w3.org/2000/svg", i)]
        assert hits == allowed, needle


def test_reason_filter_and_sorting_work(page: Chromium) -> None:
    groups = page.evaluate("document.querySelectorAll('.reason-group').length")
    assert groups >= 3
    hidden = page.evaluate("""(() => {
        const f = document.getElementById('reason-filter');
        f.value = f.options[1].value; f.dispatchEvent(new Event('change'));
        const n = document.querySelectorAll('.reason-group.hidden').length;
        f.value = ''; f.dispatchEvent(new Event('change'));
        return n; })()""")
    assert hidden == groups - 1
    order = page.evaluate("""(() => {
        const t = document.querySelector('#funnel table.sortable');
        t.querySelectorAll('th')[2].click();
        return Array.from(t.tBodies[0].rows).map(r => +r.cells[2].textContent); })()""")
    assert order == sorted(order)
    assert page.problems() == []


def test_screenshot_is_not_blank(page: Chromium, tmp_path: Path) -> None:
    from PIL import Image, ImageStat

    png = page.screenshot()
    (tmp_path / "report.png").write_bytes(png)
    im = Image.open(io.BytesIO(png)).convert("L")
    assert im.size == (1280, 1800)
    stat = ImageStat.Stat(im)
    assert stat.stddev[0] > 20, f"a flat screenshot (stddev {stat.stddev[0]:.1f})"
    assert len(im.getcolors(1 << 16) or range(1 << 16)) > 50  # text, charts and photos
