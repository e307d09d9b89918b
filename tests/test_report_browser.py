"""The report in a real browser: headless Chromium, network off. The page must render everything
from the file alone: the verdict, the rung table and every chart (laid out, with drawn content).

Needs Debian's chromium (`apt-get install -y chromium`); skipped without it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest

from tunewise.ladder.results import load_results
from tunewise.report import render_report

pytestmark = pytest.mark.browser

FIXTURE = Path(__file__).resolve().parent / "data" / "results_fixture.json"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHARTS = ["chart-break-even", "chart-learning-curve", "chart-loss-curve-1", "chart-forgetting"]

# Appended to a copy of the page (never to the report itself): measures what the browser laid out.
PROBE = """
<script>
(function () {
  var out = {charts: {}};
  document.querySelectorAll("figure[id^=chart-]").forEach(function (f) {
    var svg = f.querySelector("svg"), box = svg ? svg.getBoundingClientRect() : null, content = svg ? svg.getBBox() : null;
    out.charts[f.id] = svg ? {width: box.width, height: box.height, drawn_width: content.width, drawn_height: content.height,
      shapes: svg.querySelectorAll("path, line, use, rect").length, texts: svg.querySelectorAll("text").length} : null;
  });
  var verdict = document.querySelector("#verdict .sentence");
  out.verdict = verdict ? {text: verdict.textContent, height: verdict.getBoundingClientRect().height} : null;
  out.rows = Array.prototype.map.call(document.querySelectorAll("table.rungs tbody tr"), function (tr) {
    return {id: tr.id, height: tr.getBoundingClientRect().height};
  });
  out.ci_bars = Array.prototype.map.call(document.querySelectorAll("svg.ci-bar"), function (s) { return s.getBoundingClientRect().width; });
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess:
    """Headless, and every network path closed: no DNS, a proxy to a dead port, no background fetches."""
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
        "--disable-default-apps", f"--user-data-dir={user_data}", "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--hide-scrollbars", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> dict:
    if CHROMIUM is None:
        pytest.skip("headless Chromium not found; install it with `apt-get install -y chromium`")
    out = tmp_path_factory.mktemp("browser")
    html_path, _ = render_report(load_results(FIXTURE), out)
    html = html_path.read_text(encoding="utf-8")
    probe_page = out / "probe.html"
    probe_page.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dump = chromium("--dump-dom", "--window-size=1280,2400", probe_page.as_uri(), user_data=out / "profile-dom")
    match = re.search(r'<pre id="probe">(.*?)</pre>', dump.stdout, re.S)
    assert match, f"chromium produced no probe output (rc {dump.returncode}): {dump.stderr[-2000:]}"
    shot = out / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,2400", html_path.as_uri(), user_data=out / "profile-shot")
    return {"html": html, "dom": dump.stdout, "probe": json.loads(unescape(match.group(1))), "screenshot": shot}


def test_page_references_no_network_resource(page):
    for source in (page["html"], page["dom"]):
        assert not re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", source, re.I)
        assert not re.search(r"<link\b[^>]*stylesheet", source, re.I)


def test_verdict_is_laid_out(page):
    verdict = page["probe"]["verdict"]
    assert verdict and verdict["height"] > 20
    assert verdict["text"] == load_results(FIXTURE).decision.sentence


def test_rung_table_has_every_rung(page):
    rows = page["probe"]["rows"]
    assert [r["id"] for r in rows] == [f"rung-{r.name}" for r in load_results(FIXTURE).rungs]
    assert all(r["height"] > 20 for r in rows)
    assert len(page["probe"]["ci_bars"]) == len(rows) and all(w > 50 for w in page["probe"]["ci_bars"])


@pytest.mark.parametrize("chart", CHARTS)
def test_every_chart_rendered(page, chart):
    measured = page["probe"]["charts"].get(chart)
    assert measured, f"{chart}: no <svg> in the figure"
    assert measured["width"] > 400 and measured["height"] > 150, measured  # laid out at a readable size
    assert measured["drawn_width"] > 300 and measured["drawn_height"] > 100, measured  # and something drawn in it
    assert measured["shapes"] >= 5 and measured["texts"] >= 4, measured  # lines plus axis labels


def test_screenshot_is_not_blank(page):
    from PIL import Image

    shot = page["screenshot"]
    assert shot.is_file() and shot.stat().st_size > 20_000
    with Image.open(shot) as image:
        assert image.size == (1280, 2400)
        grey = image.convert("L")
        low, high = grey.getextrema()
        assert high - low > 150  # dark text on a light page
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 100  # text, charts and colour, not a flat fill
