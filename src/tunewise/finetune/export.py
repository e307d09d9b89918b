"""Export a trained adapter, or a merged model that plain transformers loads.

The adapter folder `tunewise train` (or the ladder's LoRA rung) writes is already a PEFT adapter in
safetensors. `export_run` copies it out with a model card (base model, data hash, config, eval
scores from the run's results.json), or with `merge=True` folds the LoRA weights into the base
(`merge_and_unload`) and saves a standalone model folder:

    AutoModelForCausalLM.from_pretrained("runs/intent-.../export/merged")

`export_for(run, engine)` writes what a serving engine (vLLM, Ollama, llama.cpp, LoRAX) needs to serve
the run's chosen rung, with the exact commands; see docs/export.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.finetune.model_card import model_card
from tunewise.ladder.results import Results, TrainingSummary
from tunewise.models.base import Messages
from tunewise.models.vllm_engine import max_lora_rank


def tuned_adapter(run_dir: Path, rung: Any) -> Path | None:
    """The adapter a tuned fine-tuned rung was scored with: tuning (ladder.tune) trains one per
    configuration, and the newest need not be the chosen one. None for an untuned rung."""
    from tunewise.finetune.train import read_training_file

    if rung is None or rung.tuning is None or rung.training is None or not rung.training.adapter_path:
        return None
    recorded = Path(rung.training.adapter_path)  # <run>/train/<config key>/adapter, as the run saw it
    path = Path(run_dir) / "train" / recorded.parent.name / recorded.name
    return path if read_training_file(path) is not None else None


def find_adapter(ref: Path) -> Path:
    """The full-data adapter (or model) folder for a run folder, a training folder or the adapter
    folder itself; the newest one when the run trained several configs, unless the run tuned its
    fine-tuned rung on dev (then the chosen configuration's)."""
    from tunewise.finetune.train import read_training_file

    ref = Path(ref)
    if read_training_file(ref) is not None:
        return ref
    if (ref / "results.json").is_file():
        from tunewise.ladder.results import load_results

        try:
            results = load_results(ref)
        except TunewiseError:
            results = None
        decided = results.decision.rung if results and results.decision else None
        for r in sorted(results.rungs if results else [], key=lambda r: r.name != decided):
            if (chosen := tuned_adapter(ref, r)) is not None:
                return chosen
    candidates = [p for p in ref.glob("adapter")] + [p for p in ref.glob("model")]
    candidates += [p for p in ref.glob("*/adapter")] + [p for p in ref.glob("*/model")]
    candidates += [p for p in ref.glob("train/*/adapter")] + [p for p in ref.glob("train/*/model")]
    finished = [p for p in candidates if (record := read_training_file(p)) is not None and record["config"]["subset"] is None]
    if not finished:
        raise TunewiseError(
            f"no finished fine-tune under {ref}: give a run folder whose LoRA rung ran, a folder written by "
            "`tunewise train --out`, or the adapter folder itself"
        )
    return max(finished, key=lambda p: p.stat().st_mtime)


def _results_near(adapter: Path) -> Results | None:
    from tunewise.ladder.results import load_results

    for folder in adapter.parents:
        if (folder / "results.json").is_file():
            try:
                return load_results(folder)
            except TunewiseError:
                return None
    return None


def _replace_dir(partial: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)


def export_run(ref: Path, out: Path | None = None, merge: bool = False) -> Path:
    """Copy the adapter (or, with merge, a merged model folder) to `out`; returns the folder.

    Default `out`: <run>/export/adapter or <run>/export/merged beside the training folders.
    """
    from tunewise.finetune.train import read_training_file

    adapter = find_adapter(Path(ref))
    record = read_training_file(adapter)
    assert record is not None  # find_adapter only returns finished ones
    summary = TrainingSummary.model_validate(record["summary"])
    config = record["config"]
    results = _results_near(adapter)
    if out is None:
        run_root = adapter.parent.parent.parent if adapter.parent.parent.name == "train" else adapter.parent
        out = run_root / "export" / ("merged" if merge else "adapter")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    if merge and config["train"]["method"] != "full":
        merged_model(adapter, config["model"], partial)
    else:
        # a full fine-tune is already a standalone model folder
        shutil.copytree(adapter, partial)
    (partial / "README.md").write_text(model_card(config, summary, results), encoding="utf-8")
    _replace_dir(partial, out)
    return out


def merged_model(adapter: Path, model_spec: str, out: Path) -> None:
    """Fold the LoRA weights into the fp32 base and save a plain transformers folder (safetensors)."""
    from tunewise.finetune.train import load_finetuned

    model, tokenizer = load_finetuned(adapter, model_spec)
    merged = model.merge_and_unload()
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


# -- export for a serving engine ------------------------------------------------------------------
#
# `export_for(RUN, engine)` writes what one engine needs to serve the run's chosen configuration and
# a README.md with the exact commands. The configuration is more than weights: the rung's system
# prompt and few-shot turns go where the engine keeps them (an Ollama Modelfile) or into the example
# request (vLLM, llama.cpp and LoRAX keep none); what no engine can do (retrieval, nearest-example
# few-shot selection) is named in the README with how `tunewise serve` does it.

ENGINES: dict[str, str] = {
    "vllm": "vLLM: the PEFT adapter (or model) folder and `vllm serve BASE --enable-lora --lora-modules NAME=PATH`",
    "ollama": "Ollama: a Modelfile (FROM, ADAPTER, TEMPLATE, SYSTEM, MESSAGE) and `ollama create`",
    "llamacpp": "llama.cpp: a GGUF of the merged model and `llama-server`",
    "lorax": "LoRAX: the adapter folder and a /generate request naming its adapter_id",
}
"""The export targets, in one place; an unknown name fails with these."""

OLLAMA_ADAPTER_FAMILIES = ("llama", "mistral", "gemma", "gemma2")
"""model_type values whose safetensors LoRA adapters Ollama's ADAPTER imports (Ollama's Modelfile docs:
Llama, Mistral, Gemma); for the others the Modelfile uses the merged model."""

OLLAMA_SAFETENSORS_FAMILIES = ("llama", "mistral", "gemma", "gemma2", "phi3")
"""model_type values Ollama imports from a safetensors folder (`FROM /path/to/folder`)."""

USER_PLACEHOLDER = "<your input>"


@dataclass
class Deployment:
    """A run's chosen configuration, as an engine needs to know it."""

    task: str
    """The task name: the model name the engines serve it under."""
    rung: str
    title: str
    model_spec: str
    """The task's `model:` (embedded, a .gguf, a folder or a hub id)."""
    finetune: Path | None = None
    """The finished adapter folder (or full fine-tune folder) for a trained rung, else None."""
    method: str | None = None
    """lora, qlora or full for a trained rung."""
    lora_r: int | None = None
    system: str | None = None
    shots: Messages = field(default_factory=list)
    """Fixed few-shot turns (user, assistant, ...), the same every request."""
    nearest_k: int = 0
    """k when the few-shot examples are the nearest ones to each question (per request)."""
    rag: dict[str, Any] | None = None
    """{"k", "mode"} when the rung retrieves documents."""
    constraint: str | None = None
    """The constrained decoding the rung used (labels, json_schema, regex), as a short description."""
    max_new_tokens: int | None = None
    run_dir: Path | None = None

    @property
    def name(self) -> str:
        """The task name as an engine model name (letters, digits, - _ .)."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.task).strip("-") or "tunewise"

    @property
    def merged_lora(self) -> bool:
        return self.finetune is not None and self.method != "full"

    def request_messages(self, user: str = USER_PLACEHOLDER) -> Messages:
        """What a client sends an engine that keeps no prompt: system, fixed shots, the question."""
        from tunewise.rungs.base import with_system

        return with_system(self.system, [*self.shots, {"role": "user", "content": user}])

    def not_reproduced(self) -> list[str]:
        """What no engine does, each with how `tunewise serve` does it."""
        out = []
        if self.nearest_k:
            out.append(
                f"Few-shot selection: for every request the ladder put the {self.nearest_k} training examples nearest "
                "to the question (all-MiniLM-L6-v2 embeddings, most similar last) before it as user/assistant turns. "
                "An engine can only hold fixed turns, so this export has none; `tunewise serve RUN` selects them per request "
                "with the ladder's own code."
            )
        if self.constraint:
            out.append(
                f"Constrained decoding ({self.constraint}): the ladder restricted every answer with a grammar "
                "(xgrammar). This export does not carry it: pass the same constraint to the engine where it has one "
                "(vLLM guided decoding, OpenAI-style response_format, llama.cpp grammars), or serve with "
                "`tunewise serve RUN`, which applies it."
            )
        if self.rag:
            out.append(
                f"Retrieval: for every request the ladder retrieved the {self.rag['k']} best chunks of the corpus "
                f"({self.rag['mode']}) and sent them before the question as 'Documents:\\n[1] ...\\n\\nUsing the documents "
                "above, answer: QUESTION'. The engine has no retriever: `tunewise serve RUN` does it, or your client "
                "builds that user message itself."
            )
        return out


def load_deployment(ref: Path, rung: str | None = None) -> Deployment:
    """The chosen (or given) rung of a run folder; a training or adapter folder is its LoRA rung with
    no prompt configuration (the prompts were in the training data)."""
    ref = Path(ref)
    if not (ref / "config.yaml").is_file():
        from tunewise.finetune.train import read_training_file

        if rung not in (None, "lora"):
            raise TunewiseError(f"{ref} is a training folder, not a run folder: it holds only the fine-tune, not rung {rung!r}")
        finetune = find_adapter(ref)
        config = (read_training_file(finetune) or {})["config"]
        train = config["train"]
        return Deployment(
            task=Path(config["model"]).stem if config["model"] != "embedded" else "tunewise", rung="lora",
            title="LoRA fine-tune" if train["method"] != "full" else "full fine-tune", model_spec=config["model"],
            finetune=finetune, method=train["method"], lora_r=train["lora"]["r"],
        )

    from tunewise.ladder.run import open_run
    from tunewise.rungs import get_rung
    from tunewise.rungs.few_shot import shot_selector

    task, ctx, results = open_run(ref)
    name = task.candidate(rung) if rung else (results.decision.rung if results.decision else None)
    done = [r.name for r in results.rungs if r.status == "done"]
    if name is None:
        raise TunewiseError(f"{ref}: the run chose no rung (none met its target); name one with --rung ({', '.join(done) or 'none measured'})")
    spec = get_rung(name)
    if name not in done:
        raise TunewiseError(f"{ref}: rung {name!r} was not measured in this run (measured: {', '.join(done) or 'none'}); export a measured rung with --rung")
    from tunewise.ladder.tuning import context_for

    ctx = context_for(ctx.for_candidate(name), results.rung(name))  # its model; knobs chosen on dev (ladder.tune)
    task = ctx.task
    dep = Deployment(
        task=task.name, rung=name, title=get_rung(name).title(task), model_spec=task.model, system=ctx.system_prompt,
        max_new_tokens=task.ladder.max_new_tokens, run_dir=ref,
    )
    if spec.trains:
        folder = spec.adapter_dir(ctx)  # where this rung on this model keeps its adapter
        dep.finetune = tuned_adapter(ref, results.rung(name)) or find_adapter(folder if folder.is_dir() else ref)
        dep.method, dep.lora_r = task.train.method, task.train.lora.r
    if spec.constrained:
        from tunewise.models.constraints import constraint_kind

        dep.constraint = constraint_kind(task)
    if spec.shots:
        if task.ladder.few_shot.selection == "fixed":
            dep.shots = shot_selector(ctx)("")  # the ladder's own fixed sample (seeded)
        else:
            dep.nearest_k = min(task.ladder.few_shot.k, len(ctx.train))
    if spec.needs_corpus:
        dep.rag = {"k": task.ladder.rag.k, "mode": task.ladder.rag.mode}
    return dep


@dataclass
class EngineExport:
    """What `export_for` wrote."""

    engine: str
    folder: Path
    command: str
    """The command that starts the engine (also in README.md and launch.sh)."""
    files: list[str]
    not_reproduced: list[str]


def export_for(ref: Path, engine: str, out: Path | None = None, rung: str | None = None, gguf_type: str = "f16") -> EngineExport:
    """Write what `engine` needs to serve RUN's chosen configuration into `out` (default
    <run>/export/<engine>), with README.md (the commands) and launch.sh."""
    if engine not in ENGINES:
        raise TunewiseError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    dep = load_deployment(Path(ref), rung)
    if dep.model_spec.startswith("openai:"):
        raise TunewiseError(f"the run's model {dep.model_spec!r} is an API model: there are no weights for {engine} to serve")
    if out is None:
        root = dep.run_dir or (dep.finetune.parent.parent if dep.finetune is not None else Path(ref))
        out = root / "export" / engine
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        writer = {"vllm": _write_vllm, "ollama": _write_ollama, "llamacpp": _write_llamacpp, "lorax": _write_lorax}[engine]
        command, request, notes = writer(dep, partial, gguf_type)
        (partial / "launch.sh").write_text(
            "#!/bin/sh\n# Written by `tunewise export --for " + engine + "`; runs in this folder.\n"
            'cd "$(dirname "$0")" || exit 1\n' + command + "\n",
            encoding="utf-8",
        )
        (partial / "launch.sh").chmod(0o755)
        if request is not None:
            (partial / "request.json").write_text(json.dumps(request, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (partial / "README.md").write_text(_engine_readme(dep, engine, command, request, notes), encoding="utf-8")
        files = sorted(str(p.relative_to(partial)) for p in partial.rglob("*") if p.is_file())
        _replace_dir(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return EngineExport(engine, out, command, files, dep.not_reproduced())


# -- the base model, in the form each engine reads ---------------------------------------------------


def _base_gguf(dep: Deployment) -> Path | None:
    """The base model's GGUF file, when the base is one (the embedded model or a .gguf spec)."""
    from tunewise.models.resolve import locate_embedded, spec_kind

    kind = spec_kind(dep.model_spec)
    if kind == "embedded":
        folder, file = locate_embedded()
        return folder / file
    if kind == "gguf":
        return Path(dep.model_spec).expanduser().resolve()
    return None


def _base_hf_folder(dep: Deployment) -> Path | None:
    """A local transformers folder of the base: the spec's folder, the GGUF's dequantised cache (what
    the adapter was trained on), or a hub id's local snapshot; None for a hub id not cached."""
    from tunewise.models.resolve import gguf_cache, spec_kind

    gguf_file = _base_gguf(dep)
    if gguf_file is not None:
        return gguf_cache(gguf_file)
    kind = spec_kind(dep.model_spec)
    if kind == "folder":
        return Path(dep.model_spec).expanduser().resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(dep.model_spec, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or no hub client): the caller says what to do
        return None


def _link_tree(source: Path, target: Path) -> None:
    """Copy a folder, hard-linking files where the filesystem allows (a base model is large)."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy, ignore=shutil.ignore_patterns("tunewise-cache.json"))


def _hf_base_ref(dep: Deployment, partial: Path, inside: str = ".") -> tuple[str, str]:
    """(what an HF-format engine's command names as BASE, a sentence on where it comes from)."""
    from tunewise.models.resolve import spec_kind

    kind = spec_kind(dep.model_spec)
    if kind == "hub":
        return dep.model_spec, f"`{dep.model_spec}` from the Hugging Face hub (the task's model)."
    if kind == "folder":
        folder = Path(dep.model_spec).expanduser().resolve()
        return str(folder), f"the task's model folder `{folder}`."
    base = _base_hf_folder(dep)
    assert base is not None
    _link_tree(base, partial / "base")
    what = "the embedded SmolLM2-135M-Instruct" if kind == "embedded" else f"`{dep.model_spec}`"
    return f"{inside}/base", (
        f"`base/`: {what} is a GGUF, which vLLM and LoRAX cannot put LoRA adapters on; this is its dequantised "
        "fp32 weights as a transformers folder, the exact weights the adapter was trained on."
    )


def _copy_finetune(dep: Deployment, target: Path, base_ref: str | None = None) -> None:
    """The adapter (or full model) folder with its model card; adapter_config names the engine's base."""
    assert dep.finetune is not None
    shutil.copytree(dep.finetune, target, ignore=shutil.ignore_patterns("tunewise_training.json"))
    if (dep.finetune / "tunewise_training.json").is_file():
        shutil.copy2(dep.finetune / "tunewise_training.json", target / "tunewise_training.json")
    config_file = target / "adapter_config.json"
    if base_ref is not None and config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = base_ref
        config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _merged_model(dep: Deployment) -> tuple[Any, Any]:
    """(model, tokenizer): the fine-tune with the adapter folded in, fp32; the base for prompted rungs."""
    from tunewise.finetune.rung import merge_adapter
    from tunewise.finetune.train import load_finetuned
    from tunewise.models.resolve import load_pretrained

    if dep.finetune is None:
        return load_pretrained(dep.model_spec)
    model, tokenizer = load_finetuned(dep.finetune, dep.model_spec)
    return merge_adapter(model), tokenizer


def _tokenizer(dep: Deployment) -> Any:
    from transformers import AutoTokenizer

    if dep.finetune is not None and (dep.finetune / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(dep.finetune))
    folder = _base_hf_folder(dep)
    if folder is None:
        raise TunewiseError(f"the tokenizer of {dep.model_spec!r} is not in the local Hugging Face cache: `hf download {dep.model_spec}`")
    return AutoTokenizer.from_pretrained(str(folder))


def _model_type(dep: Deployment) -> str:
    source = dep.finetune if dep.finetune is not None and (dep.finetune / "config.json").is_file() else _base_hf_folder(dep)
    if source is None:
        raise TunewiseError(f"{dep.model_spec!r} is not in the local Hugging Face cache: `hf download {dep.model_spec}`")
    return json.loads((Path(source) / "config.json").read_text(encoding="utf-8")).get("model_type", "?")


def _write_merged_gguf(dep: Deployment, target: Path, gguf_type: str) -> str:
    """The fine-tune (merged) or the base as one GGUF file; returns a sentence on how it was made."""
    from tunewise.finetune.gguf_export import convert_with_llama_cpp, write_gguf

    template = _base_gguf(dep)
    model, tokenizer = _merged_model(dep)
    what = "the LoRA adapter merged into the base" if dep.merged_lora else ("the fully fine-tuned model" if dep.finetune else "the base model")
    if template is not None:
        write_gguf(model, template, target, gguf_type, name=f"{dep.task} ({dep.title})")
        return (
            f"`{target.name}`: {what}, {gguf_type}, written by tunewise with the base GGUF's tokenizer and metadata "
            f"({template.name})."
        )
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        convert_with_llama_cpp(Path(tmp), target, gguf_type)
    return f"`{target.name}`: {what}, {gguf_type}, converted by llama.cpp's convert_hf_to_gguf.py."


# -- the engines -----------------------------------------------------------------------------------


def _openai_request(dep: Deployment, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": dep.request_messages(), "temperature": 0}
    if dep.max_new_tokens:
        body["max_tokens"] = dep.max_new_tokens
    return body


def _write_vllm(dep: Deployment, partial: Path, gguf_type: str) -> tuple[str, dict[str, Any], list[str]]:
    notes = []
    if dep.finetune is not None and dep.method == "full":
        _copy_finetune(dep, partial / "model")
        command = f"vllm serve ./model --served-model-name {dep.name} --generation-config vllm"
        notes.append("`model/`: the fully fine-tuned model (no adapter).")
        return command, _openai_request(dep, dep.name), notes
    base, where = _hf_base_ref(dep, partial)
    notes.append(f"Base model: {where}")
    if dep.finetune is None:
        command = f"vllm serve {base} --served-model-name {dep.name} --generation-config vllm"
        return command, _openai_request(dep, dep.name), notes
    _copy_finetune(dep, partial / "adapter", base)
    rank = max_lora_rank(dep.lora_r or 16)
    command = (
        f"vllm serve {base} --enable-lora --lora-modules {dep.name}=./adapter --max-lora-rank {rank} "
        "--generation-config vllm"
    )
    notes.append(
        f"`adapter/`: the PEFT LoRA adapter (safetensors), served as model `{dep.name}`; requests naming the base "
        "model get it without the adapter."
    )
    if dep.method == "qlora":
        notes.append("The adapter was trained on a 4-bit base (QLoRA); vLLM applies it to the full-precision base.")
    return command, _openai_request(dep, dep.name), notes


def _write_lorax(dep: Deployment, partial: Path, gguf_type: str) -> tuple[str, dict[str, Any], list[str]]:
    notes = []
    mounts = '-v "$PWD":/data'
    if dep.finetune is not None and dep.method == "full":
        _copy_finetune(dep, partial / "model")
        base, adapter_id = "/data/model", None
        notes.append("`model/`: the fully fine-tuned model, served as LoRAX's base model (no adapter).")
    else:
        base, where = _hf_base_ref(dep, partial, inside="/data")
        if Path(base).is_absolute() and not base.startswith("/data"):
            mounts += f' -v "{base}":/base'
            base = "/base"
        notes.append(f"Base model: {where}")
        adapter_id = None
        if dep.finetune is not None:
            _copy_finetune(dep, partial / "adapter", base)
            adapter_id = "/data/adapter"
            notes.append("`adapter/`: the PEFT LoRA adapter (safetensors), loaded per request from `/data/adapter`.")
    command = f"docker run --gpus all --shm-size 1g -p 8080:80 {mounts} ghcr.io/predibase/lorax:main --model-id {base}"
    tokenizer = _tokenizer(dep)
    prompt = tokenizer.apply_chat_template(dep.request_messages(), add_generation_prompt=True, tokenize=False)
    parameters: dict[str, Any] = {"do_sample": False, "max_new_tokens": dep.max_new_tokens or 256}
    if adapter_id:
        parameters |= {"adapter_id": adapter_id, "adapter_source": "local"}
    if tokenizer.eos_token:
        parameters["stop"] = [tokenizer.eos_token]
    notes.append(
        "The request's `inputs` is the chat-templated prompt (system prompt and few-shot turns included); put the "
        f"question where it says {USER_PLACEHOLDER}."
    )
    return command, {"inputs": prompt, "parameters": parameters}, notes


def _write_llamacpp(dep: Deployment, partial: Path, gguf_type: str) -> tuple[str, dict[str, Any], list[str]]:
    notes = []
    template = _base_gguf(dep)
    if dep.finetune is None and template is not None:
        model = str(template)
        notes.append(f"Model: the base GGUF `{template}` as it is (a prompted rung has no weights of its own).")
    else:
        notes.append(_write_merged_gguf(dep, partial / "model.gguf", gguf_type))
        model = "model.gguf"
    flags = "--jinja --temp 0 --port 8080" + (f" -n {dep.max_new_tokens}" if dep.max_new_tokens else "")
    command = f"llama-server -m {model} {flags}"
    notes.append("`--jinja` renders the chat template stored in the GGUF, the one the ladder used; `--temp 0` is greedy.")
    if dep.merged_lora and template is not None:
        from tunewise.finetune.gguf_export import write_lora_gguf

        write_lora_gguf(dep.finetune, template, partial / "adapter.gguf")
        notes.append(
            f"`adapter.gguf`: the LoRA adapter alone, for the base GGUF (several adapters can share one base): "
            f"`llama-server -m {template} --lora adapter.gguf {flags}`."
        )
    return command, _openai_request(dep, dep.name), notes


def modelfile_quote(text: str) -> str:
    """A Modelfile value that Ollama's parser reads back as `text`: the text in triple quotes.

    Ollama's parser (parser/parser.go) has no escapes: a value ends at the first line break where what
    was read so far is a complete quoted string. Triple quotes therefore hold any text in which no
    line but the last ends with three quotes; such a line would end plain double quotes too, so text
    with one cannot be written at all and raises.
    """
    inner = re.split(r"[\r\n]", text)[:-1]  # Ollama checks at every \r and \n
    if any(line.endswith('"""') for line in inner):
        raise TunewiseError(
            f"text cannot be written in an Ollama Modelfile (a line ends in three quotes and Ollama's parser has no escapes): {text[:60]!r}"
        )
    return f'"""{text}"""'


CHATML_GO_TEMPLATE = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
"""Ollama's Go template that renders messages as ChatML, byte for byte what `_is_chatml` checks."""


def _is_chatml(tokenizer: Any) -> tuple[bool, str | None]:
    """(whether the chat template renders exactly as ChatML, the system prompt it adds when none is given)."""
    turns = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}, {"role": "user", "content": "V"}]
    try:
        rendered = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        bare = tokenizer.apply_chat_template(turns[1:2], add_generation_prompt=True, tokenize=False)
    except Exception:  # noqa: BLE001 - no template, or one that rejects these turns
        return False, None
    expected = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in turns) + "<|im_start|>assistant\n"
    if rendered != expected:
        return False, None
    default = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n<\|im_start\|>user\nU<\|im_end\|>\n", bare, re.S)
    return True, default.group(1) if default else None


def _write_ollama(dep: Deployment, partial: Path, gguf_type: str) -> tuple[str, dict[str, Any], list[str]]:
    notes = []
    family = _model_type(dep)
    template = _base_gguf(dep)
    lines = [f"# tunewise export for Ollama: task {dep.task}, rung {dep.rung} ({dep.title})", "# Build: ollama create "
             f"{dep.name} -f Modelfile    Run: ollama run {dep.name}"]
    if dep.merged_lora and family in OLLAMA_ADAPTER_FAMILIES:
        if template is not None:
            base = str(template)
        else:
            folder = _base_hf_folder(dep)
            if folder is None:
                raise TunewiseError(f"base {dep.model_spec!r} is not in the local Hugging Face cache: `hf download {dep.model_spec}`")
            base = str(folder)
        _copy_finetune(dep, partial / "adapter", base)
        lines += [f"FROM {base}", "ADAPTER ./adapter"]
        notes.append(f"FROM the base model `{base}` with ADAPTER `adapter/` (PEFT safetensors; Ollama imports {family} adapters).")
    elif dep.finetune is not None or (template is None and family not in OLLAMA_SAFETENSORS_FAMILIES):
        notes.append(_write_merged_gguf(dep, partial / "model.gguf", gguf_type))
        lines.append("FROM ./model.gguf")
    elif template is not None:
        lines.append(f"FROM {template}")
        notes.append(f"FROM the base GGUF `{template}` (a prompted rung has no weights of its own).")
    else:
        folder = _base_hf_folder(dep)
        if folder is None:
            raise TunewiseError(f"base {dep.model_spec!r} is not in the local Hugging Face cache: `hf download {dep.model_spec}`")
        lines.append(f"FROM {folder}")
        notes.append(f"FROM the base model's safetensors folder `{folder}`.")
    chatml, default_system = _is_chatml(_tokenizer(dep))
    if chatml:
        lines.append("TEMPLATE " + modelfile_quote(CHATML_GO_TEMPLATE))
        lines.append('PARAMETER stop "<|im_end|>"')
        notes.append("TEMPLATE: the model's chat template renders as ChatML (checked), written as Ollama's Go template.")
    else:
        notes.append("No TEMPLATE: Ollama takes the chat template from the model; check it with `ollama show --template`.")
    lines.append("PARAMETER temperature 0")
    if dep.max_new_tokens:
        lines.append(f"PARAMETER num_predict {dep.max_new_tokens}")
    system = dep.system if dep.system is not None else default_system
    if system is not None:
        lines.append("SYSTEM " + modelfile_quote(system))
        if dep.system is None:
            notes.append("SYSTEM: the default system prompt the chat template adds when none is given, so Ollama's prompt matches.")
    for turn in dep.shots:
        lines.append(f"MESSAGE {turn['role']} " + modelfile_quote(turn["content"]))
    (partial / "Modelfile").write_text("\n".join(lines) + "\n", encoding="utf-8")
    command = f"ollama create {dep.name} -f Modelfile && ollama run {dep.name}"
    request = {"model": dep.name, "messages": [{"role": "user", "content": USER_PLACEHOLDER}], "stream": False}
    notes.append("The system prompt and few-shot turns are in the Modelfile: a request sends only the question (POST /api/chat).")
    return command, request, notes


def _engine_readme(dep: Deployment, engine: str, command: str, request: dict[str, Any] | None, notes: list[str]) -> str:
    lines = [
        f"# {dep.task}: {dep.title}, exported for {engine}",
        "",
        f"Written by `tunewise export {dep.run_dir or dep.finetune} --for {engine}"
        + (f" --rung {dep.rung}" if dep.run_dir else "") + "`.",
        "",
        "## Start it",
        "",
        "In this folder (or `./launch.sh`):",
        "",
        "```bash",
        command,
        "```",
        "",
    ]
    if request is not None:
        endpoint = {
            "vllm": "http://127.0.0.1:8000/v1/chat/completions",
            "llamacpp": "http://127.0.0.1:8080/v1/chat/completions",
            "lorax": "http://127.0.0.1:8080/generate",
            "ollama": "http://127.0.0.1:11434/api/chat",
        }[engine]
        lines += [
            "## Ask it",
            "",
            f"`request.json` (replace {USER_PLACEHOLDER}):",
            "",
            "```bash",
            f"curl -s {endpoint} -H 'Content-Type: application/json' -d @request.json",
            "```",
            "",
            "```json",
            json.dumps(request, indent=2, ensure_ascii=False),
            "```",
            "",
        ]
    lines += ["## What is here", ""] + [f"- {n}" for n in notes] + [""]
    configured = []
    if dep.system:
        configured.append("the system prompt")
    if dep.shots:
        configured.append(f"{len(dep.shots) // 2} fixed few-shot examples")
    lines += ["## The configuration", ""]
    lines.append(
        f"Reproduced: {', '.join(configured) or 'no prompt configuration (the rung sends the question alone)'}"
        + (", greedy decoding" + (f", at most {dep.max_new_tokens} new tokens" if dep.max_new_tokens else "")) + "."
    )
    missing = dep.not_reproduced()
    if missing:
        lines += ["", f"**Not reproduced by {engine}**: the ladder measured these, the engine does not do them:", ""]
        lines += [f"- {m}" for m in missing]
        lines += ["", "Serving these answers as measured: `tunewise serve " + str(dep.run_dir or "RUN") + "`."]
    lines.append("")
    return "\n".join(lines)
