"""Quantized rungs (issue 12): the same model with quantized weights, asked with a prompted rung's
requests. Fast tests on a tiny random Llama (2 layers, width 64); one slow test on the embedded model."""

from __future__ import annotations

import json
import sys
import types

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import EXAMPLES, write_jsonl  # noqa: E402
from test_finetune import ANIMALS, SOUNDS, build_model, build_tokenizer, tiny_dir  # noqa: E402,F401  (tiny_dir: the saved tiny Llama fixture)

from tunewise.errors import TunewiseError  # noqa: E402
from tunewise.ladder.run import RunOptions, run_ladder  # noqa: E402
from tunewise.models import quantize as qz  # noqa: E402
from tunewise.models.base import FakeModel  # noqa: E402
from tunewise.models.hf import TransformersModel  # noqa: E402
from tunewise.models.llamacpp import LlamaCppModel  # noqa: E402
from tunewise.rungs import RUNGS, get_rung  # noqa: E402
from tunewise.rungs.quantized import batch_throughput  # noqa: E402
from tunewise.task import TaskError, parse_task  # noqa: E402

SYSTEM = "answer briefly ."
QUESTION = [{"role": "user", "content": "what does the cow say ?"}]


def tiny(seed: int = 0, **opts) -> TransformersModel:
    tokenizer = build_tokenizer()
    return TransformersModel(build_model(tokenizer, seed), tokenizer, "tiny", device="cpu", bf16="off", **opts)


def rows(n: int, offset: int = 0) -> list[dict]:
    return [
        {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"what does the {ANIMALS[i % 8]} say ?"},
                      {"role": "assistant", "content": SOUNDS[i % 8]}]}
        for i in range(offset, offset + n)
    ]


def make_task(tmp_path, model: str, rungs: list[str], **ladder):
    write_jsonl(tmp_path / "train.jsonl", rows(24))
    write_jsonl(tmp_path / "eval.jsonl", rows(16, offset=3))
    return parse_task(
        {
            "name": "quant",
            "data": {"train": "train.jsonl", "eval": "eval.jsonl"},
            "metric": "exact_match",
            "model": model,
            "model_options": {"bf16": "off"},
            "ladder": {"rungs": rungs, "max_new_tokens": 4, "latency_requests": 3, **ladder},
            "business": {"pricing": {"input_per_1m": None, "output_per_1m": None, "gpu_hourly": 1.0,
                                     "gpu_inference_tokens_per_s": "measured"}},
        },
        tmp_path / "task.yaml",
    )


# -- the quantized copies ---------------------------------------------------------------------------


def parameter_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def test_bf16_casts_a_copy_of_the_weights_and_leaves_the_base_in_fp32():
    base = tiny()
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    q = qz.quantize(base, "bf16")
    assert {p.dtype for p in q.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in base.model.parameters()} == {torch.float32}
    assert all(torch.equal(before[k], v) for k, v in base.model.state_dict().items())
    # Parameters halve exactly; the rotary frequencies (a buffer) stay fp32, as in a model loaded in bf16.
    assert parameter_bytes(q.model) * 2 == parameter_bytes(base.model)
    assert q.model.model.rotary_emb.inv_freq.dtype == torch.float32
    info = q.quantization
    assert info.method == "bf16" and info.base_weight_bytes == qz.weight_bytes(base.model) > info.weight_bytes
    assert q.precision == "bf16 weights" and q.bf16 is False  # the weights are bf16; no autocast on top
    # The bf16 model's next-token logits stay close to the fp32 model's.
    ids = torch.tensor([base.prompt_ids(QUESTION)])
    with torch.no_grad():
        full, half = base.model(ids).logits[0, -1], q.model(ids).logits[0, -1].float()
    assert torch.corrcoef(torch.stack([full, half]))[0, 1] > 0.99


def test_int8_quantizes_the_decoder_linears_keeps_the_head_and_answers():
    base = tiny()
    q = qz.quantize(base, "int8")
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    layers = [name for name, m in q.model.named_modules() if isinstance(m, dynamic)]
    assert len(layers) == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers
    assert type(q.model.lm_head) is torch.nn.Linear and q.model.lm_head.weight.dtype == torch.float32
    assert not any(isinstance(m, dynamic) for m in base.model.modules())  # the base is untouched
    # The packed int8 weights are counted although they are not parameters: a quarter of their fp32 bytes.
    linear_fp32 = sum(m.weight.numel() * 4 for name, m in base.model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head")
    saved = qz.weight_bytes(base.model) - q.quantization.weight_bytes
    assert saved == pytest.approx(0.75 * linear_fp32, rel=0.001)
    assert q.quantization.detail == "14 linear layers (output head kept in fp32)"
    ids = torch.tensor([base.prompt_ids(QUESTION)])
    with torch.no_grad():
        full, small = base.model(ids).logits[0, -1], q.model(ids).logits[0, -1]
    assert torch.corrcoef(torch.stack([full, small]))[0, 1] > 0.98
    answers = q.generate([QUESTION, [{"role": "user", "content": "what does the owl say ?"}]], 4)
    assert len(answers) == 2 and all(a.output_tokens >= 1 for a in answers)


def test_int8_weight_only_rounds_the_weights_per_row_and_keeps_activations_in_bf16():
    from tunewise.models.int8_weight import Int8WeightLinear

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32, bias=True)
    layer = Int8WeightLinear(linear)
    x = torch.randn(3, 5, 64)
    exact = linear(x)
    approx = layer(x.to(torch.bfloat16)).float()
    assert approx.shape == (3, 5, 32) and layer.qweight.dtype == torch.int8
    # Each row's largest weight maps to +-127; the error is the weights' rounding plus bf16's.
    assert (layer.qweight.abs().amax(dim=1) == 127).all()
    assert (approx - exact).abs().max() < 0.05 * exact.abs().max()

    base = tiny()
    q = qz.quantize(base, "int8_weight")
    swapped = [m for m in q.model.modules() if isinstance(m, Int8WeightLinear)]
    assert len(swapped) == 14 and q.model.lm_head.weight.dtype == torch.bfloat16
    assert q.quantization.detail == "14 linear layers (output head kept in bf16)"
    linear_fp32 = sum(m.weight.numel() * 4 for name, m in base.model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head")
    rest_fp32 = qz.weight_bytes(base.model) - linear_fp32
    # int8 weights (a quarter) + bf16 row scales; everything else in bf16 but the fp32 rotary buffer.
    assert linear_fp32 / 4 < q.quantization.weight_bytes - rest_fp32 / 2 < linear_fp32 / 4 * 1.1
    ids = torch.tensor([base.prompt_ids(QUESTION)])
    with torch.no_grad():
        full, small = base.model(ids).logits[0, -1], q.model(ids).logits[0, -1].float()
    assert torch.corrcoef(torch.stack([full, small]))[0, 1] > 0.99
    assert len(q.generate([QUESTION] * 3, 4)) == 3


def test_a_model_and_method_is_quantized_once():
    base = tiny()
    assert qz.quantize(base, "int8") is qz.quantize(base, "int8")
    assert qz.quantize(base, "bf16") is not qz.quantize(base, "int8")
    assert qz.quantize(tiny(), "int8") is not qz.quantize(base, "int8")


def test_only_a_local_transformers_model_can_be_quantized():
    with pytest.raises(TunewiseError, match=r"cannot quantize 'fake'.*this one is a FakeModel"):
        qz.quantize(FakeModel(["x"]), "int8")
    with pytest.raises(TunewiseError, match=r"unknown quantization method 'int4'; valid: bf16, int8, int8_weight, int8_cuda, nf4, gguf"):
        qz.quantize(tiny(), "int4")


def test_weight_bytes_counts_a_tied_weight_once():
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    untied = qz.weight_bytes(model)
    model.lm_head.weight = model.model.embed_tokens.weight
    assert qz.weight_bytes(model) == untied - model.lm_head.weight.numel() * 4


# -- why a method cannot run here -------------------------------------------------------------------


def test_unavailable_reasons_name_what_is_missing_and_the_fix(monkeypatch):
    monkeypatch.setattr(qz, "_cuda", lambda: False)
    why = qz.method_unavailable("nf4", "embedded")
    assert "needs a CUDA GPU and the bitsandbytes package; missing: a CUDA GPU" in why and "pip install bitsandbytes" in why
    assert qz.method_unavailable("int8", "embedded") is None and qz.method_unavailable("bf16", "embedded") is None
    monkeypatch.setattr(qz, "_cuda", lambda: True)
    monkeypatch.setattr(qz, "_has", lambda module: module != "bitsandbytes")
    assert qz.method_unavailable("int8_cuda", "embedded").endswith(
        "missing: the bitsandbytes package: run it on a CUDA machine with `pip install bitsandbytes`, or measure quantized_int8 / quantized_bf16 on CPU"
    )
    assert "runs on CPU only, and this model runs on the CUDA GPU: measure quantized_int8_cuda" in qz.method_unavailable("int8", "embedded")
    monkeypatch.setattr(qz, "_has", lambda module: True)
    assert qz.method_unavailable("nf4", "embedded") is None
    assert "is not a GGUF model" in qz.method_unavailable("gguf", "HuggingFaceTB/SmolLM2-360M")
    assert qz.method_unavailable("gguf", "embedded") is None
    monkeypatch.setattr(qz, "_has", lambda module: module != "llama_cpp")
    assert "llama-cpp-python is not installed: `pip install llama-cpp-python`" in qz.method_unavailable("gguf", "embedded")
    assert "reached over HTTP" in qz.method_unavailable("bf16", "gpt-4o-mini", endpoint=True)
    assert "engine is vllm" in qz.method_unavailable("bf16", "embedded", engine="vllm")


def test_the_rungs_say_why_they_are_skipped_on_this_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(qz, "_cuda", lambda: False)
    task = make_task(tmp_path, "embedded", ["zero_shot"])
    assert get_rung("quantized_nf4").why_not(task, has_corpus=False).startswith("bitsandbytes quantization needs a CUDA GPU")
    assert get_rung("quantized_int8").why_not(task, has_corpus=False) is None
    rag = make_task(tmp_path, "embedded", ["zero_shot"], quantize={"prompt": "rag"})
    assert "needs a knowledge corpus" in get_rung("quantized_int8").why_not(rag, has_corpus=False)
    api = parse_task({"name": "q", "data": {"train": "a.jsonl", "eval": "b.jsonl"}, "model": "openai:gpt-4o-mini"})
    assert "reached over HTTP" in get_rung("quantized_bf16").why_not(api, has_corpus=False)


def test_every_quantized_rung_is_registered_opt_in_and_measures_the_quantize_advice():
    names = [n for n in RUNGS if n.startswith("quantized_")]
    assert names == ["quantized_bf16", "quantized_int8", "quantized_int8_weight", "quantized_int8_cuda", "quantized_nf4", "quantized_gguf"]
    assert all(RUNGS[n].opt_in and RUNGS[n].approaches == ("quantize_distil",) and RUNGS[n].facts for n in names)


def test_the_prompt_is_validated_and_names_the_choices(tmp_path):
    with pytest.raises(TaskError, match=r"ladder.quantize.prompt.*'zero_shot', 'few_shot', 'rag' or 'few_shot_rag'"):
        make_task(tmp_path, "embedded", ["zero_shot"], quantize={"prompt": "lora"})
    task = make_task(tmp_path, "embedded", ["zero_shot"], quantize={"prompt": "few_shot"}, few_shot={"k": 2, "selection": "fixed"})
    assert get_rung("quantized_int8").title(task) == "Few-shot (k=2, fixed), int8 dynamic (torch)"


# -- throughput -------------------------------------------------------------------------------------


def test_batch_throughput_counts_each_batch_once():
    batch = [{"output_tokens": 4, "latency_s": 2.0}] * 8  # one batch of 8 answers, 2 s
    alone = [{"output_tokens": 4, "latency_s": 0.5}, {"output_tokens": 2, "latency_s": 0.25}]
    assert batch_throughput(batch) == (16.0, 4.0)
    assert batch_throughput(alone) == (8.0, pytest.approx(2 / 0.75))
    assert batch_throughput([]) is None


@pytest.mark.parametrize(
    "mine, theirs, words",
    [
        ([0] * 20 + [1] * 20, [1] * 40, "-0.500 ["),  # 20 answers lost, none gained
        ([0] * 20 + [1] * 20, [1] * 40, "(significantly worse at alpha 0.05;"),
        ([0] + [1] * 39, [1] * 40, "(worse, not significant at alpha 0.05;"),
        ([1] * 40, [0] + [1] * 39, "(better, not significant at alpha 0.05;"),
        ([1] * 40, [1] * 40, "(no change;"),
    ],
)
def test_the_quality_change_is_a_paired_test_in_words(tmp_path, mine, theirs, words):
    from tunewise.rungs.quantized import quality_change

    task = make_task(tmp_path, "embedded", ["zero_shot"])
    ctx = types.SimpleNamespace(task=task, seed=0, eval=[])
    change = quality_change(ctx, [{"score": s} for s in mine], [{"score": s} for s in theirs], "zero_shot")
    assert words in change["text"] and "mcnemar" in change["text"] and "40 examples" in change["text"]
    assert change["value"] == pytest.approx((sum(mine) - sum(theirs)) / 40)


# -- the ladder, the report and serve ---------------------------------------------------------------


def test_run_ladder_measures_the_quantized_rungs_against_the_unquantized_prompt(tmp_path, tiny_dir, monkeypatch):
    monkeypatch.setattr(qz, "_cuda", lambda: False)
    rungs = ["zero_shot", "quantized_bf16", "quantized_int8", "quantized_nf4"]
    task = make_task(tmp_path, str(tiny_dir), rungs, batch_size=1)
    results = run_ladder(task, RunOptions(rungs=rungs, out_dir=tmp_path / "runs", all_rungs=True, full=True), log=lambda m: None)
    run_dir = tmp_path / "runs" / results.run_id
    by = {r.name: r for r in results.rungs}
    assert [r.name for r in results.rungs] == rungs
    assert by["quantized_nf4"].status == "skipped" and "needs a CUDA GPU" in by["quantized_nf4"].note
    saved = {n: [json.loads(line) for line in (run_dir / "predictions" / f"{n}.jsonl").read_text().splitlines()] for n in rungs[:3]}
    for name in ("quantized_bf16", "quantized_int8"):
        r = by[name]
        assert r.status == "done" and r.latency_p50_s is not None and r.p_value_vs_zero_shot is not None
        facts = r.facts
        assert set(facts) == {"weights_mb", "throughput", "quality_change", "agreement", "speedup"}
        same = sum(a["prediction"] == b["prediction"] for a, b in zip(saved[name], saved["zero_shot"]))
        assert facts["agreement"].value == pytest.approx(same / 16, abs=1e-4)
        diff = sum(a["score"] - b["score"] for a, b in zip(saved[name], saved["zero_shot"])) / 16
        assert facts["quality_change"].value == pytest.approx(diff, abs=1e-4)
        assert "against zero_shot unquantized" in facts["quality_change"].text and "16 examples" in facts["quality_change"].text
        tokens = sum(row["output_tokens"] for row in saved[name])
        assert facts["throughput"].value == pytest.approx(tokens / sum(row["latency_s"] for row in saved[name]), rel=1e-3)
        assert r.model == tiny_dir.name
    assert by["quantized_int8"].facts["weights_mb"].value < by["quantized_bf16"].facts["weights_mb"].value
    assert "unquantized (0.50x)" in by["quantized_bf16"].facts["weights_mb"].text  # half, but for the fp32 rotary buffer
    # results.json, the report and the CLI table carry the facts.
    stored = json.loads((run_dir / "results.json").read_text())
    assert next(r for r in stored["rungs"] if r["name"] == "quantized_int8")["facts"]["quality_change"]["value"] == pytest.approx(
        by["quantized_int8"].facts["quality_change"].value)
    report = (run_dir / "report.md").read_text()
    assert by["quantized_int8"].facts["weights_mb"].text in report and "Zero-shot prompt, int8 dynamic (torch)" in report

    # tunewise serve: the quantized rung from the run folder answers as the ladder did (batches of
    # one, so int8's per-batch activation scales match too).
    from tunewise.serve.config import load_runs

    for name in ("quantized_int8", "quantized_bf16"):
        config = load_runs([run_dir], rung=name, log=lambda m: None)["quant"]
        assert config.prepared.model.quantization.method == name.removeprefix("quantized_")
        for row in saved[name][:4]:
            served = config.prepared.model.generate([config.prepared.build([{"role": "user", "content": row["input"]}]).messages], 4)[0]
            assert served.text == row["prediction"], (name, row["input"])


def test_without_the_unquantized_rung_first_the_fact_says_what_to_list(tmp_path, tiny_dir):
    task = make_task(tmp_path, str(tiny_dir), ["quantized_int8", "zero_shot"])
    results = run_ladder(task, RunOptions(rungs=task.ladder.rungs, out_dir=tmp_path / "runs", all_rungs=True, full=True, evidence=False, report=False),
                         log=lambda m: None)
    facts = results.rung("quantized_int8").facts
    assert facts["quality_change"].value is None
    assert facts["quality_change"].text.endswith("list zero_shot before quantized_int8")
    assert "agreement" not in facts and facts["weights_mb"].value > 0


def test_a_fake_model_cannot_be_quantized_and_the_run_says_so(tmp_path):
    task = make_task(tmp_path, "embedded", ["zero_shot", "quantized_int8"])
    with pytest.raises(TunewiseError, match="this one is a FakeModel"):
        run_ladder(task, RunOptions(rungs=task.ladder.rungs, model=FakeModel(respond=lambda m: "moo"), out_dir=tmp_path / "runs", all_rungs=True,
                                    evidence=False, report=False), log=lambda m: None)


# -- GGUF through llama.cpp (a fake llama here; the real one in the slow test when installed) ---------


class FakeLlama:
    """llama_cpp.Llama's `generate` and `n_ctx`: yields `script` after recording the prompt."""

    def __init__(self, script, context=64):
        self.script, self.context, self.prompts = script, context, []

    def n_ctx(self):
        return self.context

    def generate(self, tokens, **sampling):
        assert sampling["top_k"] == 1 and sampling["temp"] == 0.0 and sampling["repeat_penalty"] == 1.0  # greedy
        self.prompts.append(list(tokens))
        yield from self.script


def test_llama_cpp_model_feeds_the_transformers_prompt_and_stops_at_end_of_turn(tmp_path):
    base = tiny()
    tok = base.tokenizer
    moo, eos = tok.convert_tokens_to_ids("moo"), base.eos_ids[0]
    llama = FakeLlama([moo, moo, eos, moo])
    model = LlamaCppModel(tmp_path / "m.gguf", tok, "gguf", eos_ids=base.eos_ids, llama=llama)
    out = model.generate([QUESTION], max_new_tokens=8)[0]
    assert llama.prompts == [base.prompt_ids(QUESTION)]
    assert (out.text, out.output_tokens, out.prompt_tokens) == ("moo moo", 2, len(base.prompt_ids(QUESTION)))
    assert model.generate([QUESTION], max_new_tokens=1)[0].text == "moo"
    prompt = len(base.prompt_ids(QUESTION))
    with pytest.raises(TunewiseError, match=rf"a prompt of {prompt} tokens \+ 4 new tokens exceeds llama.cpp.s context of 8 tokens"):
        LlamaCppModel(tmp_path / "m.gguf", tok, "gguf", eos_ids=base.eos_ids, llama=FakeLlama([], context=8)).generate([QUESTION], 4)


def test_gguf_needs_a_model_loaded_from_a_gguf(monkeypatch):
    monkeypatch.setattr(qz, "_has", lambda module: True)
    monkeypatch.setitem(sys.modules, "llama_cpp", types.ModuleType("llama_cpp"))
    with pytest.raises(TunewiseError, match=r"was not loaded from a GGUF file"):
        qz.quantize(tiny(), "gguf")


# -- the real embedded model --------------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_model_quantized_on_a_few_intent_examples(tmp_path):
    from tunewise.task import load_task

    task = load_task(EXAMPLES / "intent" / "task.yaml")
    ladder = task.ladder.model_copy(update={"quantize": task.ladder.quantize.model_copy(update={"prompt": "few_shot"}),
                                            "latency_requests": 2})
    task = task.model_copy(update={"ladder": ladder, "model_options": task.model_options.model_copy(update={"bf16": "off"})})
    rungs = ["few_shot", "quantized_bf16", "quantized_int8", "quantized_int8_weight"] + (["quantized_gguf"] if qz._has("llama_cpp") else [])
    results = run_ladder(task, RunOptions(rungs=rungs, all_rungs=True, full=True, eval_limit=8, evidence=False,
                                          report=False, out_dir=tmp_path / "runs"), log=lambda m: None)
    by = {r.name: r for r in results.rungs}
    assert all(by[n].status == "done" for n in rungs), [(r.name, r.note) for r in results.rungs]
    base_mb = 134_515_008 * 4 / 1e6  # SmolLM2-135M: its parameters in fp32
    bf16, int8, weight_only = (by[f"quantized_{m}"].facts for m in ("bf16", "int8", "int8_weight"))
    assert bf16["weights_mb"].value == pytest.approx(base_mb / 2, rel=0.01)
    # int8: the 30 decoder layers' linears shrink 4x; the embedding (tied to the head) stays fp32,
    # or bf16 under weight-only int8.
    assert 0.35 * base_mb < int8["weights_mb"].value < 0.45 * base_mb
    assert 0.25 * base_mb < weight_only["weights_mb"].value < 0.35 * base_mb
    for facts in (bf16, int8, weight_only):
        assert 0 <= facts["agreement"].value <= 1
        assert facts["quality_change"].value is not None and facts["throughput"].value > 0
    assert by["few_shot"].score.value > 0  # the few-shot prompt answers labels: the comparison means something
    # Weights-only rounding keeps most answers (dynamic int8, which rounds activations too, need not).
    assert bf16["agreement"].value >= 0.5 and weight_only["agreement"].value >= 0.5
