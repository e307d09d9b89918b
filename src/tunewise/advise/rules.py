"""The decision framework as explicit, ordered rules, and `advise(situation) -> Advice`.

How rules combine (docs/advise.md says the same):
1. Every rule whose `when(situation)` holds fires, in registry order (RULES).
2. A fired rule's `forbid` set is forbidden whoever recommends it.
3. The recommendation is the first `recommend` of a fired rule, in registry order, that no fired rule
   forbids: the registry order is the precedence. That rule's `plan` gives try-first / if-that-fails.
4. The fallback rule (R20) fires only when no other fired rule left an allowed recommendation.
5. Other allowed recommendations become `also_consider`; forbidden ones are listed as overruled.
   Risks come from every fired rule except those whose recommendation was overruled.

>>> advise(Situation(needs_fresh_facts=True, goals=["style"])).approach
<Approach.finetune_rag: 'finetune_rag'>
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from tunewise.advise.questionnaire import Situation, checklist
from tunewise.task import Change, Goal

# -- thresholds (rules of thumb; docs/advise.md gives their sources) ----------------------------

MIN_EXAMPLES = 50
"""Below this many quality examples: collect more before fine-tuning (or trusting an eval)."""
LORA_EXAMPLES = 100
"""From this many, a LoRA fine-tune is feasible."""
FULL_SFT_EXAMPLES = 1_000
"""From this many, full fine-tuning is feasible."""
BREAK_EVEN_HINT_CALLS = 10_000
"""Calls per month around which a fine-tune with a short prompt may beat long prompts on cost.
A hint only: `tunewise estimate` and `tunewise run` measure the break-even from your prices."""
TIGHT_LATENCY_MS = 500
"""A p95 budget at or under this leaves little room for retrieval and long prompts."""

STABLE = frozenset({Change.never, Change.yearly})
CHANGING = frozenset({Change.monthly, Change.weekly, Change.daily})
FREQUENT = frozenset({Change.weekly, Change.daily})
VOLUME_GOALS = frozenset({Goal.format, Goal.behaviour, Goal.cost})


class Approach(str, Enum):
    prompting = "prompting"
    few_shot = "few_shot"
    rag = "rag"
    lora = "lora"
    full_sft = "full_sft"
    finetune_rag = "finetune_rag"
    router = "router"
    collect_data = "collect_data"
    quantize_distil = "quantize_distil"
    continued_pretraining = "continued_pretraining"

    @property
    def title(self) -> str:
        return _TITLES[self]


_TITLES = {
    Approach.prompting: "Prompting",
    Approach.few_shot: "Few-shot prompting",
    Approach.rag: "RAG (retrieval-augmented generation)",
    Approach.lora: "Fine-tune (LoRA)",
    Approach.full_sft: "Full fine-tune (SFT)",
    Approach.finetune_rag: "Fine-tune (LoRA) + RAG",
    Approach.router: "Router of specialised models",
    Approach.collect_data: "Collect more data first",
    Approach.quantize_distil: "Quantize, then distil",
    Approach.continued_pretraining: "Continued pretraining",
}

FINE_TUNE_ALONE = frozenset({Approach.lora, Approach.full_sft})
ANY_FINE_TUNE = FINE_TUNE_ALONE | {Approach.finetune_rag}
# A combined approach already contains these; they are not listed again as "also consider".
PARTS = {Approach.finetune_rag: frozenset({Approach.lora, Approach.rag})}


# -- shared predicates ---------------------------------------------------------------------------


def has_examples(s: Situation, at_least: int) -> bool:
    return s.n_examples is not None and s.n_examples >= at_least


def style_need(s: Situation) -> bool:
    """Style matters: said so, or a style goal not declared uncritical."""
    return s.style_critical is True or (Goal.style in s.goals and s.style_critical is not False)


def volume_case(s: Situation) -> bool:
    """Enough examples, enough calls, stable requirements and a format/behaviour/cost goal."""
    return (
        has_examples(s, LORA_EXAMPLES)
        and s.calls_per_month is not None
        and s.calls_per_month >= BREAK_EVEN_HINT_CALLS
        and s.requirements_change in STABLE
        and bool(VOLUME_GOALS & set(s.goals))
    )


def wants_finetune(s: Situation) -> bool:
    return style_need(s) or volume_case(s)


def changing_with_corpus(s: Situation) -> bool:
    return s.requirements_change in CHANGING and s.has_corpus is True


def retrieval_need(s: Situation) -> bool:
    return s.needs_fresh_facts or Goal.knowledge in s.goals or changing_with_corpus(s)


# -- rules -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    approach: Approach
    how: str

    def to_dict(self) -> dict[str, str]:
        return {"approach": self.approach.value, "title": self.approach.title, "how": self.how}


Plan = Callable[[Situation], tuple[Step, Step | None]]


@dataclass(frozen=True)
class Rule:
    id: str
    reason: str
    """One line; every advice that this rule fires in cites it."""
    source: str
    """Where the rule of thumb comes from (docs/advise.md lists it)."""
    when: Callable[[Situation], bool]
    recommend: Approach | None = None
    forbid: frozenset[Approach] = frozenset()
    plan: Plan | None = None
    """Try first / if that fails, used when this rule decides the recommendation."""
    risks: tuple[str, ...] = ()
    fallback: bool = False
    """Fires only when no other fired rule left an allowed recommendation."""

    def __post_init__(self) -> None:
        if (self.recommend is None) != (self.plan is None):
            raise ValueError(f"rule {self.id}: give both `recommend` and `plan`, or neither")

    @property
    def effect(self) -> str:
        parts = []
        if self.recommend:
            parts.append(f"recommends {self.recommend.value}")
        if self.forbid:
            parts.append("forbids " + ", ".join(sorted(a.value for a in self.forbid)))
        return "; ".join(parts) or "adds risks"


def _rag_plan(how: str) -> Plan:
    return lambda s: (
        Step(Approach.rag, how),
        Step(
            Approach.finetune_rag,
            "fine-tune how the model uses retrieved documents (RAFT-style), keep retrieval for the facts",
        ),
    )


def _finetune_fallback(s: Situation) -> Step:
    if has_examples(s, FULL_SFT_EXAMPLES):
        return Step(Approach.full_sft, f"full fine-tuning: feasible with {s.n_examples:,} examples, more memory")
    return Step(
        Approach.collect_data,
        "more and more consistent examples; the learning curve from `tunewise run` estimates how many",
    )


FORGETTING = (
    "catastrophic forgetting: a fine-tune can lose general abilities; probe them after training "
    "(LoRA forgets less than full fine-tuning)"
)
STALE = "stale knowledge: whatever is baked into weights is out of date at the next change"

RULES: list[Rule] = [
    Rule(
        id="R01-several-tasks-need-router",
        reason="Several distinct specialised tasks: route each request to a model specialised for it, "
        "not one model for all.",
        source="Worked example in the tunewise decision framework (Foundation issue, section 4); one LoRA "
        "adapter per task on a shared base is the multi-LoRA serving pattern (S-LoRA, Sheng et al. 2023).",
        when=lambda s: s.multiple_distinct_tasks,
        recommend=Approach.router,
        plan=lambda s: (
            Step(Approach.router, "route each request (a small classifier or rules) to a prompt or RAG setup "
                 "specialised for its task; measure each task on its own"),
            Step(Approach.lora, "one LoRA adapter per task on a shared base model behind the router"),
        ),
        risks=("routing errors send requests to the wrong specialist: measure the router's accuracy on its own",),
    ),
    Rule(
        id="R02-new-language-multilingual-base-first",
        reason="A new language or modality: start from a base model that already covers it; continued "
        "pretraining only if prompting it fails.",
        source="Worked example (framework, section 4); continued pretraining for a new language, e.g. "
        "Cui et al. 2023 (Chinese LLaMA); domain-adaptive pretraining, Gururangan et al. 2020.",
        when=lambda s: s.new_language_or_modality,
        recommend=Approach.prompting,
        plan=lambda s: (
            Step(Approach.prompting, "pick a multilingual (or multimodal) base model that covers it and prompt "
                 "it, with a few examples in that language"),
            Step(Approach.continued_pretraining, "continued pretraining on unlabelled text in the language or "
                 "modality, then instruction-tune"),
        ),
        risks=(
            "continued pretraining needs a large unlabelled corpus in the language and much GPU time",
            "catastrophic forgetting: continued pretraining can erode the languages the base model knew",
        ),
    ),
    Rule(
        id="R03-smaller-faster-quantize-first",
        reason="A smaller or faster model: quantize first (GPTQ, AWQ); distil only if quality drops too far.",
        source="Worked example (framework, section 4); GPTQ (Frantar et al. 2022), AWQ (Lin et al. 2023), "
        "knowledge distillation (Hinton et al. 2015).",
        when=lambda s: s.want_smaller_faster,
        recommend=Approach.quantize_distil,
        plan=lambda s: (
            Step(Approach.quantize_distil, "quantize the current model to 4 or 8 bits (GPTQ or AWQ) and re-run "
                 "the same eval"),
            Step(Approach.quantize_distil, "distil: train a smaller model on the larger model's answers to "
                 "your inputs"),
        ),
        risks=(
            "quantization can cost accuracy, most on long or reasoning-heavy outputs: re-run the same eval",
            "distillation needs many representative inputs and a training run",
        ),
    ),
    Rule(
        id="R04-style-and-facts-need-finetune-rag",
        reason="Style or format belongs in the weights, facts that change in retrieval: combine a fine-tune "
        "with RAG.",
        source="Worked examples (framework, section 4): legal contract generator, code review assistant; "
        "RAFT (Zhang et al. 2024) trains the generator to use retrieved documents.",
        when=lambda s: wants_finetune(s) and retrieval_need(s),
        recommend=Approach.finetune_rag,
        plan=lambda s: (
            Step(Approach.finetune_rag, "LoRA on your examples for style and format; RAG over the documents "
                 "for facts, clauses and rules"),
            Step(Approach.collect_data, "sort the failures; style or format errors need more and cleaner "
                 "examples, wrong facts need better retrieval (chunking, k, hybrid search)"),
        ),
        risks=("two moving parts: check retrieval recall and the generator separately", FORGETTING),
    ),
    Rule(
        id="R05-fresh-facts-need-rag",
        reason="Facts that change after training go stale in weights: retrieve them at request time; never "
        "fine-tune alone.",
        source="Worked example (framework, section 4): needs current information -> RAG, never fine-tune "
        "alone; RAG (Lewis et al. 2020) updates knowledge by updating the index.",
        when=lambda s: s.needs_fresh_facts,
        recommend=Approach.rag,
        forbid=FINE_TUNE_ALONE,
        plan=_rag_plan("RAG over the current documents; when facts change, update the index, not the weights"),
        risks=(STALE,),
    ),
    Rule(
        id="R06-knowledge-needs-rag",
        reason="To add knowledge the model lacks, retrieval beats fine-tuning on the same facts.",
        source="Ovadia et al. 2023, Fine-Tuning or Retrieval?; Gekhman et al. 2024 (fine-tuning on new "
        "knowledge encourages hallucination).",
        when=lambda s: Goal.knowledge in s.goals,
        recommend=Approach.rag,
        plan=_rag_plan("RAG over the documents that hold the facts (hybrid BM25 + dense search)"),
        risks=("fine-tuning facts in teaches them unreliably and can raise hallucination on nearby facts",),
    ),
    Rule(
        id="R07-changing-rules-belong-in-documents",
        reason="Requirements that change monthly or faster belong in documents you edit, not in weights you "
        "retrain.",
        source="Worked examples (framework, section 4): support docs that change, coding standards that evolve.",
        when=changing_with_corpus,
        recommend=Approach.rag,
        plan=_rag_plan("RAG over the documents that hold the current rules; edit them, not the model"),
        risks=(STALE,),
    ),
    Rule(
        id="R08-under-50-examples-collect-data",
        reason=f"Fewer than {MIN_EXAMPLES} quality examples: too few to fine-tune or to measure; collect "
        "more first.",
        source="Worked example (framework, section 4); OpenAI's fine-tuning guide: gains typically from "
        "50-100 examples, start with 50 well-crafted ones.",
        when=lambda s: s.n_examples is not None and s.n_examples < MIN_EXAMPLES,
        recommend=Approach.collect_data,
        forbid=ANY_FINE_TUNE,
        plan=lambda s: (
            Step(Approach.collect_data, f"collect at least {MIN_EXAMPLES} (better {LORA_EXAMPLES}+) quality "
                 "examples; meanwhile use the ones you have as few-shot examples"),
            Step(Approach.few_shot, "if more cannot be had: a precise prompt plus the examples you have as "
                 "few-shot demonstrations"),
        ),
        risks=(
            f"overfitting: under {MIN_EXAMPLES} examples a fine-tune memorises them, and an eval set that "
            "small cannot tell approaches apart",
        ),
    ),
    Rule(
        id="R09-style-needs-finetune",
        reason="A voice or house style is hard to hold with prompts; fine-tuning learns it from examples.",
        source="Worked example (framework, section 4): marketing-copy translation in a brand voice -> "
        "fine-tune; LoRA (Hu et al. 2021).",
        when=style_need,
        recommend=Approach.lora,
        plan=lambda s: (
            Step(Approach.lora, "LoRA on examples written in the target style (1-3 epochs, early stopping)"),
            _finetune_fallback(s),
        ),
        risks=(FORGETTING,),
    ),
    Rule(
        id="R10-volume-stable-format-lora",
        reason=f"{LORA_EXAMPLES}+ examples, {BREAK_EVEN_HINT_CALLS:,}+ calls/month, stable requirements and a "
        "format, behaviour or cost goal: a LoRA with a short prompt usually wins.",
        source="Framework, section 4; LoRA (Hu et al. 2021). The ~10K calls/month break-even is a rule of "
        "thumb: `tunewise estimate` measures yours.",
        when=volume_case,
        recommend=Approach.lora,
        plan=lambda s: (
            Step(Approach.lora, "LoRA with a short prompt: at this volume usually cheaper per call and steadier "
                 "on format than long few-shot prompts"),
            _finetune_fallback(s),
        ),
        risks=(FORGETTING,),
    ),
    Rule(
        id="R11-format-few-shot-first",
        reason="For an output format or a procedure, show examples in the prompt before training anything.",
        source="In-context learning (Brown et al. 2020); the tunewise ladder climbs cheapest rung first.",
        when=lambda s: bool({Goal.format, Goal.behaviour} & set(s.goals)),
        recommend=Approach.few_shot,
        plan=lambda s: (
            Step(Approach.few_shot, "a precise instruction plus a few examples of the exact output (nearest "
                 "examples to the input work best)"),
            Step(Approach.lora, f"LoRA once you have {LORA_EXAMPLES}+ examples"),
        ),
        risks=("long few-shot prompts cost tokens and latency on every call",),
    ),
    Rule(
        id="R12-1000-examples-full-sft-option",
        reason=f"With {FULL_SFT_EXAMPLES:,}+ examples full fine-tuning is feasible and can edge out LoRA when "
        "the quality bar is demanding.",
        source="Framework, section 4 threshold; LIMA (Zhou et al. 2023) fine-tunes on 1,000 curated examples; "
        "Biderman et al. 2024, LoRA Learns Less and Forgets Less.",
        when=lambda s: has_examples(s, FULL_SFT_EXAMPLES) and wants_finetune(s),
        recommend=Approach.full_sft,
        plan=lambda s: (
            Step(Approach.full_sft, f"full fine-tuning on all {s.n_examples:,} examples"),
            Step(Approach.lora, "LoRA: most of the quality at a fraction of the memory, and less forgetting"),
        ),
        risks=("full fine-tuning needs several times LoRA's GPU memory and forgets more",),
    ),
    Rule(
        id="R13-50-to-99-examples-overfit-risk",
        reason=f"{MIN_EXAMPLES}-{LORA_EXAMPLES - 1} examples: a fine-tune is possible but overfits easily.",
        source="OpenAI's fine-tuning guide (gains from 50-100 examples); framework threshold of 100+ for LoRA.",
        when=lambda s: has_examples(s, MIN_EXAMPLES) and not has_examples(s, LORA_EXAMPLES) and wants_finetune(s),
        risks=("overfitting: use 1-3 epochs, early stopping, and read the learning curve before trusting it",),
    ),
    Rule(
        id="R14-unknown-example-count",
        reason="The number of quality examples is unknown, so no data threshold could be checked.",
        source="Framework, section 4 thresholds (50 / 100 / 1,000); `tunewise audit` counts usable examples.",
        when=lambda s: s.n_examples is None and wants_finetune(s),
        risks=(
            f"fine-tuning needs {MIN_EXAMPLES}+ (better {LORA_EXAMPLES}+) quality examples: count them with "
            "`tunewise audit DATA`",
        ),
    ),
    Rule(
        id="R15-high-volume-prompt-cost",
        reason=f"At {BREAK_EVEN_HINT_CALLS:,}+ calls/month prompt length dominates cost; the break-even is a "
        "hint, measure it.",
        source="Framework, section 4 rule of thumb (~10K calls/month); the measured break-even comes from "
        "`tunewise estimate` / `tunewise run`.",
        when=lambda s: s.calls_per_month is not None and s.calls_per_month >= BREAK_EVEN_HINT_CALLS,
        risks=(
            "cost at volume: few-shot examples and retrieved context are paid on every call; "
            "`tunewise estimate` computes your break-even",
        ),
    ),
    Rule(
        id="R16-low-volume-training-payback",
        reason=f"Under {BREAK_EVEN_HINT_CALLS:,} calls/month a training run rarely pays for itself through "
        "cheaper calls.",
        source="Framework, section 4 rule of thumb (~10K calls/month); `tunewise estimate` measures it.",
        when=lambda s: s.calls_per_month is not None and s.calls_per_month < BREAK_EVEN_HINT_CALLS
        and wants_finetune(s),
        risks=("training cost may not pay back at this volume: fine-tune for quality, not to save money",),
    ),
    Rule(
        id="R17-frequent-changes-retrain-cost",
        reason="Weekly or daily changes mean retraining and re-evaluating a fine-tune every time.",
        source="Framework, section 4: how often requirements change decides what goes in the weights.",
        when=lambda s: s.requirements_change in FREQUENT and wants_finetune(s),
        risks=("stale behaviour between retrains: keep what changes in the prompt or in retrieval",),
    ),
    Rule(
        id="R18-rag-needs-a-corpus",
        reason="Retrieval is called for but no document corpus exists yet.",
        source="RAG retrieves from documents (Lewis et al. 2020).",
        when=lambda s: retrieval_need(s) and s.has_corpus is False,
        risks=("build the corpus first: JSONL rows with id and text, or a folder of .txt/.md files",),
    ),
    Rule(
        id="R19-tight-latency-budget",
        reason=f"A p95 budget of {TIGHT_LATENCY_MS} ms or less leaves little room for retrieval and long prompts.",
        source="Engineering rule of thumb: prefill time grows with prompt length; retrieval adds a search per call.",
        when=lambda s: s.latency_budget_ms is not None and s.latency_budget_ms <= TIGHT_LATENCY_MS,
        risks=("latency: measure p95 per rung (`tunewise run` reports it); short prompts and small models help",),
    ),
    Rule(
        id="R20-default-prompting-first",
        reason="Nothing calls for more: prompt first, add few-shot examples if that falls short.",
        source="Worked example (framework, section 4): nothing special -> prompting first, then few-shot.",
        when=lambda s: True,
        recommend=Approach.prompting,
        plan=lambda s: (
            Step(Approach.prompting, "zero-shot with a clear system prompt and explicit output instructions"),
            Step(Approach.few_shot, "add a few worked examples to the prompt"),
        ),
        fallback=True,
    ),
]


def get_rule(rule_id: str) -> Rule:
    for rule in RULES:
        if rule.id == rule_id:
            return rule
    raise KeyError(f"unknown rule {rule_id!r}; rules: {', '.join(r.id for r in RULES)}")


# -- advice ------------------------------------------------------------------------------------


@dataclass
class Advice:
    approach: Approach
    decided_by: str
    """Id of the rule whose recommendation won."""
    try_first: Step
    if_that_fails: Step | None
    fired: list[Rule]
    """Every rule that fired, in registry order; the output cites each id and reason."""
    checklist: list[tuple[str, str, str]]
    """(Situation field, question, answer taken) for every question."""
    risks: list[tuple[str, str]]
    """(rule id, risk), deduplicated."""
    also_consider: list[Approach] = field(default_factory=list)
    forbidden: dict[Approach, list[str]] = field(default_factory=dict)
    """Approach -> ids of the rules that forbid it."""
    overruled: list[tuple[Approach, str, list[str]]] = field(default_factory=list)
    """(approach, recommending rule, forbidding rules) for recommendations set aside."""
    situation: Situation | None = None

    @property
    def rule_ids(self) -> list[str]:
        return [r.id for r in self.fired]

    @property
    def headline(self) -> str:
        """The recommendation in one line."""
        return f"{self.approach.title} ({self.decided_by})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "approach": self.approach.value,
            "title": self.approach.title,
            "recommendation": self.headline,
            "decided_by": self.decided_by,
            "try_first": self.try_first.to_dict(),
            "if_that_fails": self.if_that_fails.to_dict() if self.if_that_fails else None,
            "also_consider": [a.value for a in self.also_consider],
            "forbidden": {a.value: ids for a, ids in self.forbidden.items()},
            "overruled": [
                {"approach": a.value, "recommended_by": rec, "forbidden_by": by} for a, rec, by in self.overruled
            ],
            "rules": [{"id": r.id, "reason": r.reason, "effect": r.effect} for r in self.fired],
            "checklist": [{"field": f, "question": q, "answer": a} for f, q, a in self.checklist],
            "risks": [{"rule": rid, "risk": text} for rid, text in self.risks],
            "situation": self.situation.to_dict() if self.situation else None,
        }


def advise(situation: Situation) -> Advice:
    """Fire the rules on the situation and resolve them (see the module docstring)."""
    fired = [r for r in RULES if not r.fallback and r.when(situation)]
    forbidden: dict[Approach, list[str]] = {}
    for rule in fired:
        for approach in sorted(rule.forbid, key=list(Approach).index):
            forbidden.setdefault(approach, []).append(rule.id)

    allowed = [r for r in fired if r.recommend and r.recommend not in forbidden]
    if not allowed:
        fallback = next(r for r in RULES if r.fallback and r.when(situation))
        fired.append(fallback)
        allowed = [fallback]
    decider = allowed[0]
    try_first, if_that_fails = decider.plan(situation)

    chosen = decider.recommend
    covered = {chosen} | PARTS.get(chosen, frozenset())
    also = list(dict.fromkeys(r.recommend for r in allowed if r.recommend not in covered))
    overruled = [(r.recommend, r.id, forbidden[r.recommend]) for r in fired if r.recommend in forbidden]
    set_aside = {rule_id for _, rule_id, _ in overruled}
    # A risk cited by several rules is shown once, under the first; set-aside rules add none.
    risks: list[tuple[str, str]] = []
    for rule in fired:
        if rule.id in set_aside:
            continue
        risks += [(rule.id, text) for text in rule.risks if text not in {t for _, t in risks}]

    return Advice(
        approach=chosen,
        decided_by=decider.id,
        try_first=try_first,
        if_that_fails=if_that_fails,
        fired=fired,
        checklist=[(q.field, q.text, answer) for q, answer in checklist(situation)],
        risks=risks,
        also_consider=also,
        forbidden=forbidden,
        overruled=overruled,
        situation=situation,
    )
