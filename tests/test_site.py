"""The static leaderboard site: its files, the cells' provenance, and the page in a real browser.

The site is built from the reporting fixture sweep, two runs of ours on `llava_ov_7b` (FastV at
25% on MVBench, a cell four papers report) and the tracked references of the six papers.
Oracles: the papers' CSVs read with the csv module, the fixture's own records, the official
commit of FastVID in its fixture README, and, in headless Chromium (Debian's package, driven by
Playwright), what the rendered page shows.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from reporting_fixtures import ours_record, write_records, write_sweep

from reporting.site import build_site
from scissorbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ROOT / "results" / "papers"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# benchmark columns whose name is the same in the papers' CSVs and on the site
SAME_NAME = ("MVBench", "LongVideoBench", "MLVU", "VideoMME", "EgoSchema", "NextQA",
             "PerceptionTest")


class _Page(HTMLParser):
    """Rows per section, cells' provenance, and every src/href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.section: tuple[str, str] | None = None
        self.rows: dict[tuple[str, str], list[dict]] = {}
        self.links: list[str] = []
        self.cells: list[dict] = []
        self._row: dict | None = None
        self._cell: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name in ("src", "href"):
            if name in a:
                self.links.append(a[name])
        if tag == "section" and "data-benchmark" in a:
            self.section = (a["data-backbone"], a["data-benchmark"])
            self.rows[self.section] = []
        if tag == "tr" and "data-method" in a and self.section:
            self._row = {"method": a["data-method"], "source": a["data-source"], "text": ""}
            self.rows[self.section].append(self._row)
        if tag == "td" and "data-provenance" in a:
            self._cell = {"provenance": a["data-provenance"], "text": "",
                          "section": self.section}
            self.cells.append(self._cell)

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None
        if tag == "td":
            self._cell = None

    def handle_data(self, data):
        if self._row is not None:
            self._row["text"] += data
        if self._cell is not None:
            self._cell["text"] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> Path:
    runs = write_sweep(tmp_path_factory.mktemp("site") / "runs")
    return write_records(runs, [
        ours_record("llava_ov_7b", "none", None, "mvbench", "mvbench_accuracy,none", 60.0),
        ours_record("llava_ov_7b", "fastv", 0.25, "mvbench", "mvbench_accuracy,none", 57.0)])


@pytest.fixture(scope="module")
def site(ours, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "out"
    build = build_site([ours], out)
    return build, _parse(build.index)


def test_every_paper_cell_is_a_row_of_its_backbone_and_benchmark(site):
    _, page = site
    missing = []
    for csv_path in sorted(PAPERS.glob("*.csv")):
        with csv_path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row["benchmark"] not in SAME_NAME:
                    continue
                rows = page.rows.get((row["base_model"], row["benchmark"]), [])
                score = f"{float(row['score']):.2f}"
                label = "full model" if (row.get("note") or "").startswith("dense model") or \
                    row["method"].endswith("(full)") else row["method"]
                if not any(label in r["text"] and score in r["text"] for r in rows):
                    missing.append((csv_path.name, row["table"], row["method"],
                                    row["retention_pct"], row["benchmark"]))
    assert not missing, missing[:5]


def test_every_method_of_ours_is_a_row(site):
    _, page = site
    ours = {r["method"] for rows in page.rows.values() for r in rows if r["source"] == "ours"}
    # the fixture sweep's methods (visionzip only failed: no score, no row) and llava_ov_7b's
    assert ours == {"none", "scc", "fastv", "pllava"}
    board = page.rows[("LLaVA-OV-7B", "MVBench")]
    assert {r["source"] for r in board} == {"ours", "paper"}


def test_cells_say_where_they_came_from(site, ours):
    _, page = site
    fastv = ours_record("llava_ov_7b", "fastv", 0.25, "mvbench", "mvbench_accuracy,none", 57.0)
    cell = next(c for c in page.cells if c["section"] == ("LLaVA-OV-7B", "MVBench")
                and c["provenance"].startswith("ours:") and "57.00" in c["text"])
    assert fastv["key"] in cell["provenance"]
    for fact in ("lock 0123abcd", "lmms-eval 0.7.3", "torch 2.14.1"):
        assert fact in cell["provenance"]
    paper = next(c for c in page.cells if c["section"] == ("LLaVA-OV-7B", "MVBench")
                 and "table table1_llava_ov_7b" in c["provenance"] and "54.70" in c["text"])
    assert paper["provenance"].startswith("paper: FastVID")
    assert "printed as 'FastV'" in paper["provenance"] and "100%/25%" in paper["provenance"]
    assert all(c["provenance"].startswith(("ours:", "paper:")) for c in page.cells)


def test_the_site_needs_no_network(site):
    build, page = site
    root = build.index.parent
    pages = [build.index, *build.pages]
    for path in pages:
        for link in _parse(path).links:
            assert not re.match(r"^[a-z]+://|^//", link), (path.name, link)
            assert (path.parent / link.split("#")[0]).is_file(), (path.name, link)
    data = (root / "data.js").read_text()
    assert data.startswith("window.SCISSORBENCH = ")
    charts = json.loads(data.removeprefix("window.SCISSORBENCH = ").rstrip().rstrip(";"))
    assert len(charts["charts"]) == build.sections
    assert (root / "assets" / "plotly.min.js").stat().st_size > 1_000_000


def test_method_pages_give_the_official_code_and_fidelity(site):
    build, _ = site
    root = build.index.parent
    fixture = (ROOT / "tests" / "fixtures" / "fastvid" / "README.md").read_text()
    commit = re.search(r"\b[0-9a-f]{40}\b", fixture).group(0)
    page = (root / "methods" / "fastvid.html").read_text()
    assert commit in page and "official" in page and "fastvid_retention_ratio" in page
    assert "arXiv:2503.11187" in page  # the paper of results/papers/fastvid_arxiv2503.11187.csv
    flashvid = (root / "methods" / "FlashVID.html").read_text()
    assert "Not in the harness" in flashvid and "FlashVID table1_main" in flashvid


def test_leaderboard_command(ours, tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["leaderboard", f"results_dir={ours}", f"output_dir={out}"]) == 0
    assert "file://" in capsys.readouterr().out and (out / "index.html").is_file()
    assert main(["leaderboard", f"output_dir={out}"]) == 2
    assert "missing required value: results_dir" in capsys.readouterr().err
    assert main(["leaderboard", f"results_dir={tmp_path / 'nope'}"]) == 2


# --- in a real browser ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail("Chromium not found: `make test` installs Debian's chromium package "
                    "(apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield chromium
        chromium.close()


def _not_blank(path: Path) -> None:
    from PIL import Image

    image = Image.open(path).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, f"{path.name}: {len(colours)} colours, looks blank"
    white = sum(n for n, c in colours if min(c) > 245)
    assert white < 0.97 * image.width * image.height, f"{path.name}: almost all white"


def _visible_rows(page) -> list[dict]:
    """The ranking rows the page shows (sections and rows a filter hid are not shown)."""
    return page.eval_on_selector_all(
        "section.board tr.row", "rows => rows.filter(r => r.offsetParent !== null).map(r => ({"
        "method: r.dataset.method, section: r.closest('section') && "
        "r.closest('section').dataset.backbone}))")


def test_the_page_in_chromium(site, browser, tmp_path):
    build, parsed = site
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors, requests = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: requests.append(r.url))
    page.goto(build.index.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    methods = {r["method"] for rows in parsed.rows.values() for r in rows}
    for method in methods:  # every method row is in the rendered page
        assert page.locator(f'tr[data-method="{method}"]').count() > 0, method
    page.wait_for_selector(".chart .main-svg", timeout=15_000)  # Plotly drew the first curves
    shot = tmp_path / "index.png"
    page.screenshot(path=str(shot))
    _not_blank(shot)

    everything = _visible_rows(page)
    page.select_option("#f-backbone", "LLaVA-OV-7B")
    chosen = _visible_rows(page)
    assert 0 < len(chosen) < len(everything)
    assert {r["section"] for r in chosen} == {"LLaVA-OV-7B"}
    page.select_option("#f-retention", "25")
    cells = page.eval_on_selector_all(
        "section.board td[data-retention]",
        "cs => cs.filter(c => c.offsetParent !== null).map(c => c.dataset.retention)")
    assert cells and set(cells) <= {"25", "100"}
    page.select_option("#f-source", "ours")
    ours = _visible_rows(page)
    assert ours and all(r["method"] in {"none", "fastv"} for r in ours)

    page.click("section.board:not(.hidden) tr.row:not(.hidden) td.cell:not(.hidden) >> nth=0")
    assert page.locator("#provenance").is_visible()
    assert page.inner_text("#provenance-text").startswith(("ours:", "paper:"))
    page.screenshot(path=str(tmp_path / "filtered.png"))
    _not_blank(tmp_path / "filtered.png")

    page.click('nav.methods a:text-is("fastvid")')
    page.wait_for_selector("h1:text-is('fastvid')")
    page.screenshot(path=str(tmp_path / "method.png"))
    _not_blank(tmp_path / "method.png")
    assert not errors, errors
    assert all(url.startswith("file://") for url in requests), \
        [u for u in requests if not u.startswith("file://")]
