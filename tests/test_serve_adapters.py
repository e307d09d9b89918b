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
