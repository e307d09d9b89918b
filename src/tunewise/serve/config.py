"""What the server serves: finished runs turned into ready-to-generate configurations.

A `ServedConfig` is one rung of one run, prepared exactly as the ladder prepared it (same
`RUNGS[name].prepare(ctx)`, same system prompt, few-shot examples, retriever and model or
adapter). `load_runs` builds them from run folders; tests build them directly from fakes.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.rungs.base import Prepared, Request
from tunewise.models.base import ChatModel, Messages

BASE_NAME = "base"
"""Model name of the router's fallback: the base model with no configured system prompt."""
ROUTER_NAME = "router"
"""Model name that lets the router pick the configuration."""


@dataclass
class ServedConfig:
    """One configuration behind the API: a rung of a finished run, ready to generate."""

    prepared: Prepared
    """The rung's model and request builder, exactly as the ladder scored it."""
    task: str
    """The run's task name (the primary model name clients send)."""
    rung: str
    """The rung served, e.g. "few_shot"; "base" for the router's fallback."""
    max_new_tokens: int
    """Default `max_tokens` when a request gives none: the value the ladder measured with."""
    run_dir: Path | None = None
    train_inputs: list[str] = field(default_factory=list)
    """The run's training inputs: what the router compares requests with."""

    @property
    def fingerprint(self) -> str:
        """`task:rung`, returned as the response's system_fingerprint and x-tunewise-config header."""
        return f"{self.task}:{self.rung}"


def base_config(model: ChatModel, max_new_tokens: int) -> ServedConfig:
    """The plain base model: the caller's messages as they are, no configured prompt or examples."""

    def build(messages: Messages) -> Request:
        return Request([dict(m) for m in messages])

    return ServedConfig(Prepared(model, build), task=BASE_NAME, rung=BASE_NAME, max_new_tokens=max_new_tokens)


def _load_model(task: Any, trust_remote_code: bool, cache: dict[str, ChatModel]) -> ChatModel:
    """One loaded model per spec, shared by every run that names it (so their requests batch together).
    `task` is the candidate's view of its task (Task.for_model): an endpoint keeps its base_url and key."""
    spec = task.model
    if spec not in cache:
        from tunewise.models.resolve import load_model

        options = task.model_options.model_dump(exclude_none=True)
        endpoint = spec.startswith("openai:") or "base_url" in options
        if trust_remote_code and not endpoint:
            options["trust_remote_code"] = True
        cache[spec] = load_model(spec, **({k: v for k, v in options.items() if k != "engine"} if endpoint else options))
    return cache[spec]


def load_runs(
    runs: Sequence[str | Path],
    rung: str | None = None,
    *,
    with_base: bool = False,
    trust_remote_code: bool = False,
    model: ChatModel | None = None,
    embedder: object = None,
    retriever: object = None,
    log: Callable[[str], None] = print,
    share_base: bool = True,
) -> dict[str, ServedConfig]:
    """Model name -> configuration for each run folder: the run's task name and `task:rung`.

    `rung` overrides every run's decision. `with_base` adds the router's fallback under "base".
    `model`, `embedder`, `retriever` are injected into every run's context (tests); left None the
    run's own model spec is loaded once and shared between runs that name the same spec.

    LoRA runs would each load their own copy of the base model. Where that means two or more
    copies of one base (several LoRA runs, or one with the router's plain fallback), the base is
    loaded once and every adapter is added to it (serve/adapters.py); `share_base=False` keeps
    one copy per run (each adapter then merged into its copy, as the ladder measured it).
    """
    from tunewise.ladder.run import RunOptions, open_run
    from tunewise.rungs import get_rung
    from tunewise.ladder.tuning import context_for

    if rung is not None:
        get_rung(rung)  # an unknown name fails with the valid ones before anything loads
    problems: list[str] = []
    chosen: list[tuple[Path, str]] = []  # (run folder, rung)
    served_from: dict[str, Path] = {}  # task name -> run folder
    for run in runs:
        run_dir = Path(run)
        try:
            task, _, results = open_run(run_dir)  # reads config and results only: no model loads yet
        except TunewiseError as err:
            problems.append(str(err))
            continue
        name = task.candidate(rung) if rung else (results.decision.rung if results.decision else None)
        done = [r.name for r in results.rungs if r.status == "done"]
        if name is None:
            problems.append(f"{run_dir}: the run made no decision (no rung finished); rerun it with `tunewise run`")
        elif name not in done:
            problems.append(
                f"{run_dir}: rung {name!r} was not measured in this run (measured: {', '.join(done) or 'none'}); "
                f"serve a measured rung with --rung, or measure it with `tunewise run TASK --rungs {name}`"
            )
        elif task.name in (BASE_NAME, ROUTER_NAME):
            problems.append(f"{run_dir}: task name {task.name!r} is reserved for the router; rename the task")
        elif task.name in served_from:
            problems.append(
                f"{run_dir}: task {task.name!r} is already served from {served_from[task.name]}; serve one run per task name"
            )
        else:
            served_from[task.name] = run_dir
            chosen.append((run_dir, name))
    if problems:
        raise TunewiseError("cannot serve:\n  " + "\n  ".join(problems))

    models: dict[str, ChatModel] = {}
    configs: dict[str, ServedConfig] = {}
    fallback_model: ChatModel | None = None
    shared_bases = {} if model is not None or not share_base else _shared_bases(chosen, with_base, trust_remote_code, log)
    for run_dir, name in chosen:
        task, _, _ = open_run(run_dir)
        view = candidate_view(task, name)  # the candidate's own model (`models:`), else the task's
        trains = get_rung(name).trains
        if trains:
            refuse_pickled_weights(run_dir)
        shared_base = shared_bases.get(view.model)
        # A fine-tuned rung loads its own base + adapter; the plain base is loaded only when needed.
        if model is not None:
            shared = model
        elif shared_base is not None and (not trains or with_base):
            shared = shared_base.view(None)
        elif not trains or with_base:
            shared = _load_model(view, trust_remote_code, models)
        else:
            shared = None
        task, ctx, results = open_run(run_dir, RunOptions(model=shared, embedder=embedder, retriever=retriever))
        ctx = context_for(ctx.for_candidate(name), results.rung(name))  # its model; knobs chosen on dev (ladder.tune)
        task = ctx.task
        log(f"{task.name}: preparing rung {name} from {run_dir}")
        prepared = get_rung(name).prepare(ctx)
        adapter = prepared.adapter_path
        if shared_base is not None and adapter is not None and (Path(adapter) / "adapter_config.json").is_file():
            # The rung loaded base + adapter for itself; serve the adapter on the shared copy instead
            # (that one copy is freed once nothing holds it).
            prepared.model = shared_base.add_adapter(task.name, adapter)
            log(f"{task.name}: adapter {Path(adapter).name} added to the shared {shared_base.name}")
            gc.collect()
        config = ServedConfig(
            prepared=prepared,
            task=task.name,
            rung=name,
            max_new_tokens=task.ladder.max_new_tokens,
            run_dir=run_dir,
            train_inputs=[ex.input_text for ex in ctx.train],
        )
        configs[task.name] = configs[config.fingerprint] = config
        if with_base:
            # Only the router's fallback needs the plain base; asking for it loads it.
            fallback_model = fallback_model or ctx.base_model()
    if with_base and fallback_model is not None:
        configs[BASE_NAME] = base_config(fallback_model, max(c.max_new_tokens for c in configs.values()))
    return configs


def _shared_bases(chosen: list[tuple[Path, str]], with_base: bool, trust_remote_code: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Model spec -> SharedBase, for each local base model that would otherwise be loaded twice or
    more: once per LoRA run, plus once plain for prompted rungs or the router's fallback."""
    from tunewise.ladder.run import open_run
    from tunewise.rungs import get_rung

    adapters: dict[str, int] = {}
    plain: set[str] = set()
    first_task: dict[str, Any] = {}
    for run_dir, name in chosen:
        task = candidate_view(open_run(run_dir)[0], name)
        options = task.model_options.model_dump(exclude_none=True)
        if task.model.startswith("openai:") or "base_url" in options:
            continue  # an API model: no weights here
        first_task.setdefault(task.model, task)
        if get_rung(name).trains and task.train.method in ("lora", "qlora"):
            adapters[task.model] = adapters.get(task.model, 0) + 1
        if not get_rung(name).trains or with_base:
            plain.add(task.model)
    out: dict[str, Any] = {}
    for spec, count in adapters.items():
        copies = count + (spec in plain)
        if copies < 2:
            continue
        from tunewise.serve.adapters import SharedBase

        task = first_task[spec]
        options = {k: v for k, v in task.model_options.model_dump(exclude_none=True).items() if k in ("bf16", "max_batch_tokens")}
        log(f"{spec}: one copy of the base model for {count} adapter(s){' and the plain model' if spec in plain else ''} (instead of {copies})")
        out[spec] = SharedBase.from_spec(spec, trust_remote_code=trust_remote_code, max_batch_size=task.ladder.batch_size, **options)
    return out


def candidate_view(task: Any, name: str) -> Any:
    """The task as the candidate `name` ("lora@small", or a bare rung) sees it: its model's spec and options."""
    from tunewise.rungs import split_candidate

    return task.for_model(split_candidate(task.candidate(name))[1])


def refuse_pickled_weights(run_dir: Path) -> None:
    """A run folder from elsewhere could hold a pickled adapter (adapter_model.bin), which peft would
    unpickle when no safetensors file sits beside it. Refuse it before anything loads."""
    folders = [f for f in run_dir.glob("train*") if f.is_dir()]  # train/, or train@<model> per model
    weights = [p for folder in folders for p in (*folder.rglob("adapter_model.bin"), *folder.rglob("pytorch_model*.bin"))]
    unsafe = [p for p in weights if not any(p.parent.glob("*.safetensors"))]
    if unsafe:
        raise TunewiseError(
            f"{run_dir}: pickled weights found ({', '.join(str(p.relative_to(run_dir)) for p in unsafe)}) and no "
            "safetensors beside them; tunewise loads only safetensors. Retrain with `tunewise train` or convert the adapter"
        )


def primary_names(configs: dict[str, ServedConfig]) -> list[str]:
    """One name per distinct configuration (aliases and the fallback left out): the router's choices."""
    seen: set[int] = set()
    names = []
    for name, config in configs.items():
        if id(config) in seen or config.rung == BASE_NAME:
            continue
        seen.add(id(config))
        names.append(name)
    return names
