"""Export for serving engines, and the merged LoRA rung, on a tiny random Llama stored as a GGUF.

The tiny model (2 layers, width 64) carries the embedded SmolLM2's GGUF tokenizer and chat template,
so it goes through the same paths as the real embedded model: dequantised from GGUF for training,
a real BPE tokenizer for llama.cpp, a ChatML template for Ollama. No hub, no engine installed: the
tests check every artefact that can be checked here (PEFT loads the adapter and answers the same,
the Modelfile parses with a port of Ollama's parser, the GGUF reads back and transformers loads it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
gguf = pytest.importorskip("gguf")

from conftest import write_jsonl  # noqa: E402

from tunewise.errors import TunewiseError  # noqa: E402

ANIMALS = ["cat", "dog", "cow", "duck", "sheep", "pig", "horse", "owl"]
SOUNDS = ["meow", "woof", "moo", "quack", "baa", "oink", "neigh", "hoot"]
SYSTEM = "Answer with the sound only."


def embedded_gguf() -> Path:
    from tunewise.models.resolve import ModelNotFound, locate_embedded

    try:
        folder, file = locate_embedded()
    except ModelNotFound as err:
        pytest.skip(str(err))
    return folder / file


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    """A random 2-layer Llama with the embedded model's tokenizer, written as an f32 GGUF."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunewise.finetune.gguf_export import write_gguf

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, rms_norm_eps=1e-5,
        rope_theta=100000.0, initializer_range=0.2,
    )
    model = LlamaForCausalLM(config).eval()
    return write_gguf(model, embedded_gguf(), tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf", "f32")


@pytest.fixture(scope="module")
def run_dir(tiny_gguf, tmp_path_factory) -> Path:
    """A finished run on the tiny GGUF: zero-shot, fixed few-shot (k=2) and LoRA, all measured."""
    from tunewise.ladder.run import RunOptions, run_ladder
    from tunewise.task import parse_task

    folder = tmp_path_factory.mktemp("export-run")
    rows = [
        {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"What does the {a} say?"},
                      {"role": "assistant", "content": s}]}
        for a, s in zip(ANIMALS * 3, SOUNDS * 3)
    ]
    raw = {
        "name": "tiny-sounds",
        "data": {"train": str(write_jsonl(folder / "train.jsonl", rows)), "eval": str(write_jsonl(folder / "eval.jsonl", rows[:6]))},
        "model": str(tiny_gguf),
        # fp32: merged and unmerged LoRA agree to ~1e-5 in the logits. Under bf16 autocast (auto on a CPU
        # with AVX512-BF16) they round differently and a near-tie can flip: 3 of 6 answers of this random
        # model differed.
        "model_options": {"bf16": "off"},
        "metric": "exact_match",
        "ladder": {"rungs": ["zero_shot", "few_shot", "lora"], "few_shot": {"k": 2, "selection": "fixed"}, "max_new_tokens": 4, "batch_size": 8},
        "train": {"epochs": 1, "batch_size": 4, "learning_rate": 0.01, "max_length": 64, "bf16": "off", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
    }
    task = parse_task(raw, folder / "task.yaml")
    results = run_ladder(
        task, RunOptions(all_rungs=True, evidence=False, report=False, out_dir=folder / "runs"), log=lambda m: None
    )
    assert {r.name for r in results.rungs if r.status == "done"} == {"zero_shot", "few_shot", "lora"}
    return folder / "runs" / results.run_id


def eval_conversations(run: Path) -> list[list[dict]]:
    from tunewise.ladder.run import open_run

    _, ctx, _ = open_run(run)
    return [[{"role": "system", "content": SYSTEM}, *ex.turns] for ex in ctx.eval]


# -- the LoRA rung generates merged, as deployed ------------------------------------------------


def test_lora_rung_generates_with_the_adapter_merged_and_answers_as_unmerged(run_dir):
    from peft import PeftModel

    from tunewise.finetune.export import find_adapter
    from tunewise.finetune.rung import finetuned_model
    from tunewise.ladder.run import open_run

    task, _, _ = open_run(run_dir)
    adapter = find_adapter(run_dir)
    merged = finetuned_model(adapter, task)
    unmerged = finetuned_model(adapter, task, merge=False)
    assert not isinstance(merged.model, PeftModel) and isinstance(unmerged.model, PeftModel)
    assert not any("lora_" in name for name, _ in merged.model.named_parameters())
    conversations = eval_conversations(run_dir)
    answers = [g.text for g in merged.generate(conversations, max_new_tokens=6)]
    assert answers == [g.text for g in unmerged.generate(conversations, max_new_tokens=6)]
    # the adapter changed something, so the equality above is not the base against itself
    delta = sum(float(p.abs().sum()) for n, p in unmerged.model.named_parameters() if "lora_B" in n)
    assert delta > 0
    saved = [json.loads(line)["prediction"] for line in (run_dir / "predictions" / "lora.jsonl").read_text().splitlines()]
    assert len(saved) == len(conversations)


# -- vLLM -----------------------------------------------------------------------------------------


def test_vllm_export_is_a_peft_adapter_on_a_transformers_base_that_answers_as_the_rung(run_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewise.finetune.export import export_for, find_adapter
    from tunewise.finetune.rung import finetuned_model
    from tunewise.ladder.run import open_run

    result = export_for(run_dir, "vllm", tmp_path / "vllm", rung="lora")
    out = result.folder
    assert result.command == (
        "vllm serve ./base --enable-lora --lora-modules tiny-sounds=./adapter --max-lora-rank 8 --generation-config vllm"
    )
    assert result.command in (out / "launch.sh").read_text() and result.command in (out / "README.md").read_text()
    assert os.access(out / "launch.sh", os.X_OK)
    assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json", "base/config.json", "request.json"} <= set(result.files)
    assert not any(f.endswith((".bin", ".pt")) for f in result.files)
    request = json.loads((out / "request.json").read_text())
    assert request["model"] == "tiny-sounds" and request["temperature"] == 0 and request["max_tokens"] == 4
    assert request["messages"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "<your input>"}]

    # What vLLM would load, loaded by plain transformers + PEFT, answers as the ladder's rung does.
    base = AutoModelForCausalLM.from_pretrained(out / "base", dtype=torch.float32)
    exported = PeftModel.from_pretrained(base, out / "adapter").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "adapter")
    task, _, _ = open_run(run_dir)
    rung = finetuned_model(find_adapter(run_dir), task)
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    for conversation in eval_conversations(run_dir)[:4]:
        text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])  # (1, seq)
        with torch.no_grad():
            assert torch.allclose(exported(input_ids=ids).logits, rung.model(input_ids=ids).logits, atol=1e-4)
            assert exported.generate(input_ids=ids, **kwargs).tolist() == rung.model.generate(input_ids=ids, **kwargs).tolist()


# -- Ollama ---------------------------------------------------------------------------------------

OLLAMA_COMMANDS = {"from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter", "message", "requires"}


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """Ollama's Modelfile grammar, ported from its parser (parser/parser.go, ParseFile): a state
    machine over runes; a value ends at a newline once it unquotes (\"\"\"...\"\"\", "..." or a bare
    word run); no escapes. Returns (command, args) as Ollama records them: FROM is "model", a
    PARAMETER is its own name, a MESSAGE is "role: content". Raises ValueError where Ollama errs."""
    NIL, NAME, VALUE, PARAM, MESSAGE, COMMENT = range(6)

    def unquote(s: str) -> tuple[str, bool]:
        if s.startswith('"""'):
            return (s[3:-3], True) if len(s) >= 6 and s.endswith('"""') else ("", False)
        if s.startswith('"'):
            return (s[1:-1], True) if len(s) >= 2 and s.endswith('"') else ("", False)
        return s, True

    def alpha(r: str) -> bool:
        return r.isascii() and r.isalpha()

    def step(r: str, state: int) -> tuple[int, str]:
        space, newline = r in " \t", r in "\r\n"
        if state == NIL:
            return (COMMENT, "") if r == "#" else (NIL, "") if space or newline else (NAME, r)
        if state == NAME:
            if alpha(r):
                return NAME, r
            if space:
                return VALUE, ""
            raise ValueError("invalid command")
        if state == VALUE:
            return (NIL, r) if space or newline else (VALUE, r)
        if state in (PARAM, MESSAGE):
            if alpha(r) or (state == PARAM and (r.isdigit() or r == "_")):
                return state, r
            if space:
                return VALUE, ""
            raise ValueError("unexpected end")
        return (NIL, "") if newline else (COMMENT, "")

    commands: list[tuple[str, str]] = []
    name, role, buf, state = "", "", "", NIL
    for char in text:
        nxt, r = step(char, state)
        if nxt != state:
            if state == NAME:
                word = buf.lower()
                if word not in OLLAMA_COMMANDS:
                    raise ValueError(f"invalid command {buf!r}")
                name = "model" if word == "from" else word
                nxt = {"parameter": PARAM, "message": MESSAGE}.get(word, nxt)
            elif state == PARAM:
                name = buf
            elif state == MESSAGE:
                if buf not in ("system", "user", "assistant"):
                    raise ValueError(f"invalid message role {buf!r}")
                role = buf
            elif state == VALUE:
                value, ok = unquote(buf.strip())
                if not ok or r in " \t":
                    buf += r
                    continue
                commands.append((name, f"{role}: {value}" if role else value))
                role = ""
            buf, state = "", nxt
        if r and (r.isprintable()):
            buf += r
    if state == VALUE:
        value, ok = unquote(buf.strip())
        if not ok:
            raise ValueError("unexpected end of file inside a quoted value")
        commands.append((name, f"{role}: {value}" if role else value))
    elif state not in (NIL, COMMENT):
        raise ValueError("unexpected end of file")
    if not any(c == "model" for c, _ in commands):
        raise ValueError("no FROM line")
    return commands


def test_the_modelfile_parser_port_follows_ollama():
    assert parse_modelfile('FROM llama3\nPARAMETER temperature 0\n# note\nSYSTEM """a\n"b" c"""\nMESSAGE user hi there\n') == [
        ("model", "llama3"), ("temperature", "0"), ("system", 'a\n"b" c'), ("message", "user: hi there"),
    ]
    for bad in ["PARAMETER x 1\n", "FROM a\nBOGUS x\n", 'FROM a\nSYSTEM """open\n', "FROM a\nMESSAGE robot hi\n"]:
        with pytest.raises(ValueError):
            parse_modelfile(bad)


@pytest.mark.parametrize(
    "text",
    ["plain", "two\nlines", 'says "hi"', 'ends with a quote"', '"starts with one', 'three """ inside', 'ends in three quotes"""', 'a quote ends this line"\nthen more', '"""', "", "  padded  ", "tab\tand ünïcode"],
)
def test_modelfile_quote_round_trips_through_ollamas_grammar(text):
    from tunewise.finetune.export import modelfile_quote

    assert parse_modelfile(f"FROM x\nSYSTEM {modelfile_quote(text)}\n") == [("model", "x"), ("system", text)]


def test_modelfile_quote_refuses_text_ollama_cannot_hold():
    from tunewise.finetune.export import modelfile_quote

    for text in ['a line ending in """\nthen more', 'x"""\n', 'x"""\r\ny']:
        with pytest.raises(TunewiseError, match="no escapes"):
            modelfile_quote(text)


def test_ollama_modelfile_for_the_lora_rung_parses_with_base_adapter_template_and_system(run_dir, tiny_gguf, tmp_path):
    from tunewise.finetune.export import CHATML_GO_TEMPLATE, export_for

    result = export_for(run_dir, "ollama", tmp_path / "ollama", rung="lora")
    commands = parse_modelfile((result.folder / "Modelfile").read_text())
    assert commands == [
        ("model", str(tiny_gguf)),
        ("adapter", "./adapter"),
        ("template", CHATML_GO_TEMPLATE),
        ("stop", "<|im_end|>"),
        ("temperature", "0"),
        ("num_predict", "4"),
        ("system", SYSTEM),
    ]
    assert (result.folder / "adapter" / "adapter_model.safetensors").is_file()
    assert result.command == "ollama create tiny-sounds -f Modelfile && ollama run tiny-sounds"


def test_ollama_modelfile_carries_the_fixed_few_shot_turns_the_ladder_used(run_dir, tmp_path):
    from tunewise.finetune.export import CHATML_GO_TEMPLATE, export_for
    from tunewise.ladder.run import RunOptions, open_run
    from tunewise.rungs import get_rung
    from tunewise.models.base import FakeModel

    result = export_for(run_dir, "ollama", tmp_path / "ollama", rung="few_shot")
    commands = parse_modelfile((result.folder / "Modelfile").read_text())
    messages = [args.split(": ", 1) for name, args in commands if name == "message"]
    _, ctx, _ = open_run(run_dir, RunOptions(model=FakeModel()))
    built = get_rung("few_shot").prepare(ctx).build([{"role": "user", "content": "What does the owl say?"}]).messages
    assert built[0] == {"role": "system", "content": SYSTEM}
    assert [{"role": r, "content": c} for r, c in messages] == built[1:-1] and len(messages) == 4
    assert ("model", str(Path(ctx.task.model))) in commands and not any(name == "adapter" for name, _ in commands)
    # The Go template renders ChatML; the model's own template renders this conversation the same way.
    from tunewise.finetune.export import _tokenizer, load_deployment

    tokenizer = _tokenizer(load_deployment(run_dir, "few_shot"))
    chatml = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in built) + "<|im_start|>assistant\n"
    assert tokenizer.apply_chat_template(built, add_generation_prompt=True, tokenize=False) == chatml
    assert ("template", CHATML_GO_TEMPLATE) in commands


# -- llama.cpp ------------------------------------------------------------------------------------


def test_llamacpp_gguf_reads_back_and_transformers_answers_as_the_merged_model(run_dir, tiny_gguf, tmp_path):
    from click.testing import CliRunner
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewise.cli import cli
    from tunewise.finetune.export import find_adapter
    from tunewise.finetune.rung import finetuned_model
    from tunewise.ladder.run import open_run

    out = tmp_path / "llamacpp"
    done = CliRunner().invoke(cli, ["export", str(run_dir), "--for", "llamacpp", "--rung", "lora", "--gguf-type", "f32", "--out", str(out), "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert report["command"] == "llama-server -m model.gguf --jinja --temp 0 --port 8080 -n 4"
    reader = gguf.GGUFReader(str(out / "model.gguf"))
    base = gguf.GGUFReader(str(tiny_gguf))
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["tokenizer.chat_template"].contents() == base.fields["tokenizer.chat_template"].contents()
    assert len(reader.fields["tokenizer.ggml.tokens"].contents()) == 49152
    assert sorted(t.name for t in reader.tensors) == sorted(t.name for t in base.tensors)
    assert {t.tensor_type.name for t in reader.tensors} == {"F32"}

    # The separate LoRA GGUF: base + alpha / r * B @ A is the merged file's weight, row order included.
    lora = {t.name: t for t in gguf.GGUFReader(str(out / "adapter.gguf")).tensors}
    merged_file = {t.name: t for t in reader.tensors}
    base_file = {t.name: t for t in base.tensors}
    assert len(lora) == 2 * 7 * 2  # A and B for 7 linear layers in each of 2 blocks
    for name in ["blk.0.attn_q.weight", "blk.1.attn_k.weight", "blk.1.ffn_down.weight"]:
        a, b = lora[f"{name}.lora_a"].data, lora[f"{name}.lora_b"].data  # (r, in), (out, r)
        w = base_file[name].data + 16 / 8 * (b @ a)
        assert abs(w - merged_file[name].data).max() < 1e-5, name

    task, _, _ = open_run(run_dir)
    merged = finetuned_model(find_adapter(run_dir), task).model
    loaded = AutoModelForCausalLM.from_pretrained(str(out), gguf_file="model.gguf", dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out), gguf_file="model.gguf")
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    for conversation in eval_conversations(run_dir)[:4]:
        text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])  # (1, seq)
        with torch.no_grad():
            assert torch.allclose(loaded(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-4)
            assert loaded.generate(input_ids=ids, **kwargs).tolist() == merged.generate(input_ids=ids, **kwargs).tolist()


def test_gguf_writer_permutes_q_and_k_as_llama_cpp_stores_them(tiny_gguf):
    """Without the permutation the file still loads but answers differently: check it is applied."""
    from transformers import AutoModelForCausalLM

    from tunewise.finetune.gguf_export import permute_qk

    model = AutoModelForCausalLM.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name, dtype=torch.float32)
    reader = gguf.GGUFReader(str(tiny_gguf))
    stored = {t.name: t for t in reader.tensors}
    q = model.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    k = model.model.layers[0].self_attn.k_proj.weight.detach().numpy()
    q_file = stored["blk.0.attn_q.weight"].data.reshape(q.shape)
    k_file = stored["blk.0.attn_k.weight"].data.reshape(k.shape)
    assert (q_file == permute_qk(q, 4, 4)).all() and not (q_file == q).all()
    assert (k_file == permute_qk(k, 4, 2)).all() and not (k_file == k).all()


@pytest.mark.parametrize("outtype, matrix_type", [("f16", "F16"), ("q8_0", "Q8_0")])
def test_gguf_writer_types_read_back_close_to_the_weights(tiny_gguf, tmp_path, outtype, matrix_type):
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunewise.finetune.gguf_export import permute_qk, write_gguf

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, tie_word_embeddings=True, rope_theta=100000.0)
    model = LlamaForCausalLM(config)
    reader = gguf.GGUFReader(str(write_gguf(model, tiny_gguf, tmp_path / f"m-{outtype}.gguf", outtype)))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_norm.weight"] == "F32" and types["blk.0.ffn_up.weight"] == matrix_type
    stored = next(t for t in reader.tensors if t.name == "blk.1.attn_k.weight")
    values = gguf.quants.dequantize(stored.data, stored.tensor_type).reshape(32, 64)
    expected = permute_qk(model.model.layers[1].self_attn.k_proj.weight.detach().numpy(), 4, 2)
    assert abs(values - expected).max() < 2e-3  # rounding of f16 / 8-bit blocks, nothing more


def test_llamacpp_export_of_a_non_gguf_base_names_the_converter_to_install(tmp_path, monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    from tunewise.finetune.export import Deployment, _write_llamacpp

    folder = tmp_path / "hf-model"
    config = LlamaConfig(vocab_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))).save_pretrained(folder)
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    dep = Deployment(task="t", rung="zero_shot", title="Zero-shot prompt", model_spec=str(folder))
    (tmp_path / "out").mkdir()
    with pytest.raises(TunewiseError, match=r"llama\.cpp's converter, which was not found: git clone https://github.com/ggml-org/llama\.cpp"):
        _write_llamacpp(dep, tmp_path / "out", "f16")


# -- LoRAX ----------------------------------------------------------------------------------------


def test_lorax_export_names_the_local_adapter_in_the_request(run_dir, tmp_path):
    from transformers import AutoTokenizer

    from tunewise.finetune.export import export_for

    result = export_for(run_dir, "lorax", tmp_path / "lorax", rung="lora")
    assert result.command == 'docker run --gpus all --shm-size 1g -p 8080:80 -v "$PWD":/data ghcr.io/predibase/lorax:main --model-id /data/base'
    request = json.loads((result.folder / "request.json").read_text())
    assert request["parameters"] | {} == {
        "adapter_id": "/data/adapter", "adapter_source": "local", "do_sample": False, "max_new_tokens": 4, "stop": ["<|im_end|>"],
    }
    tokenizer = AutoTokenizer.from_pretrained(result.folder / "adapter")
    expected = tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "<your input>"}], add_generation_prompt=True, tokenize=False
    )
    assert request["inputs"] == expected
    config = json.loads((result.folder / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "/data/base" and (result.folder / "base" / "config.json").is_file()


# -- what engines cannot reproduce, and the command line -----------------------------------------


def test_retrieval_and_nearest_shots_are_named_as_not_reproduced_with_how_serve_does_them():
    from tunewise.finetune.export import Deployment, _engine_readme

    dep = Deployment(task="qa", rung="few_shot_rag", title="Few-shot (k=4) + RAG (k=3)", model_spec="embedded",
                     system="Answer.", nearest_k=4, rag={"k": 3, "mode": "hybrid"}, max_new_tokens=32, run_dir=Path("runs/qa-1"))
    missing = dep.not_reproduced()
    assert len(missing) == 2 and "4 training examples nearest" in missing[0] and "3 best chunks" in missing[1]
    readme = _engine_readme(dep, "vllm", "vllm serve X", None, [])
    assert "**Not reproduced by vllm**" in readme and "`tunewise serve runs/qa-1`" in readme
    assert Deployment(task="t", rung="lora", title="LoRA", model_spec="embedded").not_reproduced() == []


def test_export_command_errors_are_one_clear_line(run_dir, tmp_path):
    from click.testing import CliRunner

    from tunewise.cli import cli

    runner = CliRunner()
    both = runner.invoke(cli, ["export", str(run_dir), "--for", "vllm", "--merge"])
    assert both.exit_code != 0 and "--merge and --for do not combine" in both.output
    unknown = runner.invoke(cli, ["export", str(run_dir), "--for", "tgi"])
    assert unknown.exit_code != 0 and "'vllm', 'ollama', 'llamacpp', 'lorax'" in unknown.output
    missing = runner.invoke(cli, ["export", str(run_dir), "--for", "vllm", "--rung", "rag"])
    assert missing.exit_code != 0 and "rung 'rag' was not measured in this run" in str(missing.exception)
    default = runner.invoke(cli, ["export", str(run_dir), "--for", "vllm", "--rung", "zero_shot", "--out", str(tmp_path / "z")])
    assert default.exit_code == 0, default.output
    assert "start: vllm serve ./base --served-model-name tiny-sounds --generation-config vllm" in default.output
    assert not (tmp_path / "z" / "adapter").exists()


# -- the real embedded model ------------------------------------------------------------------------


@pytest.mark.slow
def test_real_model_lora_exports_as_a_gguf_transformers_reads_and_an_ollama_modelfile(tmp_path):
    """SmolLM2-135M-Instruct, one short LoRA run: the llama.cpp GGUF answers as the merged model, and
    the Ollama Modelfile puts the adapter on the embedded GGUF with the template's default system prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import EXAMPLES
    from tunewise.data.splits import load_splits
    from tunewise.finetune import train as ft
    from tunewise.finetune.export import CHATML_GO_TEMPLATE, export_for
    from tunewise.finetune.rung import merge_adapter
    from tunewise.task import load_task

    task = load_task(EXAMPLES / "intent" / "task.yaml")
    task = task.model_copy(update={"train": task.train.model_copy(update={"epochs": 1, "batch_size": 4})})
    train, evals = load_splits(task)
    adapter = ft.train_model(task, train[:16], tmp_path / "train").adapter_path

    result = export_for(adapter, "llamacpp", tmp_path / "llamacpp", gguf_type="f32")
    loaded = AutoModelForCausalLM.from_pretrained(str(result.folder), gguf_file="model.gguf", dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(result.folder), gguf_file="model.gguf")
    merged = merge_adapter(ft.load_finetuned(adapter, task.model)[0])
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    for ex in evals[:4]:
        text = tokenizer.apply_chat_template(ex.messages, add_generation_prompt=True, tokenize=False)
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])  # (1, seq)
        with torch.no_grad():
            assert loaded.generate(input_ids=ids, **kwargs).tolist() == merged.generate(input_ids=ids, **kwargs).tolist()

    ollama = export_for(adapter, "ollama", tmp_path / "ollama")
    commands = dict(parse_modelfile((ollama.folder / "Modelfile").read_text()))
    assert commands["model"] == str(embedded_gguf()) and commands["adapter"] == "./adapter"
    assert commands["template"] == CHATML_GO_TEMPLATE
    assert commands["system"] == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def test_a_constrained_few_shot_rung_exports_its_shots_and_names_the_constraint(tiny_gguf, tmp_path):
    """The constrained variant prompts as its plain rung: the export keeps the fixed shots, and says
    that the grammar is not carried (an engine must be given it, or `tunewise serve` applies it)."""
    from tunewise.finetune.export import load_deployment
    from tunewise.ladder.run import RunOptions, run_ladder
    from tunewise.task import parse_task

    rows = [
        {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"What does the {a} say?"},
                      {"role": "assistant", "content": s}]}
        for a, s in zip(ANIMALS * 3, SOUNDS * 3)
    ]  # fmt: skip
    raw = {
        "name": "tiny-constrained",
        "data": {"train": str(write_jsonl(tmp_path / "train.jsonl", rows)), "eval": str(write_jsonl(tmp_path / "eval.jsonl", rows[:4]))},
        "model": str(tiny_gguf),
        "model_options": {"bf16": "off"},
        "metric": "accuracy",
        "ladder": {"rungs": ["few_shot_constrained"], "few_shot": {"k": 2, "selection": "fixed"}, "max_new_tokens": 4, "batch_size": 8, "latency_requests": 2},
    }
    task = parse_task(raw, tmp_path / "task.yaml")
    results = run_ladder(task, RunOptions(evidence=False, report=False, out_dir=tmp_path / "runs"), log=lambda m: None)
    assert results.rung("few_shot_constrained").status == "done"
    dep = load_deployment(tmp_path / "runs" / results.run_id, "few_shot_constrained")
    assert [m["role"] for m in dep.shots] == ["user", "assistant", "user", "assistant"]
    assert dep.constraint and "labels" in dep.constraint
    assert any(line.startswith("Constrained decoding") for line in dep.not_reproduced())
