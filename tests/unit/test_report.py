"""The HTML pages of `leadflow backtest --html` and `leadflow rules diff --html` (infra/report.py)."""

from __future__ import annotations

import copy
import functools
import random
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from leadflow_infra import report

NASTY = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'


# --------------------------------------------------------------------------- fake results


def backtest_result(leads: int = 800, seed: int = 7) -> dict:
    """A backtest result shaped like the real one, from made-up leads."""
    rng = random.Random(seed)
    scored = []
    for _ in range(leads):
        converted = rng.random() < 0.385
        raw = rng.gauss(62, 20) if converted else rng.expovariate(1 / 20)
        scored.append((max(0.0, round(raw * 2) / 2), converted))
    positives = [s for s, c in scored if c]
    negatives = [s for s, c in scored if not c]
    total_pos = len(positives)

    ordered = sorted(scored, key=lambda item: -item[0])
    gain, running = [{"share": 0.0, "captured": 0.0}], 0
    for i, (_, converted) in enumerate(ordered, 1):
        running += converted
        if i % max(1, leads // 100) == 0 or i == leads:
            gain.append({"share": round(i / leads, 4), "captured": round(running / total_pos, 4)})

    deciles = []
    size = leads // 10
    for d in range(10):
        chunk = ordered[d * size:(d + 1) * size] if d < 9 else ordered[9 * size:]
        won = sum(c for _, c in chunk)
        deciles.append({"decile": 10 - d, "leads": len(chunk), "min_score": min(s for s, _ in chunk),
                        "max_score": max(s for s, _ in chunk), "converted": won, "rate": won / len(chunk)})

    def criteria(threshold: float) -> dict:
        chosen = [c for s, c in scored if s >= threshold]
        won = sum(chosen)
        return {"volume": len(chosen), "share": len(chosen) / leads, "converted": won,
                "precision": won / len(chosen), "recall": won / total_pos}

    wins = sum(1 for p in positives for n in negatives if p > n) + 0.5 * sum(
        1 for p in positives for n in negatives if p == n) if leads <= 2000 else None
    auc = wins / (len(positives) * len(negatives)) if wins is not None else 0.897
    weeks = [{"week": f"2026-W{w}", "start": f"2026-{(w * 7 - 3) // 31 + 1:02d}-{(w * 7 - 3) % 28 + 1:02d}",
              "mql": rng.randint(80, 160), "sql": rng.randint(25, 60)} for w in range(38, 48)]
    return {
        "title": "Backtest of rules 2026.11.3",
        "rules_version": "2026.11.3",
        "as_of": "2026-11-28T00:00:00+00:00",
        "generated_at": "2026-11-28T09:41:12+00:00",
        "outcomes_from": "records",
        "leads": leads, "labelled": leads, "converted": total_pos, "not_converted": len(negatives),
        "unlabelled": 0,
        "label_sources": {"won": total_pos - 40, "lost": len(negatives) - 90, "customer": 40, "rejected": 75,
                          "disqualified": 15, "csv": 0},
        "reject_reasons": {"no_budget": 41, "competitor": 19, "wrong_contact": 15},
        "auc": auc,
        "criteria": {"mql": criteria(40), "sql": criteria(70)},
        "deciles": deciles,
        "weeks": weeks,
        "scores": {"converted": positives, "not_converted": negatives},
        "gain": gain,
    }


def diff_result(leads: int = 600, seed: int = 11) -> dict:
    """A rules diff result shaped like the real one."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(leads):
        before = max(0.0, round(rng.expovariate(1 / 28) / 2.5) * 2.5)
        bump = rng.choice([0, 0, 0, 0, 10, 15, -5]) if before else rng.choice([0, 0, 0, 10])
        pairs.append([before, max(0.0, before + bump)])
    up = sum(1 for b, a in pairs if a > b)
    down = sum(1 for b, a in pairs if a < b)
    return {
        "title": "Rules 2026.11.3 \u2192 2026.12.1",
        "current": {"version": "2026.11.3"}, "proposed": {"version": "2026.12.1"},
        "as_of": "2026-12-01T08:00:00+00:00", "generated_at": "2026-12-01T08:02:31+00:00",
        "leads": leads,
        "rule_changes": ["demo_request points 50 \u2192 65", "lifecycle.mql: score \u2265 40 \u2192 score \u2265 30",
                         "new rule pricing_visits (+10)"],
        "moves": {"lead\u2192mql": 18, "mql\u2192sql": 5, "lead\u2192sql": 1},
        "moved_leads": 24,
        "score": {"up": up, "down": down, "same": leads - up - down},
        "grade": {"up": 3, "down": 4, "same": leads - 7},
        "volume": {"mql": {"before": 40, "after": 58}, "sql": {"before": 9, "after": 15}},
        "below_criteria": {"mql": 3, "sql": 0},
        "alerts": {"announce": False, "alerts": 24, "summary": 1},
        "examples": [
            {"lead_id": "ld_01J9Z8K4", "label": "Acme Corp", "from": "lead", "to": "mql",
             "score_before": 35.0, "score_after": 47.5,
             "rules": [{"rule": "pricing_visits", "before": 0, "after": 10},
                       {"rule": "demo_request", "before": 50, "after": 65}]},
            {"lead_id": "ld_01J9Z8K5", "label": "Globex", "from": "mql", "to": "sql",
             "score_before": 68.0, "score_after": 78.0,
             "rules": [{"rule": "pricing_visits", "before": 0, "after": 10}]},
        ],
        "score_pairs": pairs,
    }


# --------------------------------------------------------------------------- page checks


class Outline(HTMLParser):
    """Headings, svg elements and every attribute of a page, plus the text of each <title>."""

    def __init__(self):
        super().__init__()
        self.headings: list[str] = []
        self.svgs: list[dict] = []
        self.svg_titles: list[str] = []
        self.attributes: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.stack.append(tag)
        self.attributes += [(tag, name, value) for name, value in attrs]
        if tag == "svg":
            self.svgs.append(dict(attrs))

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        self.text.append(data)
        if self.stack and self.stack[-1] in ("h1", "h2"):
            self.headings.append(data.strip())
        if self.stack and self.stack[-1] == "title" and "svg" in self.stack:
            self.svg_titles.append(data)


@functools.lru_cache(maxsize=8)
def outline(page: str) -> Outline:
    """The page parsed (once: the tests ask several questions of the same page)."""
    parser = Outline()
    parser.feed(page)
    parser.close()
    return parser


def text_of(page: str) -> str:
    return re.sub(r"[ \t\r\n]+", " ", "".join(outline(page).text))


def assert_self_contained(page: str) -> None:
    parsed = outline(page)
    for tag, name, value in parsed.attributes:
        if name in ("src", "href", "xlink:href", "action", "poster", "srcset", "data"):
            assert not re.match(r"\s*(https?:|//|ftp:)", value or "", re.IGNORECASE), (tag, name, value)
    assert not re.search(r"""url\(\s*['"]?\s*(https?:|//)""", page, re.IGNORECASE)
    assert "@import" not in page
    assert not re.search(r"""(src|href)\s*=\s*['"]?\s*(https?:|//)""", page, re.IGNORECASE)
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()


def assert_charts_accessible(page: str, count: int) -> None:
    parsed = outline(page)
    assert len(parsed.svgs) == count
    for attrs in parsed.svgs:
        assert attrs.get("role") == "img"
        assert attrs.get("aria-label")
        assert "width" not in attrs and "height" not in attrs  # scales with the page
    assert len(parsed.svg_titles) == count
    assert page.count("<?xml") == 0 and "<!DOCTYPE svg" not in page
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "ids repeat across charts"


# --------------------------------------------------------------------------- backtest


@pytest.fixture(scope="module")
def backtest() -> tuple[dict, str]:
    result = backtest_result()
    return result, report.backtest_page(copy.deepcopy(result))


def test_backtest_page_has_summary_charts_and_tables(backtest):
    result, page = backtest
    parsed = outline(page)
    assert page.startswith("<!DOCTYPE html>")
    assert parsed.headings[:1] == ["Backtest of rules 2026.11.3"]
    for heading in ("Score distribution by outcome", "Cumulative gain", "Conversion rate by score decile",
                    "MQL and SQL volume per week", "Outcomes"):
        assert heading in parsed.headings
    assert_charts_accessible(page, 4)
    for name in ("distribution", "gain", "deciles", "weeks"):
        assert f'id="chart-{name}"' in page
    assert_self_contained(page)

    text = text_of(page)
    sql = result["criteria"]["sql"]
    assert (f"At the SQL criteria {sql['volume']:,} leads ({sql['share'] * 100:.1f}\u00a0%) qualify; "
            f"{sql['precision'] * 100:.0f}\u00a0% of them converted, {sql['recall'] * 100:.0f}\u00a0% of all "
            "conversions.") in text
    assert f"AUC {result['auc']:.3f}" in text
    # the figures behind the charts are in tables too
    top = result["deciles"][0]
    assert f"{top['rate'] * 100:.1f}\u00a0%" in text
    assert "2026-W47" in text and "Rejected by sales" in text and "no_budget" in text
    assert page.count("<table>") >= 7


def test_backtest_page_is_deterministic(backtest):
    result, page = backtest
    assert report.backtest_page(copy.deepcopy(result)) == page


def test_backtest_sentences_use_thousands_separators():
    result = backtest_result(leads=100)
    result.update(leads=9240, labelled=9240, converted=3561, not_converted=5679)
    result["criteria"]["sql"] = {"volume": 1303, "share": 0.141, "converted": 1186, "precision": 0.91,
                                 "recall": 0.333}
    text = text_of(report._backtest_summary(result))
    assert ("At the SQL criteria 1,303 leads (14.1\u00a0%) qualify; 91\u00a0% of them converted, "
            "33\u00a0% of all conversions.") in text
    assert "9,240 leads were scored" in text


def test_backtest_strings_from_the_data_are_escaped():
    result = backtest_result(leads=200)
    result["title"] = NASTY
    result["rules_version"] = NASTY
    result["reject_reasons"] = {NASTY: 3, "</table><h1>x</h1>": 1}
    result["label_sources"] = {NASTY: 4}
    result["weeks"][0]["week"] = NASTY
    result["weeks"][0]["start"] = NASTY  # not a date: the axis shows the week instead
    result["outcomes_from"] = NASTY
    page = report.backtest_page(result)
    assert "<script>" not in page and "<img" not in page and "<h1>x" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert NASTY in text_of(page)  # shown as text
    assert_self_contained(page)


def test_backtest_missing_figures_render_as_a_dash():
    result = backtest_result(leads=200)
    result.update(auc=None, labelled=None, converted=None, unlabelled=None)
    result["criteria"]["sql"] = {"volume": None, "share": None, "converted": None, "precision": None, "recall": None}
    result["criteria"]["mql"].update(precision=None, recall=None)
    result["deciles"][3]["rate"] = None
    result["deciles"][4].update(min_score=None, max_score=None, rate=None)
    result["scores"]["not_converted"] = []  # one outcome only: still drawn
    result["weeks"] = []
    page = report.backtest_page(result)
    text = text_of(page)
    assert '<dt>AUC</dt><dd class="value">\u2014</dd>' in page
    assert "\u2014\u2013\u2014" in text  # the decile without a score range
    assert "At the SQL criteria there is not enough data" in text
    assert_charts_accessible(page, 3)
    assert_self_contained(page)


def test_backtest_with_nothing_to_draw_explains_each_missing_chart():
    result = backtest_result(leads=200)
    result.update(weeks=[], deciles=[], gain=[], scores={"converted": [], "not_converted": []},
                  reject_reasons={}, label_sources={}, auc=None, criteria={})
    page = report.backtest_page(result)
    assert_charts_accessible(page, 0)
    text = text_of(page)
    assert "There are no weekly figures" in text
    assert "Not enough leads with a known outcome to draw a gain curve" in text
    assert "no distribution to compare" in text
    assert "Not enough leads with a known outcome to compare deciles" in text


def test_backtest_tolerates_absent_keys():
    page = report.backtest_page({"title": "Backtest", "leads": 0})
    assert_charts_accessible(page, 0)
    assert "Backtest" in outline(page).headings


def test_many_weeks_are_drawn_as_lines_and_the_table_scrolls():
    weeks = [{"week": f"2026-W{w:02d}", "start": "2026-01-05", "mql": w, "sql": w // 3} for w in range(1, 53)]
    section = report._weeks_section({"weeks": weeks})
    assert section.count("<svg") == 1 and 'class="scroll"' in section
    assert "52 weeks from 2026-W01 to 2026-W52" in section


# --------------------------------------------------------------------------- diff


@pytest.fixture(scope="module")
def diff() -> tuple[dict, str]:
    result = diff_result()
    return result, report.diff_page(copy.deepcopy(result))


def test_diff_page_has_summary_charts_and_tables(diff):
    _, page = diff
    parsed = outline(page)
    assert parsed.headings[0] == "Rules 2026.11.3 \u2192 2026.12.1"
    for heading in ("What changes in the rules", "Moves by stage", "Volume before and after",
                    "Score before and after", "Examples"):
        assert heading in parsed.headings
    assert_charts_accessible(page, 4)
    assert_self_contained(page)
    text = text_of(page)
    assert "24 leads would move forward: 18 lead \u2192 MQL, 5 MQL \u2192 SQL and 1 lead \u2192 SQL." in text
    assert "With announce off, sales gets one summary message instead of 24 alerts." in text
    assert "MQL volume goes from 40 to 58 (+18, +45\u00a0%)" in text
    assert "3 at MQL" in text
    assert "demo_request points 50 \u2192 65" in text
    assert "Acme Corp" in text and "pricing_visits" in text


def test_diff_announce_on():
    result = diff_result(leads=100)
    result["alerts"] = {"announce": True, "alerts": 24, "summary": 0}
    assert "With announce on, sales gets 24 alerts." in text_of(report._diff_summary(result))


def test_diff_strings_from_the_data_are_escaped():
    result = diff_result(leads=100)
    result["rule_changes"] = [NASTY]
    result["examples"][0].update(label=NASTY, lead_id=NASTY)
    result["examples"][0]["rules"][0]["rule"] = NASTY
    result["moves"] = {f"lead\u2192{NASTY}": 3, "lead\u2192$x^{$": 2}  # not TeX either
    result["current"]["version"] = NASTY
    result["proposed"]["version"] = "2026.12 $\\frac{x}$"
    result["title"] = NASTY
    page = report.diff_page(result)
    assert "<script>" not in page and "<img" not in page
    assert text_of(page).count(NASTY) >= 4
    assert "$x^{$" in page and "2026.12 $\\frac{x}$" in page  # in the charts as typed
    assert_self_contained(page)


def test_diff_with_no_moves_and_no_examples():
    result = diff_result(leads=100)
    result.update(moves={}, moved_leads=0, examples=[], rule_changes=[], below_criteria={"mql": 0, "sql": 0},
                  alerts={"announce": False, "alerts": 0, "summary": 0}, score_pairs=[])
    page = report.diff_page(result)
    text = text_of(page)
    assert "No lead would move to another stage." in text
    assert "No lead would move, so there is no example." in text
    assert "Every lead already in a stage still meets its criteria" in text
    assert_charts_accessible(page, 1)  # the volumes


def test_diff_with_missing_figures_and_no_scores():
    result = diff_result(leads=100)
    result.update(score_pairs=[], score=None, grade=None, moved_leads=None, alerts=None, leads=None)
    result["volume"]["sql"] = {"before": None, "after": None}
    result["examples"][0].update(score_before=None, label=None)
    result["examples"][0]["rules"][0]["before"] = None
    page = report.diff_page(result)
    text = text_of(page)
    assert "There are no scores to compare." in text
    assert "24 leads would move forward" in text  # counted from the moves
    assert "\u2014" in text
    assert_charts_accessible(page, 2)
    assert report.diff_page({"title": "x"})  # nothing at all


def test_diff_scatter_caps_the_points_it_draws(monkeypatch):
    monkeypatch.setattr(report, "MAX_POINTS", 400)
    rng = random.Random(3)
    pairs = [(rng.uniform(0, 100), rng.uniform(0, 100)) for _ in range(3_000)]
    cells, left_out = report._scatter_cells(pairs, 0, 100)
    assert len(cells) == 400 and left_out > 0
    assert sum(n for _, _, n, _ in cells) < 3_000
    assert (cells, left_out) == report._scatter_cells(list(pairs), 0, 100)
    section = report._scatter_section(diff_result(leads=50), pairs)
    assert section.count("<svg") == 1
    assert section.count("<use ") <= 400 + 20  # the dots, plus the legends' and the ticks' marks
    assert "The chart draws the 400 busiest dots and leaves out" in text_of(section)


def test_scatter_colours_follow_each_lead_not_the_grid():
    cells, _ = report._scatter_cells([(10.0, 10.01), (10.0, 9.99), (10.0, 10.0)], 0, 100)
    assert sorted(d for _, _, _, d in cells) == [-1, 0, 1]  # one grid cell, three directions


def test_score_bands_are_round_and_cover_every_score():
    scores = [0.0, 3.5, 12.0, 47.5, 88.0, 99.9] * 50 + [1_000.0]
    edges, open_top = report._bin_edges(scores)
    assert open_top  # one far outlier does not stretch the axis
    assert edges[0] == 0 and all(e == round(e) for e in edges)
    counts = report._histogram(scores, edges)
    assert sum(counts) == len(scores)
    assert report._bin_label(edges, len(edges) - 2, open_top).endswith("or more")
    assert report._bin_edges([5.0, 5.0]) == ([5, 6], False)


def test_number_formats():
    assert report._pct(0.141) == "14.1\u00a0%" and report._pct(0.91, 0) == "91\u00a0%"
    assert report._int(1303) == "1,303" and report._int(None) == "\u2014"
    assert report._score(47.5) == "47.5" and report._score(35.0) == "35" and report._score(float("nan")) == "\u2014"
    assert report._signed(-5) == "\u22125" and report._signed(12.5) == "+12.5"
    assert "UTC" in report._when("2026-11-28T00:00:00+00:00") and report._when("soon") == "soon"
    assert "+01:00" in report._when("2026-11-28T00:00:00+01:00")


def test_diff_page_is_deterministic(diff):
    result, page = diff
    assert report.diff_page(copy.deepcopy(result)) == page


# --------------------------------------------------------------------------- files, dependency


def test_write_creates_folders_and_writes_utf8(tmp_path: Path):
    target = tmp_path / "a" / "b" / "report.html"
    report.write(target, "<p>\u2192 \u2014</p>\n")
    assert target.read_bytes() == "<p>\u2192 \u2014</p>\n".encode()
    report.write(str(target), "x")
    assert target.read_text(encoding="utf-8") == "x"


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(report.MissingReportDependency, match=r"pip install 'leadflow\[report\]'"):
        report.backtest_page(backtest_result(leads=50))
    with pytest.raises(ImportError):
        report.diff_page(diff_result(leads=50))
