"""Several LoRA adapters on one copy of the base model (serve/adapters.py): each view answers exactly
as its adapter alone would, the plain view as the base model, they share the base weights, and the
server gives all views of one base a single worker. Tiny random Llama, random adapters."""

from __future__ import annotations

import copy
import threading

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from test_models import conversations, tiny_llama, tiny_tokenizer  # noqa: E402
from test_serve import client, serve, toy_config, user  # noqa: E402,F401 - serve is a fixture
from tunewise.errors import TunewiseError  # noqa: E402
from tunewise.models.hf import TransformersModel  # noqa: E402
from tunewise.serve.adapters import SharedBase  # noqa: E402
from tunewise.serve.app import service_of  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A saved tiny base model and two saved adapters that change its answers differently."""
    root = tmp_path_factory.mktemp("adapters")
    tok = tiny_tokenizer()
    base = tiny_llama(len(tok), seed=5)
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    for i, targets in enumerate([["q_proj", "v_proj"], ["v_proj", "o_proj"]]):
        wrapped = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets))
        torch.manual_seed(100 + i)
        with torch.no_grad():
            for name, p in wrapped.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 2.0)
        wrapped.save_pretrained(root / f"adapter{i}")
    return root


def test_each_view_answers_as_its_adapter_alone_and_the_plain_view_as_the_base(folders):
    convs = conversations(5, seed=2)
    alone = [
        [g.text for g in TransformersModel.from_spec(str(folders / "base"), adapter=folders / f"adapter{i}", bf16="off").generate(convs, 6)]
        for i in range(2)
    ]
    plain = [g.text for g in TransformersModel.from_spec(str(folders / "base"), bf16="off").generate(convs, 6)]
    assert len({tuple(plain), *map(tuple, alone)}) == 3, "the adapters must change the answers for this test to bite"

    shared = SharedBase.from_spec(str(folders / "base"), bf16="off")
    before = shared.view(None)  # made before any adapter: still the plain model afterwards
    one = shared.add_adapter("one", folders / "adapter0")
    two = shared.add_adapter("two.v2", folders / "adapter1")
    # Interleaved, so a view that forgot to switch adapters would answer with the previous one.
    for view, expected in [(two, alone[1]), (before, plain), (one, alone[0]), (two, alone[1]), (one, alone[0]), (shared.view(None), plain)]:
        assert [g.text for g in view.generate(convs, 6)] == expected, view.name
    pieces = list(two.stream(convs[0], 6))
    assert "".join(pieces) == alone[1][0]
    assert one.name == "tiny+one" or one.name.endswith("+one")

    # One copy of the base weights: every view runs on the same tensors.
    weight = lambda view: view.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight  # noqa: E731
    assert weight(one).data_ptr() == weight(two).data_ptr() == weight(before).data_ptr()
    with pytest.raises(TunewiseError, match="no adapter 'nope'"):
        shared.view("nope")


def test_the_server_gives_all_views_of_one_base_one_worker_and_answers_each_right(folders, serve):
    shared = SharedBase.from_spec(str(folders / "base"), bf16="off")
    views = {"one": shared.add_adapter("one", folders / "adapter0"), "two": shared.add_adapter("two", folders / "adapter1"), "base": shared.view(None)}
    configs = {name: toy_config(view, task=name, max_new_tokens=6) for name, view in views.items()}
    server = serve(configs, batch_wait_ms=50)
    assert len(service_of(server.server.config.app).batchers) == 1
    question = "play some jazz tonight"
    expected = {name: view.generate([[{"role": "system", "content": "Label it."}, *user(question)]], 6)[0].text for name, view in views.items()}
    results: dict = {}
    threads = [
        threading.Thread(target=lambda n=n: results.__setitem__(n, client(server).chat.completions.create(model=n, messages=user(question)).choices[0].message.content))
        for n in list(views) * 2
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == expected


def test_load_runs_puts_every_lora_run_and_the_fallback_on_one_base(tmp_path):
    """Two LoRA runs on the tiny model, served with the router's fallback: one copy of the base where
    there were three, and each run still answers what the ladder recorded."""
    import json

    from conftest import write_jsonl
    from test_finetune import build_model, build_tokenizer, sound_examples

    from tunewise.ladder.run import RunOptions, run_ladder
    from tunewise.serve.app import weights_of
    from tunewise.serve.config import BASE_NAME, load_runs
    from tunewise.task import parse_task

    tiny = tmp_path / "tiny"
    tokenizer = build_tokenizer()
    build_model(tokenizer).save_pretrained(tiny)
    tokenizer.save_pretrained(tiny)
    rows = [ex.to_chat() for ex in sound_examples(24)]
    train, evals = write_jsonl(tmp_path / "train.jsonl", rows), write_jsonl(tmp_path / "eval.jsonl", rows[:6])
    run_dirs = []
    for name, rate in (("tiny_a", 0.01), ("tiny_b", 0.03)):
        task = parse_task({
            "name": name, "model": str(tiny), "data": {"train": str(train), "eval": str(evals)},
            "ladder": {"rungs": ["lora"], "max_new_tokens": 4, "batch_size": 4},
            "train": {"method": "lora", "epochs": 1, "batch_size": 4, "learning_rate": rate, "max_length": 64, "bf16": "off"},
            "model_options": {"bf16": "off"},
        }, tmp_path / f"{name}.yaml")
        results = run_ladder(task, RunOptions(rungs=["lora"], evidence=False, report=False, out_dir=tmp_path / "runs"), log=lambda m: None)
        run_dirs.append(tmp_path / "runs" / results.run_id)

    said: list[str] = []
    configs = load_runs(run_dirs, with_base=True, log=said.append)
    assert any("one copy of the base model for 2 adapter(s) and the plain model (instead of 3)" in line for line in said), said
    models = [configs[n].prepared.model for n in ("tiny_a", "tiny_b", BASE_NAME)]
    assert weights_of(models[0]) is weights_of(models[1]) is weights_of(models[2])
    separate = load_runs(run_dirs, with_base=True, log=lambda m: None, share_base=False)
    assert weights_of(separate["tiny_a"].prepared.model) is not weights_of(separate["tiny_b"].prepared.model)

    for name, run_dir in zip(("tiny_a", "tiny_b"), run_dirs):
        recorded = [json.loads(line) for line in (run_dir / "predictions" / "lora.jsonl").read_text().splitlines()]
        config = configs[name]
        served = [config.prepared.model.generate([config.prepared.build([{"role": "user", "content": r["input"]}]).messages], 4)[0].text for r in recorded]
        assert served == [r["prediction"] for r in recorded], name
