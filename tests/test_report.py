"""The report: rendered from results.json alone; content, escaping, no network, omitted sections, CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from markupsafe import escape

from tunewise.cli import cli
from tunewise.ladder.results import (
    Decision,
    Results,
    RungResult,
    Score,
    TrainingSummary,
    load_results,
    save_results,
)
from tunewise.report import render_report
from tunewise.report.charts import evaluate_fit
from tunewise.report.render import (
    agreement_kind,
    fmt_approx,
    fmt_latency,
    fmt_money,
    fmt_p,
    fmt_tokens,
    monthly_cost,
    score_decimals,
)

FIXTURE = Path(__file__).resolve().parent / "data" / "results_fixture.json"
EXTERNAL = re.compile(r"""(?:src|href|xlink:href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


@pytest.fixture(scope="module")
def results() -> Results:
    return load_results(FIXTURE)


@pytest.fixture(scope="module")
def rendered(results, tmp_path_factory) -> tuple[str, str, Path]:
    out = tmp_path_factory.mktemp("report")
    html_path, md_path = render_report(results, out)
    return html_path.read_text(encoding="utf-8"), md_path.read_text(encoding="utf-8"), out


def html_of(text: str) -> str:
    """How autoescaped text appears in the page."""
    return str(escape(text))


def row_html(html: str, name: str) -> str:
    match = re.search(rf'<tr id="rung-{re.escape(name)}".*?</tr>', html, re.S)
    assert match, f"no table row for rung {name}"
    return match.group(0)


def figure_html(html: str, chart_id: str) -> str:
    match = re.search(rf'<figure id="{chart_id}".*?</figure>', html, re.S)
    assert match, f"no figure {chart_id}"
    return match.group(0)


def minimal_results(**overrides) -> Results:
    """A prompt-only run: no fine-tuning, no audit, one skipped and one failed rung."""
    score = Score(value=0.71, ci_low=0.65, ci_high=0.77, n=200)
    fields = dict(
        run_id="intent-1",
        task="intent",
        created="2025-02-01T10:00:00+00:00",
        model="embedded",
        metric="accuracy",
        target=0.85,
        eval_examples=200,
        train_examples=493,
        calls_per_month=200_000,
        horizon_months=12,
        rungs=[
            RungResult(name="zero_shot", title="Zero-shot", score=score, cost_per_1k=0.012, monthly_cost=2.4, meets_target=False),
            RungResult(name="rag", title="RAG", status="skipped", note="the task has no corpus; add `corpus:` to run RAG"),
            RungResult(name="few_shot", title="Few-shot", status="failed", note="CUDA out of memory at batch 3"),
        ],
        decision=Decision(rung=None, sentence="No rung reaches the 0.85 target; the best is zero-shot at 0.71.", reasons=[]),
    )
    fields.update(overrides)
    return Results(**fields)


# --- formatting ---------------------------------------------------------------------------------


# fmt_money lives in tunewise.cost.money and is tested in test_money.py.


@pytest.mark.parametrize("p, expected", [(0.0001, "p<0.001"), (0.003, "p=0.003"), (0.0412, "p=0.041"), (0.41, "p=0.41"), (None, "—")])
def test_p_values(p, expected):
    assert fmt_p(p) == expected


@pytest.mark.parametrize(
    "fn, args, expected",
    [
        (fmt_latency, (0.18, 0.31), "180 / 310 ms"),
        (fmt_latency, (0.91, 1.37), "0.91 / 1.37 s"),
        (fmt_latency, (None, None), "—"),
        (fmt_tokens, (841.6,), "842"),
        (fmt_tokens, (9.43,), "9.4"),
        (fmt_tokens, (52.0,), "52"),
        (fmt_approx, (751.4,), "750"),
        (fmt_approx, (2816.3,), "2,800"),
        (fmt_approx, (103627, 3), "104,000"),
        (fmt_approx, (3.14159,), "3.1"),
        (score_decimals, ([0.11, 0.2],), 2),
        (score_decimals, ([0.071],), 3),
        (score_decimals, ([0.004],), 4),
    ],
)
def test_number_formats(fn, args, expected):
    assert fn(*args) == expected


@pytest.mark.parametrize(
    "formula, params, n, expected",
    [
        ("a - b * n ** -c", {"a": 0.8, "b": 2.0, "c": 0.5}, [100, 400], [0.6, 0.7]),
        ("score = a - b*n^-c", {"a": 0.8, "b": 2.0, "c": 0.5}, [100], [0.6]),
        ("a + b * log(x)", {"a": 0.1, "b": 0.1}, [1.0], [0.1]),
        ("a", {"a": 0.5}, [10, 20], [0.5, 0.5]),
    ],
)
def test_fit_formula_is_evaluated(formula, params, n, expected):
    assert evaluate_fit(formula, params, n).round(6).tolist() == expected


@pytest.mark.parametrize(
    "formula",
    ["__import__('os').system('true')", "a.__class__", "open('x')", "a - unknown * n", "a - (", "[a, b]"],
)
def test_fit_formula_rejects_anything_but_arithmetic(formula):
    assert evaluate_fit(formula, {"a": 1.0, "b": 2.0}, [1, 2]) is None


@pytest.mark.parametrize(
    "text, recorded, kind",
    [
        # results.json written before Decision.agreement_kind: guessed from the sentence
        ("Measurement agrees with the rules.", None, "agree"),
        ("Measurement disagrees with rule format-few-shot.", None, "disagree"),
        ("The rules said LoRA; the measurement differs: RAG wins.", None, "disagree"),
        ("Measurement and the framework disagree: the rules suggest fine_tune", None, "disagree"),
        ("Measurement and the framework agree: RAG.", None, "agree"),
        ("The framework recommends router, which the ladder does not measure directly.", None, "unmeasured"),
        (None, None, "agree"),
        # newer runs record the kind: it wins over the wording
        ("The rules and the measurement differ only in wording.", "agree", "agree"),
        ("Measurement and the framework agree: RAG.", "disagree", "disagree"),
        ("Measurement and the framework disagree.", "unmeasured", "unmeasured"),
    ],
)
def test_agreement_kind(text, recorded, kind):
    decision = Decision(rung="rag", sentence="Use RAG.", reasons=[], agreement=text, agreement_kind=recorded)
    assert agreement_kind(decision) == kind


def test_agreement_kind_without_a_decision():
    assert agreement_kind(None) == "agree"


def test_break_even_volume_is_where_the_monthly_costs_cross(results):
    """The chart's formula (per call x calls + upfront / horizon) must agree with the break-even list."""
    crossed = [be for be in results.break_even if be.calls_per_month]
    assert crossed
    for be in crossed:
        a, b = results.rung(be.cheaper_upfront), results.rung(be.cheaper_per_call)
        at = be.calls_per_month
        assert monthly_cost(a, at, results.horizon_months) == pytest.approx(monthly_cost(b, at, results.horizon_months), rel=1e-3)
        assert monthly_cost(b, at * 2, results.horizon_months) < monthly_cost(a, at * 2, results.horizon_months)


# --- the HTML page ------------------------------------------------------------------------------


def test_verdict_comes_first_with_reasons_rules_and_disagreement(results, rendered):
    html = rendered[0]
    d = results.decision
    sentence = html.index(html_of(d.sentence))
    assert sentence < html.index('<table class="rungs">')
    for reason in d.reasons:
        assert html_of(reason) in html
    for rule in d.advisor_rules:
        assert html_of(rule) in html
    assert f'<span class="approach">{d.advisor_approach}</span>' in html
    assert '<p class="agreement disagree"><strong>⚠ Rules vs measurement:</strong>' in html
    assert html_of(d.agreement) in html


@pytest.mark.parametrize(
    "kind, css, label",
    [
        ("agree", "agreement agree", "Rules vs measurement:"),
        ("disagree", "agreement disagree", "⚠ Rules vs measurement:"),
        ("unmeasured", "agreement unmeasured", "Rules vs measurement:"),
    ],
)
def test_agreement_is_styled_by_its_recorded_kind(tmp_path, kind, css, label):
    sentence = "The framework recommends router, which the ladder does not measure directly."
    decision = Decision(rung="zero_shot", sentence="Use Zero-shot.", reasons=[], agreement=sentence, agreement_kind=kind)
    html_path, md_path = render_report(minimal_results(decision=decision), tmp_path)
    html, md = html_path.read_text(encoding="utf-8"), md_path.read_text(encoding="utf-8")
    assert f'<p class="{css}"><strong>{label}</strong>{html_of(sentence)}</p>' in html
    assert f"> {'⚠ ' if kind == 'disagree' else ''}**Rules vs measurement:** " in md
    # "unmeasured" has a neutral style of its own: neither the green of agree nor the warning of disagree.
    assert re.search(r"\.agreement\.unmeasured \{[^}]*background: var\(--soft\)", html)


def test_every_rung_row_shows_score_ci_significance_and_costs(results, rendered):
    html = rendered[0]
    decimals = score_decimals([r.score.ci_high - r.score.ci_low for r in results.rungs])
    best = max(results.rungs, key=lambda r: r.score.value)
    for r in results.rungs:
        row = row_html(html, r.name)
        assert html_of(r.title) in row
        assert f"<b>{r.score.value:.{decimals}f}</b>" in row
        assert f"{r.score.ci_low:.{decimals}f}–{r.score.ci_high:.{decimals}f}" in row
        assert 'class="ci-bar"' in row
        for money in (r.cost_per_1k, r.monthly_cost, r.upfront_cost, r.horizon_cost):
            assert f">{fmt_money(money)}<" in row
        assert fmt_latency(r.latency_p50_s, r.latency_p95_s) in row
        assert f"{fmt_tokens(r.prompt_tokens)} / {fmt_tokens(r.output_tokens)}" in row
        assert (">yes<" if r.meets_target else ">no<") in row
        if r.name == best.name:
            assert ">best<" in row
        elif r.significantly_worse_than_best:
            assert f"worse ({html_of(fmt_p(r.p_value_vs_best))})" in row
        else:
            assert f"not significantly worse ({fmt_p(r.p_value_vs_best)})" in row
    assert row_html(html, "rag").startswith('<tr id="rung-rag" class="chosen"')
    assert html.count('class="chosen"') == 1


def test_break_even_chart_marks_crossings_and_volume(results, rendered):
    html = rendered[0]
    figure = figure_html(html, "chart-break-even")
    assert "<svg" in figure and figure.count("<path") > 10
    assert f"your volume: {results.calls_per_month:,}/month" in figure
    for be in results.break_even:
        if be.calls_per_month:
            assert f"{fmt_approx(be.calls_per_month)}/mo" in figure  # the crossing's label
            assert f"above about {fmt_approx(be.calls_per_month)} calls/month" in html
        else:
            assert f"{html_of(results.rung(be.cheaper_per_call).title)} never costs less than" in html
    for r in results.rungs:  # one legend entry per rung
        assert html_of(r.title) in figure


def test_learning_curve_shows_examples_needed(results, rendered):
    html = rendered[0]
    curve = results.learning_curve
    figure = figure_html(html, "chart-learning-curve")
    assert figure.count("<path") > 5
    assert f"about {fmt_approx(curve.examples_needed, 3)}" in html
    assert f"≈{fmt_approx(curve.examples_needed, 3)} examples" in figure
    assert html_of(curve.verdict) in html


def test_training_section_has_loss_curves_and_overfitting_warning(results, rendered):
    html = rendered[0]
    training = results.rung("lora").training
    assert '<p class="callout warn"><strong>Overfitting:</strong> ' + html_of(training.overfitting_warning) in html
    figure = figure_html(html, "chart-loss-curve-1")
    assert "training loss" in figure and "validation loss" in figure
    assert f"kept: epoch {training.best_epoch:g}" in figure
    # lora and lora_rag share one adapter: one training section names both
    assert "<h3>LoRA (r=16), LoRA + RAG</h3>" in html
    assert 'id="chart-loss-curve-2"' not in html


def test_forgetting_check(results, rendered):
    html = rendered[0]
    forgetting = results.forgetting
    assert html_of(forgetting.verdict) in html
    for probe in forgetting.probes:
        assert f"<td>{probe.name}</td>" in html
        assert f"{probe.delta:+.3f}" in html
    assert figure_html(html, "chart-forgetting").count("<path") > 3


def test_audit_summary_highlights_counts_and_renders_every_key(results, rendered):
    html = rendered[0]
    section = html[html.index('<section id="audit">') : html.index('<section id="errors">')]
    assert f">{results.audit['verdict']}</span>" in section
    assert '<span class="badge good">0 errors</span>' in section
    assert '<span class="badge warn">3 warnings</span>' in section
    for problem in results.audit["problems"]:
        assert html_of(problem["message"]) in section
    assert "<dt>exact duplicates</dt><dd>14</dd>" in section
    assert "<dt>p95</dt><dd>63</dd>" in section


def test_audit_in_the_auditors_own_shape(tmp_path):
    """tunewise.data.audit's summary(): counts, nested token stats, None values, no verdict."""
    summary = {
        "ok": True, "formats": {"train": "chat", "eval": "chat"}, "train_examples": 493, "eval_examples": 200,
        "errors": 0, "warnings": 2, "duplicates": 4, "labels": None,
        "tokens": {"prompt": {"p50": 38, "p95": 61, "max": 90}, "answer": {"p50": 3, "p95": 4, "max": 6}},
    }
    html = render_report(minimal_results(audit=summary), tmp_path)[0].read_text()
    section = html[html.index('<section id="audit">') : html.index('<section id="errors">')]
    assert '<span class="badge good">0 errors</span>' in section and '<span class="badge warn">2 warnings</span>' in section
    assert "<dt>train examples</dt><dd>493</dd>" in section and "<dt>labels</dt><dd>—</dd>" in section
    assert "<dt>p95</dt><dd>61</dd>" in section and "<dt>ok</dt><dd>yes</dd>" in section


def test_error_browser_shows_gold_and_every_answer(results, rendered):
    html = rendered[0]
    for d in results.disagreements:
        match = re.search(rf'<details class="example" id="example-{d.index}">.*?</details>', html, re.S)
        assert match, d.index
        block = match.group(0)
        assert html_of(d.gold) in block
        for rung, answer in d.answers.items():
            assert html_of(answer) in block
            assert f'{d.scores[rung]:.2f}' in block


def test_footer_says_how_to_reproduce(results, rendered):
    html, _, out = rendered
    footer = html[html.index("<footer>") :]
    for text in (results.run_id, results.model, results.metric, results.created, f"schema version {results.schema_version}"):
        assert html_of(text) in footer
    assert "<code>tunewise report " in footer


def test_page_references_nothing_on_the_network(rendered):
    html = rendered[0]
    assert not EXTERNAL.findall(html)
    assert not re.search(r"<link\b", html, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?https?:", html, re.I)
    assert not re.search(r"<script[^>]+src=", html, re.I)
    assert "<style>" in html  # styles are inline


def test_page_has_print_styles(rendered):
    assert "@media print" in rendered[0]


def test_injected_markup_is_escaped(results, tmp_path):
    evil = "<script>alert(1)</script>"
    data = results.model_copy(deep=True)
    data.disagreements[0].answers["rag"] = evil
    data.rungs[0].title = "<b>zero</b> | shot"
    data.decision.reasons.append(evil)
    data.audit["notes"] = {"<img src=x onerror=alert(2)>": evil}
    html_path, md_path = render_report(data, tmp_path)
    html, md = html_path.read_text(), md_path.read_text()
    assert evil not in html and "<b>zero</b>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;zero&lt;/b&gt;" in html
    assert len(re.findall(r"<script>", html)) == 1  # only the page's own filter script
    assert evil not in md and "&lt;script&gt;" in md
    assert r"&lt;b&gt;zero&lt;/b&gt; \| shot" in md  # a pipe in a table cell is escaped


def test_rendering_is_deterministic(results, tmp_path):
    first = render_report(results, tmp_path / "a")[0].read_text()
    second = render_report(results, tmp_path / "a")[0].read_text()
    assert first == second
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["report.html", "report.md"]  # no temp files left


def test_sections_without_data_say_why(tmp_path):
    html_path, md_path = render_report(minimal_results(), tmp_path)
    html, md = html_path.read_text(), md_path.read_text()
    for absent in ('id="chart-learning-curve"', 'id="chart-forgetting"', 'id="chart-loss-curve', "Overfitting:", 'id="example-'):
        assert absent not in html
    for section in ("learning-curve", "training", "forgetting"):
        assert f'<section id="{section}">' not in html and f'href="#{section}"' not in html
    assert html.count("No fine-tuning rung was run") == 1  # one line, not one per absent section
    assert '<section id="fine-tuning">' in html
    assert "No data audit was recorded for this run." in html
    assert "No eval examples where the rungs disagree were recorded." in html
    assert 'class="verdict none"' in html  # nothing met the target
    assert 'id="chart-break-even"' in html  # one priced rung still gets its cost line
    assert "No pair of rungs trades a one-off cost" in html
    skipped, failed = row_html(html, "rag"), row_html(html, "few_shot")
    assert "the task has no corpus; add `corpus:` to run RAG" in skipped and '<span class="tag skipped">skipped</span>' in skipped
    assert "CUDA out of memory at batch 3" in failed and '<span class="tag failed">failed</span>' in failed
    assert md.count("No fine-tuning rung was run, so there is no learning curve, no loss curve and no forgetting check.") == 1
    assert "## Learning curve" not in md and "## Forgetting check" not in md
    assert "| RAG | skipped: the task has no corpus; add `corpus:` to run RAG |" in md
    assert "## Training" not in md


def test_fine_tuning_without_curve_or_forgetting_says_so(tmp_path):
    lora = RungResult(
        name="lora", title="LoRA", finetuned=True, upfront_cost=4.5, cost_per_1k=0.02,
        score=Score(value=0.9, ci_low=0.86, ci_high=0.94, n=200),
        training=TrainingSummary(
            method="lora", train_examples=440, val_examples=49, epochs_run=2, train_tokens=52_000,
            tokens_per_s=900.0, wall_s=61.0, device="cpu", bf16=False,
        ),
    )
    data = minimal_results()
    data.rungs.append(lora)
    html = render_report(data, tmp_path)[0].read_text()
    assert "No learning curve was measured in this run" in html
    assert "The forgetting check was not run." in html
    assert "No loss curve was recorded." in html and "<dd>440 train / 49 validation</dd>" in html
    assert '<section id="fine-tuning">' not in html


def test_free_rung_stays_in_the_break_even_legend(tmp_path):
    data = minimal_results()
    data.rungs[0].cost_per_1k = 0.0  # a local model at no price
    figure = figure_html(render_report(data, tmp_path)[0].read_text(), "chart-break-even")
    assert "Zero-shot: $0, not drawn" in figure


def test_empty_run_renders(tmp_path):
    html = render_report(minimal_results(rungs=[], decision=None), tmp_path)[0].read_text()
    assert "No rungs were run." in html and "No decision was recorded for this run." in html
    assert 'id="chart-break-even"' not in html and "No cost figures were recorded" in html


# --- Markdown -----------------------------------------------------------------------------------


def test_markdown_has_verdict_table_and_links(results, rendered):
    md = rendered[1]
    assert f"**Verdict: {results.decision.sentence}**" in md
    assert "| Rung | token_f1 (95% CI) | vs best | Meets target |" in md
    decimals = score_decimals([r.score.ci_high - r.score.ci_low for r in results.rungs])
    for r in results.rungs:
        title = f"**{r.title}** (chosen)" if r.name == results.decision.rung else r.title
        line = next(line for line in md.splitlines() if line.startswith(f"| {title} |"))
        assert f"{r.score.value:.{decimals}f} ({r.score.ci_low:.{decimals}f}–{r.score.ci_high:.{decimals}f})" in line
        assert f"| {fmt_money(r.monthly_cost)} |" in line
        assert f"[{r.name} predictions]({r.predictions_file})" in md
    assert "[report.html](report.html)" in md
    assert f"about {fmt_approx(results.learning_curve.examples_needed, 3)}" in md
    assert results.forgetting.verdict in md
    assert "> **Overfitting:**" in md
    assert "> ⚠ **Rules vs measurement:**" in md
    assert "above about 750 calls/month" in md
    assert "- train.exact_duplicates: 14" in md
    for d in results.disagreements:
        assert re.search(rf"^\| {d.index} \| ", md, re.M)


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_renders_an_old_run(results, tmp_path):
    run = tmp_path / "runs" / results.run_id
    save_results(results, run)
    out = CliRunner().invoke(cli, ["report", str(run)])
    assert out.exit_code == 0, out.output
    assert str(run / "report.html") in out.output and str(run / "report.md") in out.output
    assert (run / "report.html").read_text().startswith("<!doctype html>")

    out = CliRunner().invoke(cli, ["report", str(run / "results.json"), "--json", "--out", str(tmp_path / "elsewhere")])
    assert out.exit_code == 0, out.output
    paths = json.loads(out.output)
    assert Path(paths["html"]) == tmp_path / "elsewhere" / "report.html" and Path(paths["markdown"]).is_file()


@pytest.mark.parametrize(
    "content, message",
    [
        ({"schema_version": 0, "run_id": "x"}, "results schema version 0, this tunewise reads 1"),
        ({"schema_version": 1, "run_id": "x"}, "is not a valid results.json (8 problem(s)"),
        ("{not json", "is not valid JSON"),
    ],
)
def test_cli_explains_unreadable_results(tmp_path, content, message):
    path = tmp_path / "results.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    out = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert out.exit_code == 1
    assert message in out.output
    assert "Traceback" not in out.output
    assert not (tmp_path / "report.html").exists()


def test_cli_missing_run(tmp_path):
    out = CliRunner().invoke(cli, ["report", str(tmp_path / "nope")])
    assert out.exit_code == 1 and "no results.json" in out.output


def test_importing_the_report_stays_light():
    code = "import sys, tunewise.report; print('matplotlib' in sys.modules, 'torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == ["False", "False"]


def test_undertraining_note_is_shown_in_html_and_markdown(results, tmp_path):
    note = "validation loss was still falling at the last epoch (0.054 -> 0.035 over epochs 1-2, -35%)"
    changed = results.model_copy(deep=True)
    changed.rung("lora").training.underfitting_note = note
    html_path, md_path = render_report(changed, tmp_path)
    assert "<strong>Undertrained?</strong> " + html_of(note) in html_path.read_text(encoding="utf-8")
    markdown = md_path.read_text(encoding="utf-8")
    assert "> **Undertrained?** " in markdown and "-35%" in markdown
    plain_html = render_report(results, tmp_path / "plain")[0].read_text(encoding="utf-8")
    assert "Undertrained?" not in plain_html  # absent when not set


def test_extra_metrics_get_their_own_table(results, tmp_path):
    from tunewise.ladder.results import Score

    changed = results.model_copy(deep=True)
    done = [r for r in changed.rungs if r.status == "done"]
    done[0].extra_scores = {"contains": Score(value=0.21, ci_low=0.15, ci_high=0.26, n=200)}
    html_path, md_path = render_report(changed, tmp_path)
    html, markdown = html_path.read_text(encoding="utf-8"), md_path.read_text(encoding="utf-8")
    table = html[html.index('id="also-measured"'):]
    table = table[: table.index("</table>")]
    assert "<th class=\"num\">contains (95% CI)</th>" in table
    assert html_of(done[0].title) in table and "0.21 (0.15–0.26)" in table
    assert all(html_of(r.title) not in table for r in done[1:])  # rungs without extra scores: no row
    assert f"| {done[0].title} | 0.21 (0.15–0.26) |" in markdown
    assert 'id="also-measured"' not in render_report(results, tmp_path / "plain")[0].read_text(encoding="utf-8")


# --- results.json that does not add up (issue 16, item 9) ------------------------------------------


def _write(tmp_path, results: Results) -> Path:
    """results.json as a person or a bad disk might leave it: NaN written as the bare literal."""
    data = results.model_dump(mode="python")
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data, default=str))
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: setattr(r.rungs[0].score, "value", float("nan")), "rungs.zero_shot.score.value: nan"),
        (lambda r: setattr(r.rungs[0].score, "ci_low", 0.9), "rungs.zero_shot.score: ci_low 0.9 is above the score 0.71"),
        (lambda r: setattr(r.rungs[0].score, "ci_high", 0.5), "rungs.zero_shot.score: ci_high 0.5 is below the score 0.71"),
        (lambda r: setattr(r.rungs[0], "monthly_cost", float("inf")), "rungs.zero_shot.monthly_cost: inf"),
        (lambda r: setattr(r.rungs[0], "p_value_vs_best", 1.5), "rungs.zero_shot.p_value_vs_best: 1.5 is not a probability"),
        (lambda r: setattr(r.decision, "rung", "lora"), "decision.rung: 'lora' is not a rung of this run"),
        (lambda r: setattr(r.decision, "rung", "rag"), "decision.rung: 'rag' did not finish (skipped)"),
    ],
)
def test_cli_refuses_results_that_do_not_add_up(tmp_path, change, message):
    results = minimal_results()
    change(results)
    _write(tmp_path, results)
    out = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert out.exit_code == 1, out.output
    assert message in out.output and "rerun the task" in out.output
    assert len(out.output.strip().splitlines()) == 1 and "Traceback" not in out.output
    assert not (tmp_path / "report.html").exists()


def test_results_problems_are_capped(tmp_path):
    from tunewise.report.render import results_problems

    results = minimal_results(rungs=[
        RungResult(name=f"r{i}", title="R", score=Score(value=float("nan"), ci_low=0, ci_high=1, n=1)) for i in range(500)
    ])
    assert len(results_problems(results)) == 500
    _write(tmp_path, results)
    out = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert out.exit_code == 1 and "500 problem(s)" in out.output and "and 497 more" in out.output
    assert len(out.output) < 1500


def test_consistent_results_have_no_problems(results):
    from tunewise.report.render import results_problems

    assert results_problems(results) == []
    assert results_problems(minimal_results()) == []


def test_a_corpus_statistic_may_sit_outside_its_bootstrap_interval():
    # macro-F1's resamples are biased, so its percentile interval need not hold the score: not a fault
    from tunewise.report.render import results_problems

    odd = Score(value=0.9, ci_low=0.91, ci_high=0.95, n=200)
    results = minimal_results(metric="macro_f1")
    results.rungs[0].score = odd
    results.rungs[0].extra_scores = {"accuracy": odd}
    assert results_problems(results) == ["rungs.zero_shot.extra_scores.accuracy: ci_low 0.91 is above the score 0.9"]
