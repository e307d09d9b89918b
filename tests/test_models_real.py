"""The real embedded model (SmolLM2-135M-Instruct) end to end, so the real path cannot rot.

Slow: the first load dequantises the GGUF (~20-30 s on 2 cores). Run with `pytest -m slow`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tunewise.models import resolve, weights  # noqa: E402
from tunewise.models.hf import TransformersModel  # noqa: E402

EVAL = Path(__file__).resolve().parents[1] / "src" / "tunewise" / "examples" / "intent" / "eval.jsonl"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """One dequantisation per module, into a temp cache (never the user's ~/.tunewise)."""
    try:
        resolve.locate_embedded()
    except resolve.ModelNotFound as err:
        pytest.skip(str(err))
    home = tmp_path_factory.mktemp("real-model-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEWISE_HOME", str(home))
        model, tokenizer = resolve.load_pretrained("embedded")
    return model, tokenizer, home


def intent_conversations(n: int) -> list[list[dict[str, str]]]:
    rows = [json.loads(line) for line in EVAL.read_text(encoding="utf-8").splitlines()[:n]]
    return [row["messages"][:-1] for row in rows]


def test_cached_load_skips_dequantisation(embedded, monkeypatch):
    _, _, home = embedded
    monkeypatch.setenv("TUNEWISE_HOME", str(home))

    def fail(*args):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(weights, "_dequantise", fail)  # the GGUF cache lives in models.weights
    model, tokenizer = resolve.load_pretrained("embedded")
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert not hasattr(model.config, "quantization_config")


def test_embedded_answers_intent_examples(embedded):
    model, tokenizer, _ = embedded
    m = TransformersModel(model, tokenizer, "embedded")
    convs = intent_conversations(6)
    gens = m.generate(convs, max_new_tokens=8)
    assert len(gens) == 6
    for conv, g in zip(convs, gens):
        assert isinstance(g.text, str) and g.text.strip()
        assert 1 <= g.output_tokens <= 8
        expected = tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True)
        assert g.prompt_tokens == len(expected["input_ids"])
        assert "<|im_end|>" not in g.text and "<|im_start|>" not in g.text


def test_embedded_stops_at_end_of_turn(embedded):
    model, tokenizer, _ = embedded
    m = TransformersModel(model, tokenizer, "embedded")
    convs = [
        [{"role": "user", "content": "What is the capital of France? One word."}],
        [{"role": "system", "content": "Answer with one word."}, {"role": "user", "content": "Is fire hot?"}],
    ]
    gens = m.generate(convs, max_new_tokens=48)
    assert any(g.output_tokens < 48 for g in gens), [g.text for g in gens]


def test_embedded_batched_equals_unbatched_in_fp32(embedded):
    model, tokenizer, _ = embedded
    convs = intent_conversations(8)
    batched = TransformersModel(model, tokenizer, "embedded", bf16="off").generate(convs, 8)
    single = TransformersModel(model, tokenizer, "embedded", bf16="off", max_batch_size=1)
    alone = [single.generate([c], 8)[0] for c in convs]
    assert [g.text for g in batched] == [g.text for g in alone]
    assert [g.output_tokens for g in batched] == [g.output_tokens for g in alone]
