"""report.html: one self-contained page from the same points as report.md, checked in a real browser.

The page-level tests read the HTML as text. The browser tests render the committed study's report (and the
quick baseline's) in headless Chromium with ``#selftest``: the page's own script counts its plots and point
rows, checks that every plotted point links to a row, sorts a table and writes the result into the DOM,
which ``--dump-dom`` returns. Console messages come from Chromium's log. Without Chromium those tests skip
and say why; ``.ci/run`` installs it, so CI runs them.

Run as a script to check a page and save a screenshot (the README's):
``python tests/test_report_html.py results/studies/cpu-cardinality/report/report.html --screenshot docs/img/report-html.png \
--start fig-cpu-fp32-top1-vs-latency``
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.analysis import reports  # noqa: E402

STUDY = ROOT / "results" / "studies" / "cpu-cardinality"
QUICK = ROOT / "results" / "baselines" / "quick-cpu.csv"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def browser() -> Optional[str]:
    return next((found for name in BROWSERS for found in [shutil.which(name)] if found), None)


def run_browser(page: Path, *args: str, fragment: str = "") -> Tuple[str, List[str]]:
    """(the DOM or stdout, the console messages) of ``page`` in headless Chromium."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([browser(), *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                               "--virtual-time-budget=5000", *args, page.resolve().as_uri() + fragment],
                              capture_output=True, text=True, timeout=120)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def selftest(page: Path) -> Tuple[Dict[str, Any], List[str]]:
    dom, console = run_browser(page, "--dump-dom", fragment="#selftest")
    found = re.search(r'<pre id="selftest">([^<]*)</pre>', dom)
    assert found, f"the page wrote no self-test result; console: {console}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")), console


def screenshot(page: Path, out: Path, start: str = "") -> None:
    """A 1280x1600 screenshot of ``page``; with ``start`` (an element id), of the page from the heading
    before that element on (headless Chromium draws a blank page when asked to scroll to a fragment)."""
    with tempfile.TemporaryDirectory() as folder:
        if start:
            html = page.read_text()
            at = html.index(f'id="{start}"')
            body = html.index(">", html.index("<body")) + 1
            page = Path(folder) / "page.html"
            page.write_text(html[:body] + html[html.rindex("<h", body, at):])
        run_browser(page, f"--screenshot={out.resolve()}", "--window-size=1280,1600")


def _report(tmp: Path, *csvs: Path) -> Tuple[Path, Dict[str, Any]]:
    """Render the report of ``csvs`` into ``tmp``; the page and the facts its points came from."""
    rows, sources = reports.load_results([str(c) for c in csvs])
    text, facts = reports.build_report(rows, sources, str(tmp))
    reports.write_pages(text, facts, sources, str(tmp))
    return tmp / "report.html", {"text": text, **facts}


def _expected(facts: Dict[str, Any]) -> Tuple[int, int]:
    """(Pareto plots, point rows) the page should hold: one plot per frontier with points, one row per point."""
    plots = sum(not fr.points.empty for g in facts["groups"].values() for fr in g["frontiers"].values())
    return plots, sum(len(g["points"]) for g in facts["groups"].values())


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Tuple[Path, Dict[str, Any]]:
    return _report(tmp_path_factory.mktemp("study"), STUDY / "train.csv", STUDY / "speed.csv")


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> Tuple[Path, Dict[str, Any]]:
    return _report(tmp_path_factory.mktemp("quick"), QUICK)


# --------------------------------------------------------------------------- the page as text


def test_report_writes_report_html_beside_report_md(study):
    page, _ = study
    assert (page.parent / "report.md").is_file() and page.read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("which", ["study", "quick"])
def test_the_page_needs_nothing_from_outside_it(which, request):
    html = request.getfixturevalue(which)[0].read_text()
    assert not re.search(r'(src|href)="(https?:)?//', html), "no CDN, no remote file"
    assert "<link" not in html and "<script src" not in html and "<img src=\"http" not in html


@pytest.mark.parametrize("which", ["study", "quick"])
def test_every_plotted_point_links_to_a_row_of_its_point_table(which, request):
    page, facts = request.getfixturevalue(which)
    html = page.read_text()
    links = re.findall(r'<a href="#([^"]+)"><circle', html)
    rows = set(re.findall(r'<tr id="([^"]+)"', html))
    plots, points = _expected(facts)
    assert links and set(links) <= rows and len(rows) == points
    assert html.count('<svg class="pareto"') == plots


def test_the_page_says_every_heading_and_mark_report_md_says(quick):
    page, facts = quick
    html = page.read_text()
    for heading in re.findall(r"^#+ (.+)$", facts["text"], flags=re.M):
        assert f">{heading.replace('`', '')}<" in re.sub(r"</?code>", "", html) or heading in html, heading
    assert "SYNTHETIC" in facts["text"] and "SYNTHETIC" in html  # the quick grid trains on synthetic data
    assert "Failed cells" in html and "Environment" in html


def test_a_hover_title_names_the_variant_and_both_values(study):
    page, facts = study
    fr = next(fr for g in facts["groups"].values() for fr in g["frontiers"].values() if not fr.points.empty)
    title = re.search(r'data-pair="%s".*?<title>([^<]*)</title>' % fr.pair.name, page.read_text(), re.S).group(1)
    lines = title.splitlines()
    assert lines[0] in set(fr.points["label"]) and lines[1].split(":")[0] and "cell: " in title


def test_markdown_inline_text_is_escaped_not_injected():
    from bench.analysis.report_html import inline

    assert str(inline("a <b> `x<y>` **bold** [l](#r)")) == \
        'a &lt;b&gt; <code>x&lt;y&gt;</code> <strong>bold</strong> <a href="#r">l</a>'


# --------------------------------------------------------------------------- in a real browser

needs_browser = pytest.mark.skipif(browser() is None, reason="no Chromium on PATH (apt-get install chromium; "
                                   ".ci/run installs it)")


@needs_browser
@pytest.mark.parametrize("which", ["study", "quick"])
def test_in_chromium_the_page_has_its_plots_and_rows_sorts_and_logs_no_error(which, request, tmp_path):
    page, facts = request.getfixturevalue(which)
    result, console = selftest(page)
    plots, points = _expected(facts)
    assert result["errors"] == [] and console == []
    assert (result["plots"], result["rows"]) == (plots, points) == (result["expected_plots"], result["expected_rows"])
    assert result["broken_links"] == []
    assert result["sort"] and result["sort"]["reordered"] and result["sort"]["ascending"] and \
        result["sort"]["descending"], result["sort"]
    screenshot(page, tmp_path / "shot.png")
    assert (tmp_path / "shot.png").stat().st_size > 10_000


COMMITTED = sorted((ROOT / "results").rglob("report.html"))


def test_every_committed_study_has_its_report_html():
    assert STUDY / "report" / "report.html" in COMMITTED and len(COMMITTED) >= 3


@needs_browser
@pytest.mark.parametrize("page", COMMITTED, ids=[str(p.relative_to(ROOT)) for p in COMMITTED])
def test_each_committed_report_html_passes_its_own_self_test(page):
    result, console = selftest(page)
    assert result["errors"] == [] and console == [] and result["broken_links"] == []
    assert result["plots"] == result["expected_plots"] > 0 and result["rows"] == result["expected_rows"] > 0


@needs_browser
def test_the_self_test_reports_a_page_error_and_the_console_shows_it(tmp_path):
    """Proves the checks above can fail: a page that throws is seen by both the hook and the log."""
    page, _ = _report(tmp_path, QUICK)
    page.write_text(page.read_text().replace('<pre id="selftest"', '<script>undefinedFunction();</script><pre id="selftest"'))
    result, console = selftest(page)
    assert any("undefinedFunction" in e for e in result["errors"]) and console


if __name__ == "__main__":  # check a page by hand and save its screenshot (the README's)
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--start", default="", help="an element id to start the screenshot at, e.g. "
                        "fig-cpu-fp32-top1-vs-latency")
    args = parser.parse_args()
    if browser() is None:
        sys.exit("no Chromium on PATH (apt-get install chromium)")
    outcome, messages = selftest(args.page)
    print(json.dumps(outcome), *messages, sep="\n")
    if args.screenshot:
        screenshot(args.page, args.screenshot, args.start)
        print(f"wrote {args.screenshot}")
    sys.exit(0 if not outcome["errors"] and not messages and not outcome["broken_links"] else 1)
