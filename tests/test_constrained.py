"""Constrained decoding (issue 17): each constraint kind restricts a tiny random model's greedy
answers, schema inference, the OpenAI-compatible backend sends the constraint, and constrained rungs
run in the ladder."""

from __future__ import annotations

import json
import re

import pytest

from conftest import chat, write_jsonl
from tunewise.errors import TunewiseError
from tunewise.ladder.run import RunOptions, run_ladder
from tunewise.models.base import FakeModel, Generation
from tunewise.models.constraints import (
    ConstrainedModel,
    Constraint,
    infer_constraint,
    infer_json_schema,
    parse_constraint,
)
from tunewise.task import parse_task

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
xgr = pytest.importorskip("xgrammar")
httpx = pytest.importorskip("httpx")

CORPUS = (
    "play some jazz music please . book a table for two tonight . what is the weather in paris tomorrow . "
    "add this song to my rock playlist . rate this book four stars . find the movie show times . "
    '{"city": "paris", "days": 2} {"city": "rome", "ok": true} 123-yes 456-no'
)
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny():
    """A tiny random Llama over a byte-level BPE tokenizer (SmolLM2's kind), trained on a few lines."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tunewise.models.hf import TransformersModel

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator([CORPUS] * 20, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>")
    tok.chat_template = TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=2, initializer_range=0.2,
    )
    return TransformersModel(LlamaForCausalLM(config).eval(), tok, "tiny", device="cpu", bf16="off")


def convs(n: int) -> list[list[dict[str, str]]]:
    words = CORPUS.split()
    return [[{"role": "user", "content": " ".join(words[i : i + 3 + i % 5])}] for i in range(n)]


LABELS = ("jazz", "rock playlist", "book a table", "weather")


def test_labels_constraint_restricts_every_answer_to_a_label(tiny):
    free = [g.text for g in tiny.generate(convs(8), 8)]
    assert not set(free) <= set(LABELS)  # unconstrained, the random model babbles
    # Through the rung's wrapper, whose budget fits the longest label even at 4 new tokens.
    out = ConstrainedModel(tiny, Constraint("labels", LABELS)).generate(convs(8), 4)
    assert [g.text for g in out] and all(g.text in LABELS for g in out), [g.text for g in out]
    assert len({g.text for g in out}) > 1
    # Directly, a budget too small cuts a label short, as it would any answer.
    short = tiny.generate(convs(8), 2, constraint=Constraint("labels", LABELS))
    assert all(g.output_tokens <= 2 and any(label.startswith(g.text) for label in LABELS) for g in short)


def test_json_schema_constraint_gives_conforming_json(tiny):
    import jsonschema

    schema = {
        "type": "object",
        "properties": {"city": {"enum": ["paris", "rome"]}, "ok": {"type": "boolean"}},
        "required": ["city", "ok"],
        "additionalProperties": False,
    }
    out = tiny.generate(convs(6), 40, constraint=Constraint("json_schema", schema=schema))
    for g in out:
        jsonschema.validate(json.loads(g.text), schema)


def test_regex_constraint_matches_the_pattern(tiny):
    pattern = "[0-9]{3}-(yes|no)"
    out = tiny.generate(convs(6), 16, constraint=Constraint("regex", pattern=pattern))
    assert all(re.fullmatch(pattern, g.text) for g in out), [g.text for g in out]


def test_no_constraint_keeps_plain_generation(tiny):
    assert tiny._constrained(None) == {}
    assert [g.text for g in tiny.generate(convs(4), 6)] == [g.text for g in tiny.generate(convs(4), 6, constraint=None)]


def test_constrained_stream_equals_constrained_generate(tiny):
    c = Constraint("labels", LABELS)
    [conv] = convs(1)
    model = ConstrainedModel(tiny, c)
    pieces = []
    it = model.stream(conv, 8)
    try:
        while True:
            pieces.append(next(it))
    except StopIteration as stop:
        final = stop.value
    assert "".join(pieces) == final.text == model.generate([conv], 8)[0].text
    assert final.text in LABELS


# -- inference, pure ---------------------------------------------------------------------------


def test_schema_inference_from_training_answers():
    answers = ['{"name": "Blue Spice", "stars": 3, "kids": true}', '{"name": "Zizzi", "stars": 4.5}', '{"name": "X", "near": null}']
    assert infer_json_schema(answers) == {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "stars": {"type": "number"},  # 3 and 4.5: integer widens to number
            "kids": {"type": "boolean"},
            "near": {"type": "null"},
        },
        "required": ["name"],
        "additionalProperties": False,
    }
    # Constrained decoding writes properties in the schema's order: a key first seen late (priceRange)
    # still goes where the answers put it, not last (the e2e_extract run wrote garbage there).
    e2e = ['{"name": "A", "area": "x", "near": "B"}', '{"name": "C", "priceRange": "high", "area": "y"}', '{"priceRange": "low", "near": "D"}']
    assert list(infer_json_schema(e2e)["properties"]) == ["name", "priceRange", "area", "near"]
    with pytest.raises(TunewiseError, match="2 of 3 training answers are not JSON objects"):
        infer_json_schema(['{"a": 1}', "not json", "[1, 2]"])


def make_task(tmp_path, metric="accuracy", answers=("alpha", "beta", "gamma"), **extra):
    rows = [chat(f"item {i}", answers[i % len(answers)], system="Label it.") for i in range(12)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    evals = write_jsonl(tmp_path / "eval.jsonl", rows[:6])
    raw = {"name": "toy", "data": {"train": str(train), "eval": str(evals)}, "metric": metric, **extra}
    raw.setdefault("ladder", {"few_shot": {"k": 2, "selection": "fixed"}, "batch_size": 4})
    return parse_task(raw, tmp_path / "task.yaml")


def test_which_constraint_a_task_gets(tmp_path):
    from tunewise.data.splits import load_splits

    task = make_task(tmp_path)
    train, _ = load_splits(task)
    assert infer_constraint(task, train) == Constraint("labels", ("alpha", "beta", "gamma"))
    json_task = make_task(tmp_path, metric="json_fields", answers=('{"a": "x"}', '{"a": "y", "b": 2}'))
    c = infer_constraint(json_task, load_splits(json_task)[0])
    assert c.kind == "json_schema" and c.schema["required"] == ["a"] and c.schema["properties"]["b"] == {"type": "integer"}
    given = make_task(tmp_path, constraint={"regex": "(alpha|beta)"})
    assert infer_constraint(given, train) == Constraint("regex", pattern="(alpha|beta)")
    with pytest.raises(TunewiseError, match="no constraint can be inferred for metric 'token_f1'"):
        infer_constraint(make_task(tmp_path, metric="token_f1"), train)
    with pytest.raises(TunewiseError, match="give exactly one of labels, json_schema, regex"):
        parse_constraint({"choices": ["a"]})
    with pytest.raises(TunewiseError, match="not a valid regular expression"):
        parse_constraint({"regex": "(unclosed"})


# -- the OpenAI-compatible backend ---------------------------------------------------------------


def _api(handler, base_url="http://fake/v1"):
    from tunewise.models.openai_http import OpenAIChatModel

    return OpenAIChatModel("m", base_url=base_url, transport=httpx.MockTransport(handler), sleep=lambda s: None)


def test_openai_backend_sends_the_constraint(monkeypatch):
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"index": 0, "message": {"role": "assistant", "content": "beta"}}]})

    model = _api(handler)
    user = [{"role": "user", "content": "x"}]
    model.generate([user], 4, constraint=Constraint("labels", ("alpha", "beta")))
    model.generate([user], 4, constraint=Constraint("regex", pattern="[0-9]+"))
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    model.generate([user], 4, constraint=Constraint("json_schema", schema=schema))
    model.generate([user], 4)
    assert seen[0]["guided_choice"] == ["alpha", "beta"]
    assert seen[1]["guided_regex"] == "[0-9]+"
    assert seen[2]["response_format"] == {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    assert not {"guided_choice", "guided_regex", "response_format"} & set(seen[3])
    # Through the rung's wrapper, and when streaming.
    ConstrainedModel(model, Constraint("labels", ("alpha",))).generate([user], 4)
    assert seen[4]["guided_choice"] == ["alpha"]

    def sse(request):
        seen.append(json.loads(request.content))
        return httpx.Response(200, text='data: {"choices": [{"delta": {"content": "alpha"}}]}\n\ndata: [DONE]\n\n')

    list(ConstrainedModel(_api(sse), Constraint("labels", ("alpha",))).stream(user, 4))
    assert seen[-1]["guided_choice"] == ["alpha"] and seen[-1]["stream"] is True


def test_hosted_openai_refuses_a_label_constraint_before_any_request(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    calls = []
    model = _api(lambda r: calls.append(1), base_url=None)
    with pytest.raises(TunewiseError, match="api.openai.com cannot constrain answers to a labels"):
        model.generate([[{"role": "user", "content": "x"}]], 4, constraint=Constraint("labels", ("a",)))
    assert calls == []


# -- constrained rungs in the ladder ---------------------------------------------------------------


class ConstraintAwareFake(FakeModel):
    """Answers the first allowed label when constrained, a sentence otherwise; records constraints."""

    def __init__(self):
        super().__init__(respond=lambda m: "The label is probably beta.")
        self.constraints = []

    def generate(self, conversations, max_new_tokens, progress=None, constraint=None):
        self.constraints.append(constraint)
        if constraint is None:
            return super().generate(conversations, max_new_tokens, progress)
        return [Generation(constraint.labels[1], 10, 1, 0.001) for _ in conversations]


def test_constrained_rungs_run_in_the_ladder(tmp_path):
    task = make_task(tmp_path)
    model = ConstraintAwareFake()
    opts = RunOptions(rungs=["zero_shot", "zero_shot_constrained", "few_shot_constrained"], model=model, evidence=False, report=False, out_dir=tmp_path / "runs")
    results = run_ladder(task, opts, log=lambda m: None)
    zero, constrained = results.rung("zero_shot"), results.rung("zero_shot_constrained")
    assert constrained.title == "Zero-shot prompt, constrained (labels)"
    assert results.rung("few_shot_constrained").title == "Few-shot (k=2, fixed), constrained (labels)"
    assert zero.score.value == 0.0 and constrained.score.value == pytest.approx(2 / 6)  # eval golds: beta on 2 of 6
    assert Constraint("labels", ("alpha", "beta", "gamma")) in model.constraints and None in model.constraints
    assert constrained.latency_p50_s is not None  # timed like any rung


def test_constrained_rung_is_skipped_where_no_constraint_applies(tmp_path):
    task = make_task(tmp_path, metric="token_f1")
    opts = RunOptions(rungs=["zero_shot", "zero_shot_constrained"], model=ConstraintAwareFake(), evidence=False, report=False, out_dir=tmp_path / "runs")
    r = run_ladder(task, opts, log=lambda m: None).rung("zero_shot_constrained")
    assert r.status == "skipped" and "set `constraint:`" in r.note


def test_a_backend_without_constraints_is_refused():
    with pytest.raises(TunewiseError, match="cannot constrain its answers"):
        ConstrainedModel(FakeModel(["x"]), Constraint("labels", ("a",)))
