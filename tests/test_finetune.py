"""Fine-tuning on a tiny random Llama (2 layers, width 64) with a word-level ChatML tokenizer built
here: no hub, a few seconds per training run. One slow test runs the real embedded model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from conftest import EXAMPLES, write_jsonl  # noqa: E402

from tunewise.data.example import Example  # noqa: E402
from tunewise.errors import TunewiseError  # noqa: E402
from tunewise.finetune import train as ft  # noqa: E402
from tunewise.task import parse_task  # noqa: E402

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
ROLES = ["system", "user", "assistant"]
ANIMALS = ["cat", "dog", "cow", "duck", "sheep", "pig", "horse", "owl"]
SOUNDS = ["meow", "woof", "moo", "quack", "baa", "oink", "neigh", "hoot"]
WORDS = ["what", "does", "the", "say", "?", "answer", "briefly", ".", "sound", "of", "a", *ANIMALS, *SOUNDS]


def build_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + ROLES + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def build_model(tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        # Wider than the default 0.02: with a frozen random lm_head of std 0.02 the logits can barely
        # move (|logit| <= ~1.3 after RMSNorm), so LoRA could not fit anything.
        initializer_range=0.2,
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A saved tiny model folder: what `model:` in a task file points at."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tokenizer()
    build_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sound_examples(n: int, flip: bool = False) -> list[Example]:
    """"what does the cow say ?" -> "moo" (flip: a wrong sound, to make validation loss rise)."""
    out = []
    for i in range(n):
        j = i % len(ANIMALS)
        answer = SOUNDS[(j + 3) % len(SOUNDS)] if flip else SOUNDS[j]
        out.append(
            Example(
                [{"role": "system", "content": "answer briefly ."}, {"role": "user", "content": f"what does the {ANIMALS[j]} say ?"}],
                answer,
            )
        )
    return out


def make_task(tiny_dir: Path, **train) -> object:
    spec = {"method": "lora", "epochs": 2, "batch_size": 4, "learning_rate": 0.01, "max_length": 64, "bf16": "off"}
    spec.update(train)
    return parse_task(
        {"name": "tiny", "data": {"train": "t.jsonl", "eval": "e.jsonl"}, "model": str(tiny_dir), "train": spec}
    )


# -- assistant-only labels ------------------------------------------------------------------------


def test_labels_cover_exactly_the_answer_and_end_of_turn():
    tokenizer = build_tokenizer()
    ex = sound_examples(1)[0]
    encoded = ft.encode_example(tokenizer, ex, max_length=64)
    prompt = tokenizer(
        tokenizer.apply_chat_template(ex.messages, add_generation_prompt=True, tokenize=False), add_special_tokens=False
    )["input_ids"]
    answer = tokenizer(ex.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert encoded["input_ids"] == prompt + answer
    assert encoded["labels"] == [-100] * len(prompt) + answer
    trained = [tokenizer.convert_ids_to_tokens(t) for t, label in zip(encoded["input_ids"], encoded["labels"]) if label != -100]
    assert trained == ["meow", "<|im_end|>"]


@pytest.mark.parametrize(
    "max_length, expect",
    [
        (64, "whole"),  # fits
        ("prompt+1", "answer cut"),  # the answer's first token survives, the end-of-turn does not
        ("prompt", None),  # nothing of the answer fits: dropped
    ],
)
def test_truncation_keeps_prompt_and_cuts_answer(max_length, expect):
    tokenizer = build_tokenizer()
    ex = sound_examples(1)[0]
    n_prompt = len(ft.encode_example(tokenizer, ex, 64)["labels"]) - 2
    limit = {"prompt+1": n_prompt + 1, "prompt": n_prompt}.get(max_length, max_length)
    encoded = ft.encode_example(tokenizer, ex, limit)
    if expect is None:
        assert encoded is None
        return
    assert len(encoded["input_ids"]) == min(limit, n_prompt + 2)
    assert sum(label != -100 for label in encoded["labels"]) == (2 if expect == "whole" else 1)


def test_collator_pads_labels_with_ignore_index_even_when_pad_is_eos():
    tokenizer = build_tokenizer()
    rows = [ft.encode_example(tokenizer, ex, 64) for ex in sound_examples(2)]
    rows[1] = {k: v[:-3] for k, v in rows[1].items()}
    batch = ft.PadCollator(pad_id=tokenizer.eos_token_id)(rows)
    assert batch["input_ids"].shape == (2, len(rows[0]["input_ids"]))
    assert batch["labels"][1, -3:].tolist() == [-100, -100, -100]
    assert batch["attention_mask"][1].sum().item() == len(rows[1]["input_ids"])
    assert batch["labels"][0].tolist() == rows[0]["labels"]


def test_answer_loss_on_kept_positions_equals_the_full_loss():
    tokenizer = build_tokenizer()
    model = build_model(tokenizer).eval()
    rows = [ft.encode_example(tokenizer, ex, 64) for ex in sound_examples(3)]
    rows[1] = {"input_ids": rows[1]["input_ids"][:-1], "attention_mask": rows[1]["attention_mask"][:-1], "labels": rows[1]["labels"][:-1]}
    batch = ft.PadCollator(tokenizer.pad_token_id, keep_answer_logits=True)(rows)
    keep = batch.pop("logits_to_keep")
    assert keep.tolist() == sorted({p - 1 for row in rows for p, label in enumerate(row["labels"]) if label != -100})
    with torch.no_grad():
        reference = model(**batch).loss  # transformers' own shifted loss over every position
        full = ft.answer_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]), batch["labels"])
        kept_out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
        kept = ft.answer_loss(kept_out, batch["labels"])
    assert kept_out.logits.shape[1] == len(keep) < batch["input_ids"].shape[1]
    assert full.item() == pytest.approx(reference.item(), rel=1e-5)
    assert kept.item() == pytest.approx(reference.item(), rel=1e-5)
    assert ft.supports_logits_to_keep(model)


def test_real_template_completion_is_answer_plus_im_end():
    """SmolLM2's template (embedded model): the completion ends at <|im_end|>, not the newline after it."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = build_tokenizer()
    tokenizer.chat_template = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    prompt, completion = ft.completion_text(tokenizer, Example([{"role": "user", "content": "hi"}], "moo"))
    assert prompt.endswith("<|im_start|>assistant\n") and "You are a helpful" in prompt
    assert completion == "moo<|im_end|>"


# -- splits ---------------------------------------------------------------------------------------


def test_validation_split_and_subsets_are_seeded_and_nested():
    data = sound_examples(40)
    train, val = ft.split_validation(data, 0.1, seed=3)
    assert (len(train), len(val)) == (36, 4)
    assert ft.split_validation(data, 0.1, seed=3) == (train, val)
    assert not set(map(id, train)) & set(map(id, val))
    shares = [ft.nested_subset(train, f, seed=3) for f in (0.25, 0.5, 1.0)]
    assert [len(s) for s in shares] == [9, 18, 36]
    assert all(ex in shares[1] for ex in shares[0]) and all(ex in shares[2] for ex in shares[1])
    assert ft.split_validation(data[:4], 0.1, seed=3) == (data[:4], [])


# -- LoRA invariants ------------------------------------------------------------------------------


@pytest.mark.parametrize("r, targets", [(8, "all-linear"), (4, ["q_proj", "v_proj"]), (2, ["down_proj"])])
def test_trainable_parameter_count_is_exact(tiny_dir, r, targets):
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    cfg = model.config
    kv = cfg.num_key_value_heads * cfg.hidden_size // cfg.num_attention_heads
    shapes = {  # (in, out) of every linear layer in one Llama block
        "q_proj": (cfg.hidden_size, cfg.hidden_size),
        "k_proj": (cfg.hidden_size, kv),
        "v_proj": (cfg.hidden_size, kv),
        "o_proj": (cfg.hidden_size, cfg.hidden_size),
        "gate_proj": (cfg.hidden_size, cfg.intermediate_size),
        "up_proj": (cfg.hidden_size, cfg.intermediate_size),
        "down_proj": (cfg.intermediate_size, cfg.hidden_size),
    }
    names = list(shapes) if targets == "all-linear" else targets  # all-linear leaves lm_head alone
    expected = cfg.num_hidden_layers * sum(r * (shapes[n][0] + shapes[n][1]) for n in names)
    peft_model = ft._with_lora(model, make_task(tiny_dir, lora={"r": r, "alpha": 2 * r, "target_modules": targets}))
    trainable = {n: p.numel() for n, p in peft_model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == expected
    assert all("lora_" in n for n in trainable)


def test_unknown_target_modules_list_the_valid_names(tiny_dir):
    tokenizer = build_tokenizer()
    with pytest.raises(TunewiseError, match="q_proj") as err:
        ft._with_lora(build_model(tokenizer), make_task(tiny_dir, lora={"target_modules": ["attn_qkv"]}))
    assert "attn_qkv" in str(err.value)


class Capture:
    """A TrainerCallback keeping the trained in-memory model's logits at the end of training."""

    def __init__(self, input_ids):
        self.input_ids = input_ids
        self.logits = None
        self.params = None
        self.first_step = None

    def __getattr__(self, name):  # every other callback event: nothing to do
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first_step is None:
            self.first_step = state.global_step + 1

    def on_train_end(self, args, state, control, model=None, **kwargs):
        model.eval()
        with torch.no_grad():
            self.logits = model(input_ids=self.input_ids).logits.clone()
        self.params = {n: p.detach().clone() for n, p in model.named_parameters()}


def probe_ids():
    tokenizer = build_tokenizer()
    ex = sound_examples(3)[2]
    text = tokenizer.apply_chat_template(ex.messages, add_generation_prompt=True, tokenize=False)
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])  # (1, seq)


@pytest.fixture(scope="module")
def trained(tiny_dir, tmp_path_factory):
    """One LoRA run shared by the invariant tests: (outcome, capture, task)."""
    capture = Capture(probe_ids())
    task = make_task(tiny_dir, epochs=3, lora={"r": 8, "alpha": 16, "dropout": 0.0})
    out = ft.train_model(task, sound_examples(32), tmp_path_factory.mktemp("train"), callbacks=[capture])
    return out, capture, task


def test_only_adapter_weights_change(tiny_dir, trained):
    out, capture, _ = trained
    base = dict(build_model(build_tokenizer()).named_parameters())
    lora = {n: p for n, p in capture.params.items() if "lora_" in n}
    frozen = {n: p for n, p in capture.params.items() if "lora_" not in n}
    assert lora and any(p.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n)  # B starts at zero
    for name, value in frozen.items():
        base_name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        assert torch.equal(value, base[base_name]), name
    assert len(frozen) == len(base)


def test_saved_adapter_round_trips_and_disabled_adapter_is_the_base(tiny_dir, trained):
    out, capture, _ = trained
    model, _ = ft.load_finetuned(out.adapter_path, str(tiny_dir))
    ids = capture.input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        with model.disable_adapter():
            disabled = model(input_ids=ids).logits
        base = build_model(build_tokenizer()).eval()(input_ids=ids).logits
    assert torch.allclose(logits, capture.logits, atol=1e-5)  # what was trained is what was saved
    assert torch.allclose(disabled, base, atol=1e-6)
    assert not torch.allclose(logits, base, atol=1e-2)  # and the adapter does something
    files = {p.name for p in out.adapter_path.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", ft.TRAINING_FILE} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)  # no pickles shipped
    assert not (out.folder / "checkpoints").exists()


def test_training_summary_has_measurements(trained):
    out, _, task = trained
    s = out.summary
    assert (s.method, s.train_examples, s.val_examples) == ("lora", 29, 3)
    assert s.train_tokens == sum(
        len(ft.encode_example(build_tokenizer(), ex, 64)["input_ids"])
        for ex in ft.split_validation(sound_examples(32), 0.1, 0)[0]
    ) * round(s.epochs_run)
    assert s.tokens_per_s > 0 and s.wall_s > 0 and s.peak_memory_mb > 0
    assert s.hosted_cost_estimate == pytest.approx(3.00 * s.train_tokens / round(s.epochs_run) * task.train.epochs / 1e6)
    assert [p.epoch for p in s.loss_curve if p.val_loss is not None] == [1.0, 2.0, 3.0][: len([p for p in s.loss_curve if p.val_loss])]


def test_full_fine_tuning_trains_every_weight_and_saves_a_model_folder(tiny_dir, tmp_path):
    from tunewise.finetune.export import export_run

    capture = Capture(probe_ids())
    task = make_task(tiny_dir, method="full", epochs=1, learning_rate=0.001)
    out = ft.train_model(task, sound_examples(16), tmp_path, callbacks=[capture])
    assert out.adapter_path.name == "model" and (out.adapter_path / "model.safetensors").is_file()
    base = dict(build_model(build_tokenizer()).named_parameters())
    assert set(capture.params) == set(base)
    assert all(not torch.equal(capture.params[n], base[n]) for n in base)
    model, _ = ft.load_finetuned(out.adapter_path, str(tiny_dir))
    with torch.no_grad():
        assert torch.allclose(model(input_ids=capture.input_ids).logits, capture.logits, atol=1e-5)
    merged = export_run(tmp_path, tmp_path / "export", merge=True)  # a full fine-tune is copied as it is
    assert (merged / "model.safetensors").is_file() and "full fine-tuning" in (merged / "README.md").read_text()


def test_finished_adapter_is_reused_and_a_changed_config_retrains(tiny_dir, trained, tmp_path):
    out, _, task = trained
    again = ft.train_model(task, sound_examples(32), out.folder.parent)
    assert again.reused and again.adapter_path == out.adapter_path
    assert again.summary == out.summary
    changed = task.model_copy(update={"train": task.train.model_copy(update={"learning_rate": 0.02, "epochs": 1})})
    other = ft.train_model(changed, sound_examples(32), out.folder.parent)
    assert not other.reused and other.folder != out.folder


class MatmulDtypes:
    """Records the dtype of the first attention projection's output on every training forward pass."""

    def __init__(self):
        self.seen = set()

    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        layer = next(m for n, m in model.named_modules() if n.endswith("q_proj.base_layer"))
        layer.register_forward_hook(lambda module, inputs, output: self.seen.add(output.dtype))


@pytest.mark.parametrize("bf16, dtype", [("on", torch.bfloat16), ("off", torch.float32)])
def test_bf16_setting_runs_training_matmuls_in_bf16_on_cpu(tiny_dir, tmp_path, bf16, dtype):
    probe = MatmulDtypes()
    out = ft.train_model(make_task(tiny_dir, epochs=1, bf16=bf16), sound_examples(8), tmp_path, callbacks=[probe])
    assert probe.seen == {dtype}
    assert out.summary.bf16 is (bf16 == "on")


@pytest.mark.parametrize("setting, expected", [("off", False), ("on", True)])
def test_bf16_on_and_off_are_obeyed_on_cpu(setting, expected):
    assert ft.resolve_train_bf16(setting, cuda=False) is expected


def test_api_models_cannot_be_fine_tuned(tmp_path):
    task = parse_task({"name": "t", "data": {"train": "a", "eval": "b"}, "model": "openai:gpt-4o-mini"})
    with pytest.raises(TunewiseError, match="API model.*local folder"):
        ft.train_model(task, sound_examples(8), tmp_path)


def test_qlora_without_cuda_names_both_options(tiny_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TunewiseError, match="CUDA") as err:
        ft.train_model(make_task(tiny_dir, method="qlora"), sound_examples(8), tmp_path)
    assert "bitsandbytes" in str(err.value) and "method: lora" in str(err.value)


# -- early stopping, overfitting, resume ----------------------------------------------------------


def val_loss(model, tokenizer, examples) -> float:
    """Mean loss over every answer token of `examples` in one batch, as Trainer's evaluation does."""
    rows = [ft.encode_example(tokenizer, ex, 64) for ex in examples]
    batch = ft.PadCollator(tokenizer.pad_token_id)(rows)
    with torch.no_grad():
        return model(**batch).loss.item()


def test_early_stopping_keeps_the_best_checkpoint_and_warns(tiny_dir, tmp_path):
    # Validation answers are the wrong sounds: the better the model learns train, the worse validation gets.
    task = make_task(tiny_dir, epochs=8, batch_size=8, early_stopping_patience=1)
    validation = sound_examples(8, flip=True)
    out = ft.train_model(task, sound_examples(32), tmp_path, validation=validation)
    s = out.summary
    evals = [(p.epoch, p.val_loss) for p in s.loss_curve if p.val_loss is not None]
    best_epoch, best_loss = min(evals, key=lambda e: e[1])
    assert s.epochs_run < 8  # stopped early
    assert evals[-1][0] == s.epochs_run and evals[-1][1] > best_loss
    assert s.best_epoch == best_epoch
    model, tokenizer = ft.load_finetuned(out.adapter_path, str(tiny_dir))
    assert val_loss(model, tokenizer, validation) == pytest.approx(best_loss, abs=1e-4)
    assert s.overfitting_warning and f"{best_loss:.2f} -> {evals[-1][1]:.2f}" in s.overfitting_warning


class Interrupt:
    def __init__(self, at_step: int):
        self.at_step = at_step

    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt


def test_resume_continues_from_the_last_complete_checkpoint(tiny_dir, tmp_path):
    task = make_task(tiny_dir, epochs=2, batch_size=4, eval_every_steps=2, early_stopping_patience=0)
    data = sound_examples(24)  # 22 train + 2 validation: 6 steps an epoch, 12 in all
    with pytest.raises(KeyboardInterrupt):
        ft.train_model(task, data, tmp_path, callbacks=[Interrupt(at_step=5)])
    folder = next(tmp_path.iterdir())
    checkpoints = folder / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert not (folder / "adapter").exists()
    # A checkpoint cut off mid-write (no trainer_state.json) must not be resumed from.
    half = checkpoints / "checkpoint-6"
    half.mkdir()
    (half / "adapter_model.safetensors").write_bytes(b"truncated")
    capture = Capture(probe_ids())
    out = ft.train_model(task, data, tmp_path, callbacks=[capture])
    assert capture.first_step == 5  # steps 1-4 came from checkpoint-4
    assert out.folder == folder and not out.reused
    assert max(p.step for p in out.summary.loss_curve) == 12
    assert out.summary.epochs_run == 2.0
    assert not half.exists()


def test_last_complete_checkpoint_ignores_half_written_ones(tmp_path):
    for step, state in [(3, "{}"), (7, "{}"), (9, None), (11, '{"truncat')]:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-x").mkdir()
    assert ft.last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-7"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3", "checkpoint-7", "checkpoint-x"]
    assert ft.last_complete_checkpoint(tmp_path / "missing") is None


# -- the rung, the learning curve, export ---------------------------------------------------------


class FakeRetriever:
    def __init__(self):
        self.queries = []

    def search(self, query, k):
        from types import SimpleNamespace

        self.queries.append(query)
        return [SimpleNamespace(chunk=SimpleNamespace(doc_id=f"d{i}", text="cat", title="")) for i in range(k)]


@pytest.fixture(scope="module")
def ladder(tiny_dir, tmp_path_factory):
    """A run context on the tiny model, its two fine-tuned rungs prepared (one training between them)."""
    from tunewise.finetune.rung import prepare_finetuned
    from tunewise.rungs.base import LadderContext

    task = make_task(tiny_dir, epochs=2, learning_curve=[0.5, 1.0])
    retriever = FakeRetriever()
    ctx = LadderContext(
        task, sound_examples(24), sound_examples(8), tmp_path_factory.mktemp("run"), lambda: None, lambda: retriever, lambda: None
    )
    lora = prepare_finetuned(ctx, with_rag=False)
    lora_rag = prepare_finetuned(ctx, with_rag=True)
    return ctx, lora, lora_rag, retriever


def test_lora_and_lora_rag_share_one_adapter(ladder):
    ctx, lora, lora_rag, retriever = ladder
    assert lora.adapter_path == lora_rag.adapter_path
    assert lora.model is lora_rag.model  # loaded once
    assert lora.model.max_batch_size == ctx.task.ladder.batch_size  # batched like the prompted rungs
    assert len(list((ctx.run_dir / "train").iterdir())) == 1
    summary = lora.details["training"]
    assert lora.finetuned and lora.upfront_cost == pytest.approx(summary.hosted_cost_estimate) and lora.upfront_cost > 0
    turns = [{"role": "system", "content": "caller's"}, {"role": "user", "content": "what does the cat say ?"}]
    plain = lora.build(turns)
    assert plain.messages == [{"role": "system", "content": "answer briefly ."}, turns[1]]
    with_docs = lora_rag.build(turns)
    assert retriever.queries == ["what does the cat say ?"]
    assert with_docs.retrieved_ids == ["d0", "d1", "d2"]
    assert with_docs.messages[-1]["content"].startswith("Documents:\n[1] cat")
    generations = lora.model.generate([plain.messages], max_new_tokens=4)
    assert generations[0].output_tokens >= 1


def test_learning_curve_reuses_the_rung_adapter(ladder):
    from tunewise.eval.metrics import get_metric
    from tunewise.finetune.curve import learning_curve

    ctx, lora, _, _ = ladder
    curve = learning_curve(ctx, get_metric("exact_match"))
    sizes = [p.examples for p in curve.points]
    assert sizes == [11, 22]  # 24 examples - 2 validation, then half of them
    folders = sorted(p.name for p in (ctx.run_dir / "train").iterdir())
    assert len(folders) == 2 and any(name.startswith("lora-50pct-") for name in folders)
    assert all(0 <= p.score.ci_low <= p.score.value <= p.score.ci_high <= 1 for p in curve.points)
    assert curve.rung == "lora" and curve.verdict
    again = learning_curve(ctx, get_metric("exact_match"))  # cached adapters and scores
    assert again.points == curve.points


def test_export_adapter_and_merged_model_give_the_same_greedy_answers(ladder, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewise.finetune.export import export_run

    ctx, lora, _, _ = ladder
    adapter = export_run(ctx.run_dir, tmp_path / "adapter")
    assert (adapter / "adapter_model.safetensors").is_file()
    card = (adapter / "README.md").read_text()
    assert str(ctx.task.model) in card and "sha256" in card and "r=16" in card
    merged = export_run(ctx.run_dir, tmp_path / "merged", merge=True)
    assert not (merged / "adapter_config.json").exists()
    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged)
    peft_model = lora.model.model
    for ex in sound_examples(8):
        text = tokenizer.apply_chat_template(ex.messages, add_generation_prompt=True, tokenize=False)
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            assert torch.allclose(plain(input_ids=ids).logits, peft_model(input_ids=ids).logits, atol=1e-4)
            kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            assert plain.generate(ids, **kwargs).tolist() == peft_model.generate(input_ids=ids, **kwargs).tolist()


def test_export_card_carries_the_run_scores(ladder, tmp_path):
    from tunewise.finetune.export import export_run
    from tunewise.ladder.results import Results, RungResult, Score, save_results

    ctx, *_ = ladder
    results = Results(
        run_id="r1", task="tiny", created="2024-01-01T00:00:00", model="tiny", metric="exact_match", eval_examples=8,
        train_examples=24, calls_per_month=1, horizon_months=12,
        rungs=[RungResult(name="lora", title="LoRA fine-tune", score=Score(value=0.625, ci_low=0.25, ci_high=0.875, n=8))],
    )
    save_results(results, ctx.run_dir)
    try:
        card = (export_run(ctx.run_dir, tmp_path / "a") / "README.md").read_text()
    finally:
        (ctx.run_dir / "results.json").unlink()
    assert "| LoRA fine-tune | 0.625 | 0.250 - 0.875 |" in card


def test_export_command(ladder, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from tunewise.cli import cli

    ctx, *_ = ladder
    monkeypatch.setenv("TUNEWISE_RUNS", str(ctx.run_dir.parent))
    by_id = CliRunner().invoke(cli, ["export", ctx.run_dir.name, "--out", str(tmp_path / "a"), "--json"])
    assert by_id.exit_code == 0, by_id.output
    assert json.loads(by_id.output) == {"folder": str(tmp_path / "a"), "merged": False}
    merged = CliRunner().invoke(cli, ["export", str(ctx.run_dir), "--merge", "--out", str(tmp_path / "m")])
    assert merged.exit_code == 0 and "merged model" in merged.output
    assert (tmp_path / "m" / "model.safetensors").is_file()
    missing = CliRunner().invoke(cli, ["export", "no-such-run"])
    assert missing.exit_code != 0 and "no run folder or run id 'no-such-run'" in str(missing.exception)


def test_export_without_a_finished_adapter_says_what_to_give(tmp_path):
    from tunewise.finetune.export import export_run

    with pytest.raises(TunewiseError, match="no finished fine-tune"):
        export_run(tmp_path)


# -- the command line -----------------------------------------------------------------------------


def write_task(folder: Path, tiny_dir: Path, n: int = 24, **train) -> Path:
    import yaml

    rows = [ex.to_chat() for ex in sound_examples(n)]
    write_jsonl(folder / "train.jsonl", rows)
    write_jsonl(folder / "eval.jsonl", rows[:4])
    spec = {"epochs": 1, "batch_size": 4, "learning_rate": 0.01, "max_length": 64, "bf16": "off", **train}
    task = {"name": "tiny", "data": {"train": "train.jsonl", "eval": "eval.jsonl"}, "model": str(tiny_dir), "train": spec}
    path = folder / "task.yaml"
    path.write_text(yaml.safe_dump(task))
    return path


def test_train_command_prints_losses_and_adapter(tiny_dir, tmp_path):
    from click.testing import CliRunner

    from tunewise.cli import cli

    task_file = write_task(tmp_path, tiny_dir)
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(cli, ["train", str(task_file), "--epochs", "2", "--rank", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Loss" in result.output and "tokens/s" in result.output
    adapter = next(out.glob("lora-full-*/adapter"))
    assert f"adapter: {adapter}" in result.output.replace("\n", "")
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    again = runner.invoke(cli, ["train", str(task_file), "--epochs", "2", "--rank", "4", "--out", str(out), "--json"])
    assert json.loads(again.output)["reused"] is True
    bad = runner.invoke(cli, ["train", str(task_file), "--epochs", "0"])
    assert bad.exit_code != 0 and "epochs" in str(bad.exception or bad.output)


def test_train_command_learning_curve(tiny_dir, tmp_path):
    from click.testing import CliRunner

    from tunewise.cli import cli

    task_file = write_task(tmp_path, tiny_dir, n=16, learning_curve=[0.5, 1.0])
    result = CliRunner().invoke(cli, ["train", str(task_file), "--out", str(tmp_path / "out"), "--learning-curve"])
    assert result.exit_code == 0, result.output
    assert "     7 examples:" in result.output and "    14 examples:" in result.output
    assert "Learning curve: " in result.output


def test_accelerate_launch_runs_the_same_command(tiny_dir, tmp_path):
    """The multi-GPU path (accelerate launch) with one CPU process: same code, same adapter layout."""
    pytest.importorskip("accelerate")
    task_file = write_task(tmp_path, tiny_dir, n=16)
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launcher = Path(sys.executable).with_name("accelerate")
    cmd = [str(launcher), "launch", "--num_processes", "1", "--cpu", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "tunewise.cli", "train", str(task_file), "--out", str(out), "--json"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout[done.stdout.index("{"):])
    adapter = Path(report["adapter"])
    assert (adapter / "adapter_model.safetensors").is_file() and report["training"]["train_examples"] == 14


@pytest.mark.slow
def test_lora_on_the_embedded_model(tmp_path):
    """The real path: SmolLM2-135M-Instruct, a few LoRA steps on 16 intent examples."""
    from tunewise.data.splits import load_splits
    from tunewise.finetune.rung import finetuned_model
    from tunewise.task import load_task

    task = load_task(EXAMPLES / "intent" / "task.yaml")
    task = task.model_copy(update={"train": task.train.model_copy(update={"epochs": 2, "batch_size": 4})})
    train, evals = load_splits(task)
    out = ft.train_model(task, train[:16], tmp_path)
    s = out.summary
    assert (s.train_examples, s.val_examples) == (14, 2)
    losses = [p.train_loss for p in s.loss_curve if p.train_loss is not None]
    assert losses[-1] < losses[0]
    assert s.tokens_per_s > 0 and s.bf16 == ft.resolve_train_bf16("auto", cuda=torch.cuda.is_available())
    model = finetuned_model(out.adapter_path, task)
    (generation,) = model.generate([evals[0].messages], max_new_tokens=8)
    assert generation.text

    # Exported and merged, the model loads in plain transformers and answers as the adapter does.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewise.finetune.export import export_run
    from tunewise.finetune.train import load_finetuned

    merged_dir = export_run(out.adapter_path, tmp_path / "merged", merge=True)
    plain = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    adapter_model, _ = load_finetuned(out.adapter_path, task.model)
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    for ex in evals[:4]:
        text = tokenizer.apply_chat_template(ex.messages, add_generation_prompt=True, tokenize=False)
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            assert plain.generate(ids, **kwargs).tolist() == adapter_model.eval().generate(input_ids=ids, **kwargs).tolist()
