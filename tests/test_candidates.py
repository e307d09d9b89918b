"""Several models in one task (issue 11): a prompted rung on an OpenAI-compatible endpoint started
here on 127.0.0.1, and a LoRA rung on a tiny local model that trains, each priced as it is deployed,
through `run_ladder` with the evidence step and the report, as `tunewise run` does."""

from __future__ import annotations

import json
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from conftest import write_jsonl  # noqa: E402
from test_finetune import ANIMALS, SOUNDS, tiny_dir  # noqa: E402,F401  (tiny_dir: the saved tiny Llama fixture)

from tunewise.ladder.run import RunOptions, run_ladder  # noqa: E402
from tunewise.models.base import FakeModel  # noqa: E402
from tunewise.rungs import RUNGS, get_rung, split_candidate  # noqa: E402
from tunewise.rungs.base import Prepared, Request, user_turns, with_system  # noqa: E402
from tunewise.serve.app import build_app  # noqa: E402
from tunewise.serve.config import ServedConfig  # noqa: E402
from tunewise.serve.server import BackgroundServer  # noqa: E402
from tunewise.task import TaskError, parse_task  # noqa: E402

SYSTEM = "answer briefly ."


def rows(n: int, offset: int = 0) -> list[dict]:
    out = []
    for i in range(offset, offset + n):
        animal, sound = ANIMALS[i % len(ANIMALS)], SOUNDS[i % len(SOUNDS)]
        out.append({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"what does the {animal} say ?"},
                                 {"role": "assistant", "content": sound}]})
    return out


def knows_most(messages) -> str:
    """The hosted model: right on every animal but the owl."""
    question = messages[-1]["content"]
    for animal, sound in zip(ANIMALS, SOUNDS):
        if f"the {animal} say" in question:
            return sound if animal != "owl" else "woof"
    return "?"


@pytest.fixture
def endpoint():
    """An OpenAI-compatible server on 127.0.0.1 (tunewise serve's own app) over a fake model."""
    model = FakeModel(respond=knows_most, name="big")
    prepared = Prepared(model, lambda turns: Request(with_system(None, user_turns(turns))))
    with BackgroundServer(build_app({"big": ServedConfig(prepared, "big", "zero_shot", 8)}, api_key="k-123")) as server:
        yield server, model


def two_model_task(tmp_path, tiny_dir, server, rungs=None):
    write_jsonl(tmp_path / "train.jsonl", rows(48))
    write_jsonl(tmp_path / "eval.jsonl", rows(24, offset=3))
    return parse_task(
        {
            "name": "two",
            "data": {"train": "train.jsonl", "eval": "eval.jsonl"},
            "metric": "exact_match",
            "models": {
                "small": {"model": str(tiny_dir), "options": {"bf16": "off"},
                          "pricing": {"input_per_1m": None, "output_per_1m": None, "gpu_hourly": 1.5,
                                      "gpu_inference_tokens_per_s": "measured"}},
                "large": {"model": "openai:big", "options": {"base_url": server.url + "/v1", "api_key_env": "TEST_ENDPOINT_KEY"},
                          "pricing": {"input_per_1m": 2.5, "output_per_1m": 10.0}},
            },
            "ladder": {"rungs": rungs or ["zero_shot@large", "few_shot@large", "zero_shot@small", "lora@small"],
                       "few_shot": {"k": 2, "selection": "fixed"}, "max_new_tokens": 4},
            "train": {"epochs": 2, "batch_size": 8, "learning_rate": 0.01, "max_length": 64, "bf16": "off",
                      "learning_curve": [0.5, 1.0]},
            "business": {"calls_per_month": 100_000, "horizon_months": 12},
        },
        tmp_path / "task.yaml",
    )


def test_a_hosted_prompted_model_against_a_small_fine_tuned_one_each_at_its_own_prices(tmp_path, tiny_dir, endpoint, monkeypatch):
    server, hosted = endpoint
    monkeypatch.setenv("TEST_ENDPOINT_KEY", "k-123")
    task = two_model_task(tmp_path, tiny_dir, server)
    results = run_ladder(task, RunOptions(out_dir=tmp_path / "runs"), log=lambda m: None)

    names = [r.name for r in results.rungs]
    assert names == ["zero_shot@large", "few_shot@large", "zero_shot@small", "lora@small"]
    assert results.models == {"small": str(tiny_dir), "large": "openai:big"}
    by = {r.name: r for r in results.rungs}
    assert all(r.status == "done" for r in results.rungs), [(r.name, r.note) for r in results.rungs]
    # The endpoint answered the large candidates over HTTP: 21 of 24 right (every owl is wrong).
    assert len(hosted.calls) >= 2 * 24 and by["zero_shot@large"].score.value == pytest.approx(21 / 24)
    assert by["few_shot@large"].title.endswith("on large") and by["lora@small"].title == "LoRA fine-tune on small"
    assert by["zero_shot@large"].model == "big" and by["lora@small"].model == tiny_dir.name

    # Each priced by its own model: hosted per token, self-hosted by GPU time at the measured rate.
    large = by["few_shot@large"]
    assert large.cost_per_1k == pytest.approx((large.prompt_tokens * 2.5 + large.output_tokens * 10.0) / 1e6 * 1000)
    assert large.pricing == "hosted $2.50 in / $10.00 out per 1M"
    small = by["zero_shot@small"]
    rate = small.scored_examples * (0.2 * small.prompt_tokens + small.output_tokens) / small.generation_s
    gpu_seconds = (0.2 * small.prompt_tokens + small.output_tokens) / rate
    assert small.cost_per_1k == pytest.approx(gpu_seconds / 3600 * 1.5 * 1000, rel=1e-6)
    assert small.pricing == "self-hosted $1.50/GPU h, measured tokens/s"
    # The fine-tune is trained on the small model, in its own folder, at self-hosted GPU prices.
    assert by["lora@small"].finetuned and by["lora@small"].training is not None
    assert (results_dir := tmp_path / "runs" / results.run_id / "train@small").is_dir(), results_dir

    # Break-even between any two candidates that differ in one-off cost, across models.
    pairs = {(b.cheaper_upfront, b.cheaper_per_call) for b in results.break_even}
    assert ("few_shot@large", "lora@small") in pairs and ("zero_shot@large", "lora@small") in pairs

    # The evidence step ran for the candidate that trains, on its model.
    assert results.learning_curve is not None and results.learning_curve.rung == "lora@small"
    assert [p.examples for p in results.learning_curve.points][-1] > [p.examples for p in results.learning_curve.points][0]
    assert results.forgetting is not None and results.forgetting.rung == "lora@small"
    # The paired test against the plain prompt is on the candidate's own model.
    assert by["lora@small"].p_value_vs_zero_shot is not None

    # The report names each row's model and prices.
    html = (tmp_path / "runs" / results.run_id / "report.html").read_text()
    markdown = (tmp_path / "runs" / results.run_id / "report.md").read_text()
    for text in (html, markdown):
        assert "few_shot@large" in text or "Few-shot (k=2, fixed) on large" in text
        assert "hosted $2.50 in / $10.00 out per 1M" in text and "self-hosted $1.50/GPU h" in text
    assert re.search(r"LoRA fine-tune on small", markdown)

    # `tunewise serve` serves any candidate of the run: the hosted one through its endpoint, the
    # fine-tuned one from its adapter on the small model.
    from tunewise.serve.config import load_runs

    question = [{"role": "user", "content": "what does the cat say ?"}]
    for name in ("few_shot@large", "lora@small"):
        config = load_runs([tmp_path / "runs" / results.run_id], rung=name, embedder=None)["two"]
        served = config.prepared.model.generate([config.prepared.build(question).messages], 4)[0].text
        saved = [json.loads(line) for line in (tmp_path / "runs" / results.run_id / by[name].predictions_file).read_text().splitlines()]
        cat = next(row for row in saved if row["input"] == "what does the cat say ?")
        assert config.rung == name and served == cat["prediction"], (name, served, cat["prediction"])
    assert any("the cat say" in m[-1]["content"] for m in hosted.calls[-1:])


def test_a_training_rung_on_an_endpoint_fails_before_any_work(tmp_path, tiny_dir, endpoint):
    server, hosted = endpoint
    with pytest.raises(TaskError, match=r"lora@large trains, but model 'large' \(openai:big\) is an OpenAI-compatible endpoint"):
        two_model_task(tmp_path, tiny_dir, server, rungs=["zero_shot@large", "lora@large"])
    assert hosted.calls == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ladder": {"rungs": ["few_shot@huge"]}}, "'few_shot@huge' names model 'huge', which is not defined (models: small)"),
        ({"model": "embedded"}, "give `models:` or `model:`, not both"),
        ({"models": {}}, "models: name at least one model"),
        ({"models": {"a b": {"model": "embedded"}}}, "models: name 'a b': use letters"),
        ({"models": {"small": {"model": "embedded", "pricing": {"input_per_1m": 1, "output_per_1m": 1,
                                                                  "gpu_inference_tokens_per_s": "measured"}}}},
         "`measured` prices self-hosting"),
    ],
)
def test_models_section_errors_name_the_problem_and_the_fix(change, message):
    raw = {"name": "t", "data": {"train": "a.jsonl", "eval": "b.jsonl"}, "models": {"small": {"model": "embedded"}}}
    raw.update(change)
    with pytest.raises(TaskError, match=re.escape(message)):
        parse_task(raw)


def test_a_bare_rung_runs_on_the_first_model_and_a_single_model_task_is_unchanged():
    raw = {"name": "t", "data": {"train": "a.jsonl", "eval": "b.jsonl"},
           "models": {"small": {"model": "embedded"}, "large": {"model": "openai:gpt-4o-mini"}}}
    task = parse_task(raw)
    assert task.candidate("few_shot") == "few_shot@small" and task.candidate("few_shot@large") == "few_shot@large"
    assert task.for_model("large").model == "openai:gpt-4o-mini" and task.for_model(None).model == "embedded"
    single = parse_task({"name": "t", "data": {"train": "a.jsonl", "eval": "b.jsonl"}})
    assert single.candidate("few_shot") == "few_shot" and single.for_model(None) is single


def test_every_rung_module_declares_its_facts_and_the_registry_is_the_only_list():
    for name, rung in RUNGS.items():
        assert rung.name == name and rung.label and callable(rung.prepare)
        default = ("learning_curve", "forgetting") if rung.trains else ()
        assert rung.evidence == (default if rung.evidence_steps is None else rung.evidence_steps)
        assert set(rung.evidence) <= {"learning_curve", "forgetting"} and (rung.trains or not rung.evidence)
        assert rung.needs_corpus == rung.retrieved
    assert split_candidate("lora@small") == ("lora", "small") and get_rung("lora@small") is RUNGS["lora"]
    with pytest.raises(Exception, match="unknown rung 'lorax'"):
        get_rung("lorax@small")
