"""The cost model and `tunewise estimate`: every figure checked against arithmetic written out here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import EXAMPLES
from tunewise.cli import cli
from tunewise.data.tokens import MESSAGE_OVERHEAD, REPLY_OVERHEAD
from tunewise.rungs import RUNGS
from tunewise.cost import (
    Workload,
    amortised_monthly_cost,
    approach_prompt_tokens,
    break_even_calls_per_month,
    charged_training_cost,
    cost_curve,
    default_epochs,
    estimate,
    gpu_training_cost,
    horizon_cost,
    hosted_training_cost,
    lora_param_count,
    monthly_cost,
    nearest_shape,
    params_from_model_name,
    parse_param_count,
    request_cost,
    training_cost,
    training_costs,
    training_memory_gb,
    training_priced,
    training_time_estimate,
    training_time_s,
    workload_from_examples,
)
from tunewise.data.example import Example
from tunewise.errors import TunewiseError
from tunewise.task import Pricing, parse_task

GPU = dict(input_per_1m=None, output_per_1m=None, gpu_hourly=2.4)


# -- per request ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, output, pricing, finetuned, expected",
    [
        # 1000 x $0.15/1M + 100 x $0.60/1M
        (1000, 100, {}, False, 1000 * 0.15e-6 + 100 * 0.60e-6),
        # fine-tuned list prices: 1000 x $0.30/1M + 100 x $1.20/1M
        (1000, 100, {}, True, 1000 * 0.30e-6 + 100 * 1.20e-6),
        # no fine-tuned prices: fall back to the base prices
        (1000, 100, {"finetuned_input_per_1m": None, "finetuned_output_per_1m": None}, True, 0.00021),
        # only the output price set for the fine-tuned model
        (1000, 100, {"finetuned_input_per_1m": None}, True, 1000 * 0.15e-6 + 100 * 1.20e-6),
        (0, 0, {}, False, 0.0),
    ],
)
def test_request_cost_hosted(prompt, output, pricing, finetuned, expected):
    assert request_cost(prompt, output, Pricing(**pricing), finetuned=finetuned) == pytest.approx(expected)


def test_request_cost_self_hosted_weights_prefill():
    pricing = Pricing(**GPU, gpu_inference_tokens_per_s=1000)
    # (0.2 x 1000 prompt + 100 output) / 1000 tok/s = 0.3 GPU-s; 0.3 / 3600 h x $2.4 = $0.0002
    assert request_cost(1000, 100, pricing) == pytest.approx(0.0002)
    # every token alike: 1.1 GPU-s = $0.000733...
    assert request_cost(1000, 100, pricing, prefill_weight=1.0) == pytest.approx(1.1 / 3600 * 2.4)
    # a LoRA adapter runs on the same GPU: same cost
    assert request_cost(1000, 100, pricing, finetuned=True) == request_cost(1000, 100, pricing)


def test_hosted_prices_win_when_both_are_given():
    pricing = Pricing(gpu_hourly=2.4)  # hosted list prices are still set
    assert not pricing.self_hosted
    assert request_cost(1000, 0, pricing) == pytest.approx(1000 * 0.15e-6)


@pytest.mark.parametrize(
    "args, kwargs, expected",
    [
        ((50, 20), {}, 70),
        ((50, 20, 4, 25), {}, 50 + 20 + 4 * 25),
        ((50, 20), {"retrieved_k": 3, "chunk_tokens": 200}, 50 + 20 + 600),
        # messages: system, user, 2 per shot = 2 + 2 x 2 = 6, x 3 tokens, + 3 to prime the reply
        ((50, 20, 2, 10), {"tokens_per_message": 3, "reply_tokens": 3}, 50 + 20 + 20 + 6 * 3 + 3),
        # no system prompt: one message fewer
        ((0, 20), {"tokens_per_message": 3}, 20 + 1 * 3),
    ],
)
def test_approach_prompt_tokens(args, kwargs, expected):
    assert approach_prompt_tokens(*args, **kwargs) == expected


# -- training ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, epochs",
    [
        (1, 25),  # ceil(100 / 1) = 100, capped at 25
        (4, 25),  # ceil(100 / 4) = 25
        (5, 20),  # ceil(100 / 5)
        (33, 4),  # 33 x 3 = 99 < 100: ceil(100 / 33) = 4
        (34, 3),  # 34 x 3 = 102: the default
        (500, 3),
        (8333, 3),  # 24,999 <= 25,000
        (8334, 2),  # 25,002 > 25,000: floor(25000 / 8334) = 2
        (12501, 1),  # floor(1.99...) = 1
        (30000, 1),  # floor(0.83) = 0, at least 1
    ],
)
def test_default_epochs_follows_openai_rule(n, epochs):
    assert default_epochs(n) == epochs


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_default_epochs_rejects_bad_counts(bad):
    with pytest.raises(TunewiseError, match=f"n_examples={bad!r}"):
        default_epochs(bad)


def test_training_cost_hosted_and_self_hosted():
    # hosted: 100,000 tokens x 3 epochs x $3 / 1M = $0.90
    assert training_cost(100_000, 3, Pricing()) == pytest.approx(0.90)
    # own GPU: 300,000 tokens / 5,000 tok/s = 60 s = 1/60 h x $2.4 = $0.04
    assert training_cost(100_000, 3, Pricing(**GPU)) == pytest.approx(0.04)
    # hosted inference without a hosted training price: the GPU formula
    assert training_cost(100_000, 3, Pricing(training_per_1m=None, gpu_hourly=2.4)) == pytest.approx(0.04)
    # a measured GPU time replaces the assumed throughput: 120 s = 1/30 h x $2.4
    assert training_cost(100_000, 3, Pricing(**GPU), gpu_seconds=120) == pytest.approx(0.08)
    assert training_time_s(100_000, 3, 5000) == pytest.approx(60)
    with pytest.raises(TunewiseError, match="tokens_per_s must be > 0"):
        training_time_s(100, 1, 0)


# -- month, horizon, break-even -------------------------------------------------------------------------


def test_monthly_and_horizon_cost():
    assert monthly_cost(0.0003, 200_000) == pytest.approx(60.0)  # 0.0003 x 200,000
    assert horizon_cost(250.0, 60.0, 12) == pytest.approx(970.0)  # 250 + 12 x 60


def test_break_even_matches_hand_arithmetic():
    # Few-shot: no upfront, $0.002 a call. Fine-tune: $600 upfront, $0.0005 a call. Horizon 12 months.
    # calls = (600 - 0) / (12 x (0.002 - 0.0005)) = 600 / 0.018 = 33,333.33 calls/month.
    calls = break_even_calls_per_month(0, 0.002, 600, 0.0005, 12)
    assert calls == pytest.approx(33_333.333, rel=1e-6)
    # Check: both totals are $800 at that volume: 12 x 33,333.33 x 0.002 = 800 = 600 + 12 x 33,333.33 x 0.0005
    assert horizon_cost(0, calls * 0.002, 12) == pytest.approx(800)
    assert horizon_cost(600, calls * 0.0005, 12) == pytest.approx(800)
    # The order of the two options does not matter.
    assert break_even_calls_per_month(600, 0.0005, 0, 0.002, 12) == pytest.approx(calls)


@pytest.mark.parametrize(
    "args, expected",
    [
        ((0, 0.001, 600, 0.002, 12), None),  # the investment is dearer per call too: never
        ((0, 0.001, 600, 0.001, 12), None),  # same per-call cost: the upfront is never recovered
        ((100, 0.002, 100, 0.001, 12), 0.0),  # same upfront, cheaper per call: wins at every volume
        ((0, 0.002, 600, 0.001, 24), 600 / (24 * 0.001)),  # a longer horizon halves the volume needed
    ],
)
def test_break_even_edge_cases(args, expected):
    got = break_even_calls_per_month(*args)
    assert got == (None if expected is None else pytest.approx(expected))


def test_training_cost_parts_and_which_one_is_charged():
    hosted_and_gpu = Pricing(gpu_hourly=2.4)  # hosted API prices and a GPU price: not self-hosted
    gpu, hosted = training_costs(100_000, 3, hosted_and_gpu)
    assert gpu == pytest.approx(300_000 / 5000 / 3600 * 2.4) and hosted == pytest.approx(300_000 * 3.00 / 1e6)
    assert training_costs(100_000, 3, Pricing()) == (None, pytest.approx(0.90))
    assert training_costs(100_000, 3, Pricing(training_per_1m=None)) == (None, None)
    assert gpu_training_cost(90, Pricing(gpu_hourly=4.0)) == pytest.approx(0.10)
    assert gpu_training_cost(90, Pricing()) is None
    assert hosted_training_cost(1_000_000, 2, 3.0) == pytest.approx(6.0)
    # hosted API prices: the hosted training bill; self-hosted: the GPU bill
    assert charged_training_cost(hosted_and_gpu, gpu, hosted) == hosted == training_cost(100_000, 3, hosted_and_gpu)
    assert charged_training_cost(Pricing(**GPU), 0.5, 0.9) == 0.5
    assert charged_training_cost(Pricing(), 0.5, None) == 0.5  # no hosted figure: the GPU one


def test_unpriced_training_costs_nothing_and_says_so():
    # No training_per_1m and no gpu_hourly: one behaviour everywhere, 0.0 and training_priced False.
    unpriced = Pricing(training_per_1m=None)
    assert training_cost(100_000, 3, unpriced) == 0.0
    assert charged_training_cost(unpriced, None, None) == 0.0
    assert not training_priced(unpriced)
    assert training_priced(Pricing()) and training_priced(Pricing(training_per_1m=None, gpu_hourly=1.0))
    # ... but an estimate, whose point is where fine-tuning pays off, asks for a price.
    with pytest.raises(TunewiseError, match="no training price: set training_per_1m"):
        estimate(Workload(pricing=unpriced), RUNGS.values())


def test_amortised_monthly_cost_is_the_cost_curve():
    assert amortised_monthly_cost(600, 0.001, 10_000, 12) == pytest.approx(0.001 * 10_000 + 600 / 12)
    assert cost_curve(600, 0.001, [0, 10_000], 12) == [pytest.approx(50.0), pytest.approx(60.0)]
    with pytest.raises(TunewiseError, match="horizon_months must be > 0"):
        amortised_monthly_cost(1, 1, 1, 0)


def test_cost_curves_cross_at_break_even():
    calls = break_even_calls_per_month(0, 0.002, 600, 0.0005, 12)
    prompted, tuned = cost_curve(0, 0.002, [0, calls, 2 * calls], 12), cost_curve(600, 0.0005, [0, calls, 2 * calls], 12)
    assert tuned[0] == pytest.approx(50.0)  # 600 / 12 amortised, no calls
    assert prompted[1] == pytest.approx(tuned[1])
    assert prompted[0] < tuned[0] and prompted[2] > tuned[2]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: request_cost(-1, 10, Pricing()), "prompt_tokens=-1"),
        (lambda: monthly_cost(0.1, -5), "calls_per_month=-5"),
        (lambda: horizon_cost(1, 1, 0), "horizon_months must be > 0"),
        (lambda: break_even_calls_per_month(-1, 0.1, 0, 0.2, 12), "upfront_a=-1"),
        (lambda: cost_curve(0, 0.1, [10, -1], 12), "volume=-1"),
        (lambda: training_cost(float("nan"), 1, Pricing()), "tokens_per_epoch=nan"),
        (lambda: gpu_training_cost(-1, Pricing(gpu_hourly=1.0)), "gpu_seconds=-1"),
    ],
)
def test_bad_numbers_raise_clear_errors(call, match):
    with pytest.raises(TunewiseError, match=match):
        call()


# -- estimate -----------------------------------------------------------------------------------------


def hand_workload(**changes) -> Workload:
    base = dict(
        system_tokens=100,
        input_tokens=50,
        output_tokens=10,
        train_examples=1000,
        few_shot_k=4,
        example_tokens=60,
        rag_k=0,
        epochs=2,
        calls_per_month=100_000,
        horizon_months=12,
        pricing=Pricing(),
    )
    return Workload(**{**base, **changes})


def test_estimate_figures_match_hand_arithmetic():
    est = estimate(hand_workload(), RUNGS.values())
    assert [a.name for a in est.approaches] == ["zero_shot", "few_shot", "lora"]  # rag_k=0: no RAG rows
    zero, few, lora = (est.approach(n) for n in ("zero_shot", "few_shot", "lora"))
    # zero-shot prompt: 100 + 50 + 2 messages x 3 + 3 reply = 159 tokens
    assert zero.prompt_tokens == 159
    # $ = 159 x 0.15/1M + 10 x 0.60/1M = 29.85e-6; x 100,000 calls = $2.985/month
    assert zero.cost_per_request == pytest.approx(29.85e-6)
    assert zero.cost_per_1k == pytest.approx(0.02985)
    assert zero.monthly_cost == pytest.approx(2.985)
    assert zero.upfront_cost == 0 and zero.horizon_cost == pytest.approx(12 * 2.985)
    # few-shot: 100 + 50 + 4 x 60 + (1 + 1 + 8) messages x 3 + 3 = 423; 423 x 0.15/1M + 6e-6 = 69.45e-6
    assert few.prompt_tokens == 423
    assert few.monthly_cost == pytest.approx(6.945)
    # fine-tuned: 159 x 0.30/1M + 10 x 1.20/1M = 59.7e-6 -> $5.97/month
    assert lora.monthly_cost == pytest.approx(5.97)
    # training: (100 + 50 + 10 + 3 messages x 3 + 3) = 172 tokens x 1000 examples x 2 epochs = 344,000
    # tokens x $3/1M = $1.032 once
    assert est.train_tokens_per_epoch == 172_000
    assert lora.upfront_cost == pytest.approx(1.032)
    assert lora.horizon_cost == pytest.approx(1.032 + 12 * 5.97)
    # break-even few-shot vs fine-tune: 1.032 / (12 x (69.45e-6 - 59.7e-6)) = 1.032 / 1.17e-4 = 8,820.5
    points = {p.cheaper_upfront: p for p in est.break_even}
    assert points["few_shot"].cheaper_per_call == "lora"
    assert points["few_shot"].calls_per_month == pytest.approx(8820.51, rel=1e-5)
    assert "8,821 calls/month" in points["few_shot"].sentence
    # the fine-tuned model costs more per call than zero-shot: it never pays off
    assert points["zero_shot"].calls_per_month is None and "never pays off" in points["zero_shot"].sentence


def test_estimate_rag_rows_and_defaults():
    est = estimate(hand_workload(rag_k=3, chunk_tokens=200, epochs=None, few_shot_k=0), RUNGS.values())
    assert [a.name for a in est.approaches] == ["zero_shot", "rag", "lora", "lora_rag"]
    assert est.epochs == default_epochs(1000)
    rag, lora_rag = est.approach("rag"), est.approach("lora_rag")
    assert rag.prompt_tokens == 159 + 3 * 200  # chunks sit inside the user message: no extra messages
    assert lora_rag.upfront_cost == est.approach("lora").upfront_cost  # one adapter serves both
    assert {(p.cheaper_upfront, p.cheaper_per_call) for p in est.break_even} == {
        ("zero_shot", "lora"),
        ("rag", "lora"),
        ("rag", "lora_rag"),
    }
    assert json.loads(json.dumps(est.to_dict()))["approaches"][1]["name"] == "rag"


def test_workload_reports_every_problem_at_once():
    with pytest.raises(TunewiseError) as err:
        estimate(hand_workload(input_tokens=-1, few_shot_k=-2, train_examples=0, horizon_months=0), RUNGS.values())
    message = str(err.value)
    assert "4 problem(s)" in message
    for expected in ("input_tokens", "-1", "few_shot_k", "-2", "train_examples", "horizon_months"):
        assert expected in message


def test_workload_from_examples_counts_tokens():
    task = parse_task({"name": "t", "data": {"file": "x.jsonl"}, "ladder": {"few_shot": {"k": 5}}})
    system = {"role": "system", "content": "s" * 40}  # 40 chars: 10 tokens at ~4 characters a token
    train = [Example([system, {"role": "user", "content": "u" * 20}], "a" * 8) for _ in range(3)]  # 5 and 2 tokens
    eval_ = [Example([system, {"role": "user", "content": "u" * 60}], "a" * 8)]  # 15 tokens
    w = workload_from_examples(task, train, eval_, chunk_texts=["c" * 396])
    assert (w.system_tokens, w.output_tokens, w.example_tokens) == (10, 2, 7)
    assert w.input_tokens == pytest.approx((3 * 5 + 15) / 4)
    # billed per training example: (10 + 3) + (5 + 3) + 3 reply + (2 + 3) answer = 29, which is what
    # the Workload derives from its means when not measured: 10 + 5 + 2 + 3 messages x 3 + 3
    assert w.train_tokens_per_example == 29
    assert w.train_tokens_per_example == Workload(10, 5, 2).resolved_train_tokens_per_example
    assert w.few_shot_k == 3  # k=5 capped at the 3 training examples
    assert (w.rag_k, w.chunk_tokens) == (3, 100)  # "[1] " + 396 chars = 400 chars = 100 tokens
    assert (w.calls_per_month, w.epochs) == (task.business.calls_per_month, task.train.epochs)
    assert workload_from_examples(task, train, eval_).rag_k == 0  # no corpus: no RAG rows
    with pytest.raises(TunewiseError, match="train split is empty"):
        workload_from_examples(task, [], eval_)


# -- memory and time ----------------------------------------------------------------------------------


def test_full_fine_tune_memory_7b_matches_hand_arithmetic():
    m = training_memory_gb(7e9, 512, 1, "full", n_layers=32, hidden=4096)
    # 16 bytes/param: 2 (bf16 weights) + 2 (grads) + 4 (fp32 master) + 8 (Adam m, v) -> 112 GB
    assert (m["weights"], m["gradients"], m["optimizer"]) == pytest.approx((14.0, 14.0, 84.0))
    # activations: 34 bytes x 512 seq x 1 batch x 4096 hidden x 32 layers = 2,281,701,376 bytes
    assert m["activations"] == pytest.approx(2.281701376)
    assert m["total"] == pytest.approx(112 + 2.281701376)
    assert m["trainable_params"] == 7_000_000_000


def test_lora_and_qlora_memory_7b():
    lora = training_memory_gb(7e9, 512, 1, "lora", lora_params=40e6, n_layers=32, hidden=4096)
    # frozen 2 bytes x 7e9 = 14 GB, + 16 bytes x 40M trainable = 0.64 GB (0.08 + 0.08 + 0.48)
    assert (lora["weights"], lora["gradients"], lora["optimizer"]) == pytest.approx((14.08, 0.08, 0.48))
    assert lora["total"] == pytest.approx(14.64 + 2.281701376)
    qlora = training_memory_gb(7e9, 512, 1, "qlora", lora_params=40e6, n_layers=32, hidden=4096)
    # NF4 0.5 byte + double-quantised constants (8/64 + 32/(64 x 256)) / 8 = 0.015869140625 byte per param
    frozen = 7e9 * (0.5 + 0.015869140625) / 1e9
    assert qlora["weights"] == pytest.approx(frozen + 0.08)
    assert qlora["total"] == pytest.approx(frozen + 0.64 + 2.281701376)


def test_gradient_checkpointing_and_reference_shapes():
    m = training_memory_gb(7e9, 512, 1, "full", n_layers=32, hidden=4096, gradient_checkpointing=True)
    # each layer keeps its bf16 input, 2 x 512 x 4096 x 32 layers, + one layer recomputed, 34 x 512 x 4096
    assert m["activations"] == pytest.approx((2 * 512 * 4096 * 32 + 34 * 512 * 4096) / 1e9)
    assert nearest_shape(7e9).name == "Llama-2-7B"
    # without a shape the nearest reference model's is used
    assert training_memory_gb(7e9, 512, 1)["activations"] == pytest.approx(2.281701376)
    # Llama-2-7B, r=16 on all linear layers: per layer 16 x (11 x 4096 + 3 x 11008) = 1,249,280; x 32 layers
    assert lora_param_count(32, 4096, 11008, 16) == 1_249_280 * 32
    assert training_memory_gb(7e9, 512, 1, "lora")["trainable_params"] == 1_249_280 * 32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "prefix"}, "unknown method 'prefix'; valid methods: full, lora, qlora"),
        ({"seq_len": 0}, "seq_len must be >= 1"),
        ({"compute_bytes": 3}, "compute_bytes must be 2"),
    ],
)
def test_memory_bad_input(kwargs, match):
    args = {"params": 7e9, "seq_len": 512, "batch_size": 1, **kwargs}
    with pytest.raises(TunewiseError, match=match):
        training_memory_gb(**args)


def test_training_time_estimate():
    # 6 x 7e9 params x 1e6 tokens = 4.2e16 FLOPs / (312e12 x 0.4) FLOP/s = 336.5 s
    assert training_time_estimate(7e9, 1e6, 312, 0.4) == pytest.approx(4.2e16 / 1.248e14)
    for mfu in (0, 1.5):
        with pytest.raises(TunewiseError, match="mfu must be in"):
            training_time_estimate(7e9, 1e6, 312, mfu)


@pytest.mark.parametrize(
    "text, count",
    [("135M", 135_000_000), ("1.5B", 1_500_000_000), ("7b", 7_000_000_000), ("7e9", 7_000_000_000), ("7,000,000", 7_000_000), (350, 350)],
)
def test_parse_param_count(text, count):
    assert parse_param_count(text) == count


@pytest.mark.parametrize("bad", ["seven", "7X", "", "-7B", "0"])
def test_parse_param_count_rejects(bad):
    with pytest.raises(TunewiseError, match="135M, 1.5B, 7B|at least 1"):
        parse_param_count(bad)


@pytest.mark.parametrize(
    "name, params",
    [
        ("embedded", 135_000_000),
        ("meta-llama/Llama-3.1-8B-Instruct", 8_000_000_000),
        ("Qwen/Qwen2.5-0.5B-Instruct", 500_000_000),
        ("HuggingFaceTB/SmolLM2-360M", 360_000_000),
        ("openai:gpt-4o-mini", None),
    ],
)
def test_params_from_model_name(name, params):
    assert params_from_model_name(name) == params


def test_cost_core_imports_without_torch():
    code = "import sys, tunewise.cost; assert not any(m.startswith(('torch', 'transformers')) for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- CLI ----------------------------------------------------------------------------------------------

FLAGS = [
    "--system-tokens", "100", "--input-tokens", "50", "--output-tokens", "10", "--examples", "1000",
    "--few-shot-k", "4", "--example-tokens", "60", "--rag-k", "0", "--epochs", "2", "--calls-per-month", "100000",
]  # fmt: skip


def invoke(*args: str):
    return CliRunner().invoke(cli, ["estimate", *args])


def test_cli_table():
    result = invoke(*FLAGS, "--params", "7B")
    assert result.exit_code == 0, result.output
    out = result.output
    for text in ("Zero-shot", "Few-shot (k=4)", "LoRA fine-tune", "$2.98", "$1.03"):
        assert text in out
    assert "pays off against Few-shot (k=4) above 8,821 calls/month" in out
    assert "at your 100,000 calls/month it does" in out
    assert "GPU memory to fine-tune 7B params" in out and "qlora" in out
    assert "training time" in out


def test_cli_json_matches_core():
    result = invoke(*FLAGS, "--params", "7B", "--seq-len", "512", "--batch-size", "1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    core = estimate(hand_workload(), RUNGS.values())
    assert [a["monthly_cost"] for a in data["approaches"]] == pytest.approx([a.monthly_cost for a in core.approaches])
    assert data["break_even"][1]["calls_per_month"] == pytest.approx(8820.51, rel=1e-5)
    full = data["memory"]["methods"]["full"]
    assert full["total"] == pytest.approx(training_memory_gb(7e9, 512, 1, "full")["total"])
    # 172 tokens x 1000 examples x 2 epochs = 344,000 tokens; 6 x 7e9 x 344,000 FLOPs
    assert data["training_time"]["flops"] == pytest.approx(6 * 7e9 * 344_000)


def test_cli_gpu_hourly_alone_means_self_hosting():
    data = json.loads(invoke(*FLAGS, "--gpu-hourly", "2.4", "--json").output)
    assert data["inputs"]["self_hosted"] is True
    # the fine-tune's one-off: 344,000 tokens / 5,000 tok/s = 68.8 s x $2.4/h
    assert data["approaches"][-1]["upfront_cost"] == pytest.approx(68.8 / 3600 * 2.4)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--params", "seven"], "unknown parameter count 'seven'"),
        (["--input-tokens", "-5"], "-5.0 is not in the range x>=0"),
        (["--calls-per-month", "-1"], "Invalid value for '--calls-per-month'"),
        (["--examples", "0"], "Invalid value for '--examples'"),
        (["--mfu", "0"], "Invalid value for '--mfu'"),
        (["--train-price", "-3"], "Invalid value for '--train-price'"),
    ],
)
def test_cli_bad_input(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_cli_missing_task_file(tmp_path):
    result = invoke(str(tmp_path / "nope.yaml"))
    assert result.exit_code != 0 and "task file not found" in str(result.exception)


def test_cli_measures_a_task_file():
    pytest.importorskip("tunewise.data.splits", reason="tunewise.data.splits.load_splits not written yet")
    task_file = EXAMPLES / "intent" / "task.yaml"
    result = invoke(str(task_file), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    from tunewise.task import load_task

    task = load_task(task_file)
    train_lines = sum(1 for line in task.data.train.read_text().splitlines() if line.strip())
    assert data["inputs"]["train_examples"] == train_lines
    assert data["inputs"]["calls_per_month"] == task.business.calls_per_month
    assert data["inputs"]["rag_k"] == 0  # no corpus
    assert data["memory"]["params"] == 135_000_000  # the embedded model
    overridden = json.loads(invoke(str(task_file), "--calls-per-month", "5", "--json").output)
    assert overridden["inputs"]["calls_per_month"] == 5


def test_estimate_prices_any_rung_from_the_cost_profile_it_declares():
    """A rung the cost model has never heard of is priced from its declaration alone."""
    from tunewise.rungs.base import Rung

    toy = Rung("toy", "Toy", prepare=lambda ctx: None, shots=True, retrieved=True, trains=True)
    plain = Rung("plain", "Plain", prepare=lambda ctx: None)
    looks_up = Rung("looks_up", "Looks up", prepare=lambda ctx: None, retrieved=True)
    w = hand_workload(rag_k=2, chunk_tokens=100)
    est = estimate(w, [plain, looks_up, toy])
    overhead = {"tokens_per_message": MESSAGE_OVERHEAD, "reply_tokens": REPLY_OVERHEAD}
    expected = approach_prompt_tokens(w.system_tokens, w.input_tokens, w.few_shot_k, w.resolved_example_tokens, 2, 100, **overhead)
    row = est.approach("toy")
    assert row.prompt_tokens == pytest.approx(expected) and row.title == f"Toy (k={w.few_shot_k}, RAG k=2)"
    assert row.upfront_cost == pytest.approx(training_cost(w.train_tokens_per_epoch, w.resolved_epochs, w.pricing)) and row.upfront_cost > 0
    # Break-even against a fine-tune that retrieves only for prompted rungs that retrieve too.
    assert est.approach("plain").upfront_cost == 0 and [(b.cheaper_upfront, b.cheaper_per_call) for b in est.break_even] == [("looks_up", "toy")]


def test_a_measured_throughput_is_priced_only_once_measured():
    measured = Pricing(input_per_1m=None, output_per_1m=None, gpu_hourly=2.4, gpu_inference_tokens_per_s="measured")
    with pytest.raises(TunewiseError, match="`measured`: price with pricing.with_throughput"):
        request_cost(1000, 100, measured)
    at_rate = measured.with_throughput(1000.0)
    assert request_cost(1000, 100, at_rate) == pytest.approx((0.2 * 1000 + 100) / 1000 / 3600 * 2.4)
    # Before a run (estimate) nothing is measured: the default rate.
    assert measured.with_throughput(None).gpu_inference_tokens_per_s == Pricing().gpu_inference_tokens_per_s
