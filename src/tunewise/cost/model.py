"""The cost model: what a request, a month and a training run cost, and where fine-tuning pays off.

Pure functions on plain numbers and `tunewise.task.Pricing`; no model, no torch. Every formula is
written out in docs/cost.md.

>>> from tunewise.task import Pricing
>>> round(request_cost(1_000, 100, Pricing()), 6)  # 1000 x $0.15/1M + 100 x $0.60/1M
0.00021
>>> break_even_calls_per_month(0, 0.002, 30, 0.001, 12)  # 30 / (12 x 0.001)
2500.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tunewise.data.example import Example
from tunewise.data.tokens import MESSAGE_OVERHEAD, REPLY_OVERHEAD
from tunewise.errors import TunewiseError
from tunewise.cost.pricing import Pricing

if TYPE_CHECKING:
    from tunewise.task import Task

PREFILL_WEIGHT = 0.2
"""Self-hosting: a prompt token costs this share of an output token's GPU time. Prefill handles the
whole prompt in parallel (compute-bound) while decoding makes one token per step per sequence
(memory-bound); batched servers typically prefill 5x or more tokens per second than they decode.
Pass `prefill_weight=1.0` to count every token alike."""

SECONDS_PER_HOUR = 3600
HOURS_PER_MONTH = 730  # 365 x 24 / 12: what one always-on GPU costs a month is gpu_hourly x this


def _check(**values: float | None) -> None:
    """Every value must be a finite number >= 0; all bad ones are named in one error."""
    bad = [
        f"{name}={value!r}"
        for name, value in values.items()
        if value is None or isinstance(value, bool) or not math.isfinite(value) or value < 0
    ]
    if bad:
        raise TunewiseError(f"cost inputs must be finite numbers >= 0; got {', '.join(bad)}")


def _check_horizon(horizon_months: float) -> None:
    if isinstance(horizon_months, bool) or not math.isfinite(horizon_months) or horizon_months <= 0:
        raise TunewiseError(f"horizon_months must be > 0 (months to amortise training over); got {horizon_months!r}")


# -- per request ----------------------------------------------------------------------------------


def approach_prompt_tokens(
    system_tokens: float,
    user_tokens: float,
    few_shot_k: int = 0,
    example_tokens: float = 0,
    retrieved_k: int = 0,
    chunk_tokens: float = 0,
    *,
    tokens_per_message: float = 0,
    reply_tokens: float = 0,
) -> float:
    """Tokens one prompt costs: system + user turn + k shown examples + retrieved chunks.

    Each shown example is a user and an assistant message; retrieved chunks go inside the user
    message. `tokens_per_message` adds the chat template's overhead per message and `reply_tokens`
    the tokens that prime the reply (`estimate` uses tunewise.data.tokens' 3 and 3).

    >>> approach_prompt_tokens(50, 20, few_shot_k=4, example_tokens=25)
    170
    >>> approach_prompt_tokens(50, 20, retrieved_k=3, chunk_tokens=200, tokens_per_message=3, reply_tokens=3)
    679
    """
    _check(
        system_tokens=system_tokens,
        user_tokens=user_tokens,
        few_shot_k=few_shot_k,
        example_tokens=example_tokens,
        retrieved_k=retrieved_k,
        chunk_tokens=chunk_tokens,
        tokens_per_message=tokens_per_message,
        reply_tokens=reply_tokens,
    )
    messages = (1 if system_tokens else 0) + 1 + 2 * few_shot_k
    content = system_tokens + user_tokens + few_shot_k * example_tokens + retrieved_k * chunk_tokens
    return content + messages * tokens_per_message + reply_tokens


def request_cost(
    prompt_tokens: float,
    output_tokens: float,
    pricing: Pricing,
    finetuned: bool = False,
    prefill_weight: float = PREFILL_WEIGHT,
) -> float:
    """$ for one request.

    Hosted: prompt x input price/1e6 + output x output price/1e6, at the fine-tuned prices when
    `finetuned` (each falls back to the base price when unset).
    Self-hosted (`pricing.self_hosted`): GPU time on a saturated GPU billed by the hour,
    (prefill_weight x prompt + output) / gpu_inference_tokens_per_s / 3600 x gpu_hourly; a LoRA
    adapter is served on the same GPU, so fine-tuned requests cost the same.

    >>> request_cost(1_000, 100, Pricing(), finetuned=True)  # 1000 x 0.30/1M + 100 x 1.20/1M
    0.00042
    """
    _check(prompt_tokens=prompt_tokens, output_tokens=output_tokens, prefill_weight=prefill_weight)
    if pricing.self_hosted:
        if pricing.measured_throughput:
            raise TunewiseError("gpu_inference_tokens_per_s is `measured`: price with pricing.with_throughput(rate) "
                                "once the rate is measured (a run measures it for each candidate)")
        gpu_seconds = (prefill_weight * prompt_tokens + output_tokens) / pricing.gpu_inference_tokens_per_s
        return gpu_seconds / SECONDS_PER_HOUR * pricing.gpu_hourly
    input_price, output_price = pricing.input_per_1m, pricing.output_per_1m
    if finetuned:
        if pricing.finetuned_input_per_1m is not None:
            input_price = pricing.finetuned_input_per_1m
        if pricing.finetuned_output_per_1m is not None:
            output_price = pricing.finetuned_output_per_1m
    return (prompt_tokens * input_price + output_tokens * output_price) / 1e6


# -- training -------------------------------------------------------------------------------------


# OpenAI's default n_epochs rule, from the cookbook notebook "Data preparation and analysis for chat
# model fine-tuning": aim for 3 epochs, but keep n_examples x n_epochs within [100, 25000].
TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES = 3, 100, 25_000
MIN_DEFAULT_EPOCHS, MAX_DEFAULT_EPOCHS = 1, 25


def default_epochs(n_examples: int) -> int:
    """OpenAI's default epoch count: 3, raised so that small sets see at least 100 example passes
    (ceil(100 / n), at most 25 epochs), lowered so that large sets see at most 25,000
    (floor(25000 / n), at least 1 epoch).

    >>> [default_epochs(n) for n in (10, 33, 34, 500, 8333, 8334, 30000)]
    [10, 4, 3, 3, 3, 2, 1]
    """
    if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 1:
        raise TunewiseError(f"default_epochs needs at least 1 training example; got n_examples={n_examples!r}")
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n_examples))
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, math.floor(MAX_TARGET_EXAMPLES / n_examples))
    return TARGET_EPOCHS


def training_time_s(tokens: float, epochs: float, tokens_per_s: float) -> float:
    """Seconds to train `epochs` passes over `tokens` at a measured or assumed throughput."""
    _check(tokens=tokens, epochs=epochs)
    if not tokens_per_s > 0:
        raise TunewiseError(f"tokens_per_s must be > 0; got {tokens_per_s!r}")
    return tokens * epochs / tokens_per_s


def hosted_training_cost(tokens_per_epoch: float, epochs: float, price_per_1m: float) -> float:
    """$ a provider bills for fine-tuning: every token of the training file, each epoch.

    >>> round(hosted_training_cost(100_000, 3, 3.00), 6)  # 300,000 tokens x $3 / 1M
    0.9
    """
    _check(tokens_per_epoch=tokens_per_epoch, epochs=epochs, price_per_1m=price_per_1m)
    return price_per_1m * tokens_per_epoch * epochs / 1e6


def gpu_training_cost(gpu_seconds: float, pricing: Pricing) -> float | None:
    """$ for `gpu_seconds` of GPU time at `pricing.gpu_hourly`; None when no GPU price is set.

    >>> gpu_training_cost(60, Pricing(gpu_hourly=2.4))  # 1/60 h x $2.4
    0.04
    """
    _check(gpu_seconds=gpu_seconds)
    if pricing.gpu_hourly is None:
        return None
    return gpu_seconds / SECONDS_PER_HOUR * pricing.gpu_hourly


def training_priced(pricing: Pricing) -> bool:
    """Whether `pricing` prices a fine-tune at all (a hosted training price or a GPU hourly price).

    When it does not, `training_cost` and `charged_training_cost` return 0.0: use this to tell an
    unpriced fine-tune from a free one.
    """
    return pricing.training_per_1m is not None or pricing.gpu_hourly is not None


def training_costs(
    tokens_per_epoch: float, epochs: float, pricing: Pricing, gpu_seconds: float | None = None
) -> tuple[float | None, float | None]:
    """(GPU $, hosted $) for one training run; each None where its price is unset.

    GPU: `gpu_seconds` when measured (wall time on a GPU), else tokens x epochs at the assumed
    pricing.gpu_training_tokens_per_s. Hosted: training_per_1m x tokens x epochs / 1e6.
    """
    _check(tokens_per_epoch=tokens_per_epoch, epochs=epochs)
    gpu = None
    if pricing.gpu_hourly is not None:
        if gpu_seconds is None:
            gpu_seconds = training_time_s(tokens_per_epoch, epochs, pricing.gpu_training_tokens_per_s)
        gpu = gpu_training_cost(gpu_seconds, pricing)
    hosted = None
    if pricing.training_per_1m is not None:
        hosted = hosted_training_cost(tokens_per_epoch, epochs, pricing.training_per_1m)
    return gpu, hosted


def charged_training_cost(pricing: Pricing, gpu_cost: float | None, hosted_cost: float | None) -> float:
    """The one-off cost a fine-tuned approach is charged, from the two figures of `training_costs`:
    the GPU cost when self-hosting, else the hosted cost, else the GPU cost; 0.0 when neither is
    priced (see `training_priced`), so a run without a training price never fails on it.

    >>> charged_training_cost(Pricing(), None, 0.9), charged_training_cost(Pricing(training_per_1m=None), None, None)
    (0.9, 0.0)
    """
    if pricing.self_hosted and gpu_cost is not None:
        return gpu_cost
    if hosted_cost is not None:
        return hosted_cost
    return gpu_cost if gpu_cost is not None else 0.0


def training_cost(
    train_tokens_per_epoch: float, epochs: float, pricing: Pricing, gpu_seconds: float | None = None
) -> float:
    """$ to fine-tune once: `charged_training_cost` of `training_costs`.

    Self-hosted: GPU hours (measured `gpu_seconds`, else tokens at gpu_training_tokens_per_s) x
    gpu_hourly. Hosted: training_per_1m x tokens x epochs / 1e6 (OpenAI bills every token of the
    training file, each epoch); with no hosted training price but a gpu_hourly, the GPU formula.
    With neither, 0.0: `training_priced(pricing)` is False.
    """
    return charged_training_cost(pricing, *training_costs(train_tokens_per_epoch, epochs, pricing, gpu_seconds))


# -- per month, over a horizon, break-even ---------------------------------------------------------


def monthly_cost(cost_per_request: float, calls_per_month: float) -> float:
    _check(cost_per_request=cost_per_request, calls_per_month=calls_per_month)
    return cost_per_request * calls_per_month


def horizon_cost(upfront: float, monthly: float, months: float) -> float:
    """Total over the horizon: the one-off cost plus every month's running cost."""
    _check(upfront=upfront, monthly=monthly)
    _check_horizon(months)
    return upfront + monthly * months


def break_even_calls_per_month(
    upfront_a: float, per_call_a: float, upfront_b: float, per_call_b: float, horizon_months: float
) -> float | None:
    """Monthly volume above which the option with the higher upfront cost (the investment, e.g. a
    fine-tune) is cheaper over the horizon.

    Totals over H months are upfront + H x calls x per_call; they are equal at
        calls = (upfront_b - upfront_a) / (H x (per_call_a - per_call_b)).
    Returns None when the investment is never cheaper per call (it never pays off), and 0.0 when
    both cost the same up front and one is cheaper per call (it wins at every volume).

    >>> break_even_calls_per_month(0, 0.002, 30, 0.001, 12)   # 30 / (12 x 0.001)
    2500.0
    >>> break_even_calls_per_month(0, 0.001, 30, 0.002, 12) is None
    True
    """
    _check(upfront_a=upfront_a, per_call_a=per_call_a, upfront_b=upfront_b, per_call_b=per_call_b)
    _check_horizon(horizon_months)
    if per_call_a == per_call_b:
        return None
    if upfront_a == upfront_b:
        return 0.0
    if upfront_a > upfront_b:  # name the investment b
        upfront_a, per_call_a, upfront_b, per_call_b = upfront_b, per_call_b, upfront_a, per_call_a
    if per_call_b > per_call_a:
        return None
    return (upfront_b - upfront_a) / (horizon_months * (per_call_a - per_call_b))


def amortised_monthly_cost(upfront: float, per_call: float, calls_per_month: float, horizon_months: float) -> float:
    """Monthly cost with the one-off cost spread over the horizon: per_call x calls + upfront / H.

    >>> amortised_monthly_cost(120, 0.01, 1000, 12)
    20.0
    """
    _check(upfront=upfront, per_call=per_call, calls_per_month=calls_per_month)
    _check_horizon(horizon_months)
    return per_call * calls_per_month + upfront / horizon_months


def cost_curve(upfront: float, per_call: float, volumes: Iterable[float], horizon_months: float) -> list[float]:
    """`amortised_monthly_cost` at each volume (for plots: the curves cross at the break-even volume).

    >>> cost_curve(120, 0.01, [0, 1000], 12)
    [10.0, 20.0]
    """
    _check(upfront=upfront, per_call=per_call)
    _check_horizon(horizon_months)
    out = []
    for volume in volumes:
        _check(volume=volume)
        out.append(amortised_monthly_cost(upfront, per_call, volume, horizon_months))
    return out


# -- the approaches side by side ----------------------------------------------------------------


@dataclass
class Workload:
    """What a request and a training run look like, in tokens (means), plus the business figures.

    Build it by hand, or measure it from a task's data with `measure_task`.
    """

    system_tokens: float = 50
    """The system prompt."""
    input_tokens: float = 60
    """The user's message(s) in one request."""
    output_tokens: float = 20
    """The answer."""
    train_examples: int = 500
    """Examples a fine-tune trains on."""
    few_shot_k: int = 5
    """Examples shown by few-shot prompting; 0 leaves few-shot out."""
    example_tokens: float | None = None
    """One shown example (its user turn and answer); None: input_tokens + output_tokens."""
    rag_k: int = 3
    """Chunks retrieved into the prompt; 0 leaves the RAG approaches out."""
    chunk_tokens: float = 270
    """One retrieved chunk (200 words is about 270 tokens)."""
    train_tokens_per_example: float | None = None
    """Tokens one training example is billed for; None: system + input + output + template tokens."""
    epochs: int | None = None
    """Training epochs; None: `default_epochs(train_examples)`."""
    calls_per_month: float = 10_000
    horizon_months: float = 12
    """Months over which the one-off training cost is amortised."""
    pricing: Pricing = field(default_factory=Pricing)

    def validate(self) -> None:
        """Raise one TunewiseError naming every bad field and its value."""
        problems = []
        for name in ("system_tokens", "input_tokens", "output_tokens", "chunk_tokens", "calls_per_month"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                problems.append(f"{name} must be a number >= 0 (got {value!r})")
        for name in ("example_tokens", "train_tokens_per_example"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                problems.append(f"{name} must be a number >= 0 (got {value!r})")
        for name in ("few_shot_k", "rag_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                problems.append(f"{name} must be a whole number >= 0 (got {value!r}); 0 leaves the approach out")
        if not isinstance(self.train_examples, int) or self.train_examples < 1:
            problems.append(f"train_examples must be at least 1 to estimate fine-tuning (got {self.train_examples!r})")
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            problems.append(f"epochs must be a whole number >= 1 (got {self.epochs!r})")
        if not isinstance(self.horizon_months, (int, float)) or not self.horizon_months > 0:
            problems.append(f"horizon_months must be > 0 (got {self.horizon_months!r})")
        if not training_priced(self.pricing):
            # A run charges an unpriced fine-tune 0.0 and goes on; an estimate exists to say where
            # fine-tuning pays off, which it cannot say without a price.
            problems.append(
                "pricing has no training price: set training_per_1m (hosted fine-tuning) or gpu_hourly (own GPU)"
            )
        if problems:
            raise TunewiseError(f"{len(problems)} problem(s) in the cost inputs:\n  " + "\n  ".join(problems))

    @property
    def resolved_example_tokens(self) -> float:
        return self.input_tokens + self.output_tokens if self.example_tokens is None else self.example_tokens

    @property
    def resolved_train_tokens_per_example(self) -> float:
        if self.train_tokens_per_example is not None:
            return self.train_tokens_per_example
        messages = (1 if self.system_tokens else 0) + 2  # system?, user, assistant
        content = self.system_tokens + self.input_tokens + self.output_tokens
        return content + messages * MESSAGE_OVERHEAD + REPLY_OVERHEAD

    @property
    def resolved_epochs(self) -> int:
        return default_epochs(self.train_examples) if self.epochs is None else self.epochs

    @property
    def train_tokens_per_epoch(self) -> float:
        return self.train_examples * self.resolved_train_tokens_per_example


@dataclass
class ApproachCost:
    """One approach's cost figures; `name` is the ladder rung it corresponds to."""

    name: str
    title: str
    finetuned: bool
    prompt_tokens: float
    output_tokens: float
    cost_per_request: float
    cost_per_1k: float
    monthly_cost: float
    upfront_cost: float
    horizon_cost: float


@dataclass
class BreakEvenPoint:
    """Where two approaches cost the same; the fields match `tunewise.ladder.results.BreakEven`."""

    cheaper_upfront: str
    cheaper_per_call: str
    calls_per_month: float | None
    sentence: str


@dataclass
class Estimate:
    workload: Workload
    epochs: int
    train_tokens_per_epoch: float
    approaches: list[ApproachCost]
    break_even: list[BreakEvenPoint]

    def approach(self, name: str) -> ApproachCost | None:
        return next((a for a in self.approaches if a.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        w = self.workload
        inputs = asdict(replace(w, pricing=None))
        # The figures actually used, not None for "derived".
        inputs.update(
            example_tokens=w.resolved_example_tokens,
            train_tokens_per_example=w.resolved_train_tokens_per_example,
            epochs=self.epochs,
        )
        inputs["pricing"] = self.workload.pricing.model_dump()
        inputs["self_hosted"] = self.workload.pricing.self_hosted
        return {
            "inputs": inputs,
            "epochs": self.epochs,
            "train_tokens_per_epoch": self.train_tokens_per_epoch,
            "approaches": [asdict(a) for a in self.approaches],
            "break_even": [asdict(b) for b in self.break_even],
        }


def approach_costs(
    name: str, title: str, prompt_tokens: float, workload: Workload, finetuned: bool, upfront: float
) -> ApproachCost:
    per_request = request_cost(prompt_tokens, workload.output_tokens, workload.pricing, finetuned=finetuned)
    monthly = monthly_cost(per_request, workload.calls_per_month)
    return ApproachCost(
        name=name,
        title=title,
        finetuned=finetuned,
        prompt_tokens=prompt_tokens,
        output_tokens=workload.output_tokens,
        cost_per_request=per_request,
        cost_per_1k=per_request * 1000,
        monthly_cost=monthly,
        upfront_cost=upfront,
        horizon_cost=horizon_cost(upfront, monthly, workload.horizon_months),
    )


def break_even(a: ApproachCost, b: ApproachCost, horizon_months: float) -> BreakEvenPoint:
    """Compare two approaches: from which monthly volume does the one that costs more up front win?

    `cheaper_upfront` is the approach with the lower one-off cost; `cheaper_per_call` is the other
    one (with equal upfront costs, the one cheaper per request). When `calls_per_month` is None it
    is not in fact cheaper per request, and never pays off.
    """
    calls = break_even_calls_per_month(a.upfront_cost, a.cost_per_request, b.upfront_cost, b.cost_per_request, horizon_months)
    if a.upfront_cost == b.upfront_cost:
        upfront, investment = (a, b) if b.cost_per_request < a.cost_per_request else (b, a)
    else:
        upfront, investment = (a, b) if a.upfront_cost < b.upfront_cost else (b, a)
    if calls is None and investment.cost_per_request == upfront.cost_per_request:
        sentence = (
            f"{investment.title} costs the same per request as {upfront.title} "
            f"(${_sig(upfront.cost_per_1k)} per 1,000), so its one-off cost never pays back"
        )
    elif calls is None:
        sentence = (
            f"{investment.title} never pays off against {upfront.title}: "
            f"${_sig(investment.cost_per_1k)} vs ${_sig(upfront.cost_per_1k)} per 1,000 requests"
        )
    elif calls == 0:
        sentence = f"{investment.title} is cheaper than {upfront.title} at every volume"
    else:
        sentence = (
            f"{investment.title} pays off against {upfront.title} above {calls:,.0f} calls/month "
            f"(over {horizon_months:g} months)"
        )
    return BreakEvenPoint(upfront.name, investment.name, calls, sentence)


def _sig(value: float) -> str:
    """Money with enough digits to compare small per-request prices."""
    return f"{value:,.2f}" if value >= 1 else f"{value:.3g}"


def estimate(workload: Workload, rungs: Iterable[Any]) -> Estimate:
    """Every rung's cost for one workload, and the break-even volumes against fine-tuning.

    `rungs` are the rung registry's entries (pass tunewise.rungs.RUNGS.values()): each
    declares its cost profile, what a request carries beside the user's turn (`shots`, `retrieved`)
    and whether it trains once up front (`trains`), and this prices it. Left out: rungs that show
    examples when few_shot_k is 0 or retrieve when rag_k is 0, and the opt-in variants (a constrained
    rung costs what its plain rung costs). Every training rung carries the one-off training cost.
    Break-even is computed for each prompted rung against each training rung that retrieves no more
    than it does (a prompted RAG rung against LoRA and against LoRA + RAG, the others against LoRA).
    """
    workload.validate()
    w = workload
    epochs = w.resolved_epochs
    upfront = training_cost(w.train_tokens_per_epoch, epochs, w.pricing)
    overhead = {"tokens_per_message": MESSAGE_OVERHEAD, "reply_tokens": REPLY_OVERHEAD}
    rows, retrieves = [], {}
    for rung in rungs:
        if rung.opt_in or (rung.shots and not w.few_shot_k) or (rung.retrieved and not w.rag_k):
            continue
        k = w.few_shot_k if rung.shots else 0
        r = w.rag_k if rung.retrieved else 0
        prompt = approach_prompt_tokens(
            w.system_tokens, w.input_tokens, k, w.resolved_example_tokens if k else 0, r, w.chunk_tokens if r else 0, **overhead
        )
        settings = ", ".join([f"k={k}"] * bool(k) + [f"RAG k={r}" if k else f"k={r}"] * bool(r))
        title = f"{rung.label} ({settings})" if settings else rung.label
        rows.append(approach_costs(rung.name, title, prompt, w, rung.trains, upfront if rung.trains else 0.0))
        retrieves[rung.name] = rung.retrieved

    pairs = [(a, b) for a in rows if not a.finetuned for b in rows if b.finetuned and (retrieves[a.name] or not retrieves[b.name])]
    points = [break_even(a, b, w.horizon_months) for a, b in pairs]
    return Estimate(w, epochs, w.train_tokens_per_epoch, rows, points)


# -- measuring a task's data -------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def workload_from_examples(
    task: Task, train: list[Example], eval: list[Example], chunk_texts: Sequence[str] = (), counter: Any = None
) -> Workload:
    """A Workload measured from a task's examples and its corpus chunks (as retrieval shows them).

    Tokens are counted with `counter` (a tunewise.data.tokens.TokenCounter); by default the
    documented estimate of about 4 characters a token, since hosted prices apply to the provider's
    tokenizer, not the local model's. Requests are represented by all examples, few-shot shots and
    training tokens by the train split. Epochs, volume, horizon and prices come from the task.
    """
    from tunewise.data.tokens import TokenCounter

    counter = counter or TokenCounter()
    if not train:
        raise TunewiseError(f"task {task.name!r}: the train split is empty; the cost of fine-tuning needs examples")
    examples = [*train, *eval]
    system = task.system_prompt or next((ex.system for ex in examples if ex.system), None) or ""
    system_tokens = counter.count(system) if system else 0

    def user_tokens(ex: Example) -> int:
        # A multi-turn request carries its earlier turns as extra messages: count their template too.
        return sum(counter.count(m["content"]) for m in ex.turns) + (len(ex.turns) - 1) * MESSAGE_OVERHEAD

    def billed_training_tokens(ex: Example) -> int:
        prompt, answer = counter.count_example(ex)
        missing_system = counter.count(system) + MESSAGE_OVERHEAD if system and not ex.system else 0
        return prompt + answer + missing_system

    chunk_tokens = [counter.count(f"[{i}] {text}") for i, text in enumerate(chunk_texts, 1)]
    business = task.business
    return Workload(
        system_tokens=system_tokens,
        input_tokens=_mean([user_tokens(ex) for ex in examples]),
        output_tokens=_mean([counter.count(ex.answer) for ex in examples]),
        train_examples=len(train),
        few_shot_k=min(task.ladder.few_shot.k, len(train)),
        example_tokens=_mean([user_tokens(ex) + counter.count(ex.answer) for ex in train]),
        rag_k=task.ladder.rag.k if chunk_tokens else 0,
        chunk_tokens=_mean(chunk_tokens) if chunk_tokens else Workload.chunk_tokens,
        train_tokens_per_example=_mean([billed_training_tokens(ex) for ex in train]),
        epochs=task.train.epochs,
        calls_per_month=business.calls_per_month,
        horizon_months=business.horizon_months,
        pricing=business.pricing.with_throughput(None),  # before a run: a `measured` rate is the default one
    )


def measure_task(task: Task) -> Workload:
    """Load a task's splits and corpus and measure its Workload (see `workload_from_examples`)."""
    from tunewise.data.splits import load_splits

    train, eval = load_splits(task)
    chunk_texts: list[str] = []
    if task.corpus is not None:
        from tunewise.retrieval.corpus import chunk_documents, load_corpus

        chunks = chunk_documents(load_corpus(task.corpus), task.ladder.rag.chunk_words)
        chunk_texts = [f"{c.title}: {c.text}" if c.title else c.text for c in chunks]
    return workload_from_examples(task, train, eval, chunk_texts)
