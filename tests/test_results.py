"""results.json: versioned, and results written before an added optional field still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunewise.errors import TunewiseError
from tunewise.ladder.results import SCHEMA_VERSION, Decision, Results, load_results, save_results

FIXTURE = Path(__file__).resolve().parent / "data" / "results_fixture.json"


def test_results_without_agreement_kind_still_load(tmp_path):
    """A results.json from before `Decision.agreement_kind` existed: same version, no such key."""
    raw = json.loads(FIXTURE.read_text(encoding="utf-8"))
    raw["decision"].pop("agreement_kind", None)
    assert raw["schema_version"] == 1  # the fixture is a schema-1 run: old runs still render
    path = tmp_path / "results.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    results = load_results(tmp_path)
    assert results.decision.agreement_kind is None
    assert results.decision.agreement == raw["decision"]["agreement"]


@pytest.mark.parametrize("kind", ["agree", "disagree", "unmeasured"])
def test_agreement_kind_round_trips(tmp_path, kind):
    results = Results(
        run_id="r-1", task="t", created="2025-01-01T00:00:00+00:00", model="m", metric="accuracy",
        eval_examples=10, train_examples=20, calls_per_month=1000, horizon_months=12,
        decision=Decision(rung="few_shot", sentence="Use Few-shot.", reasons=[], agreement="...", agreement_kind=kind),
    )  # fmt: skip
    save_results(results, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["decision"]["agreement_kind"] == kind
    assert load_results(tmp_path).decision.agreement_kind == kind


def test_unknown_agreement_kind_is_rejected_naming_the_field(tmp_path):
    raw = json.loads(FIXTURE.read_text(encoding="utf-8"))
    raw["decision"]["agreement_kind"] = "partly"
    (tmp_path / "results.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(TunewiseError, match=r"decision\.agreement_kind"):
        load_results(tmp_path)


def test_schema_1_results_load_without_the_margin_verdict(tmp_path):
    raw = json.loads(FIXTURE.read_text(encoding="utf-8"))
    (tmp_path / "results.json").write_text(json.dumps(raw), encoding="utf-8")
    results = load_results(tmp_path)
    assert results.schema_version == 1 and SCHEMA_VERSION == 2
    assert results.decision.confident is None and results.decision.margin is None
    assert all(r.vs_best is None for r in results.rungs)


def test_an_unknown_schema_version_is_refused_naming_both(tmp_path):
    raw = json.loads(FIXTURE.read_text(encoding="utf-8"))
    raw["schema_version"] = 99
    (tmp_path / "results.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(TunewiseError, match=r"version 99, this tunewise reads 1, 2"):
        load_results(tmp_path)
