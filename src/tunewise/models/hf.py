"""Local transformers models: batched greedy generation with length bucketing, left padding and a
shared prompt prefix encoded once per batch.

torch and transformers are imported inside functions so `import tunewise.models.hf` stays cheap.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from tunewise.errors import TunewiseError
from tunewise.models.base import Generation, Messages, Progress, StrippedPieces, TemplatedTokens, TokenStream

Bf16 = Literal["auto", "on", "off"]

DEFAULT_MAX_BATCH_TOKENS = {"cpu": 4096, "cuda": 32768}
"""Padded prompt + new tokens per batch, by device type: a memory budget, not a tuned optimum. On CPU
4096 holds ~40 zero-shot intent prompts (~78 tokens + 8 new) or ~12 few-shot ones, and the fp32 KV
cache of the embedded model stays under 200 MB."""

DEFAULT_MAX_BATCH_SIZE = 64

MIN_SHARED_PREFIX = 16
"""A batch whose prompts share at least this many leading tokens encodes them once."""


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 dot products (AVX512-BF16 or AMX); elsewhere bf16 is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_bf16(bf16: Bf16, device: str) -> bool:
    """Whether to autocast to bf16. "auto" is on where the hardware has native bf16 (CUDA cards that
    support it, CPUs with AVX512-BF16 or AMX) and off elsewhere. Measured on the reference CPU
    (2 cores, AVX512-BF16): 2.0x fp32 on short-answer prompts, 1.07x on decode-bound ones, the same
    few-shot intent accuracy; see docs/models.md. Use "off" for bit-exact fp32 greedy outputs."""
    if bf16 not in ("auto", "on", "off"):
        raise TunewiseError(f"bf16 must be one of auto, on, off (got {bf16!r})")
    if bf16 != "auto":
        return bf16 == "on"
    if device.startswith("cuda"):
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device == "cpu" and cpu_supports_bf16()


def bucket_batches(lengths: Sequence[int], max_new_tokens: int, max_batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Group request indices into batches of similar prompt length under a padded-token budget.

    Longest prompts go first, so a budget that is too large for memory fails on the first batch.
    A batch costs len(batch) * (longest prompt + max_new_tokens) tokens; one request always fits.

    >>> bucket_batches([5, 50, 6, 48], max_new_tokens=2, max_batch_tokens=110, max_batch_size=8)
    [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = (lengths[current[0]] if current else lengths[i]) + max_new_tokens
        if current and ((len(current) + 1) * width > max_batch_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class TransformersModel(TemplatedTokens):
    """A `ChatModel` over a transformers causal LM (or a peft `PeftModel` wrapping one).

    Greedy decoding, stopping at the end-of-turn token (`<|im_end|>` for SmolLM2). Requests are
    sorted by prompt length and batched under `max_batch_tokens`, left padded, and returned in the
    caller's order.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        name: str,
        device: str | None = None,
        bf16: Bf16 = "auto",
        max_batch_tokens: int | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    ) -> None:
        import torch

        if (max_batch_tokens is not None and max_batch_tokens < 1) or max_batch_size < 1:
            raise TunewiseError(
                f"max_batch_tokens and max_batch_size must be >= 1 (got {max_batch_tokens}, {max_batch_size})"
            )
        current = next(model.parameters()).device
        if device is None:
            device = str(current) if current.type != "cpu" else ("cuda" if torch.cuda.is_available() else "cpu")
        if torch.device(device) != current:
            model = model.to(device)
        model.eval()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.bf16 = resolve_bf16(bf16, device)
        self.max_batch_tokens = max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS.get(torch.device(device).type, 4096)
        self.max_batch_size = max_batch_size
        # Recorded beside the scores: greedy outputs can differ between bf16 and fp32.
        self.precision = "bf16" if self.bf16 else "fp32"
        self.eos_ids = self._eos_ids()
        # SmolLM2 pads with its eos; a tokenizer without a pad token pads with eos too. Padded
        # positions are masked, so the id only has to be a valid one.
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]

    @classmethod
    def from_spec(cls, spec: str = "embedded", adapter: str | Path | None = None, **opts: Any) -> "TransformersModel":
        """Load a model by spec (see `tunewise.models.weights.load_pretrained`), optionally with a
        saved LoRA adapter folder on top."""
        from tunewise.models.weights import load_pretrained, model_name

        trust_remote_code = opts.pop("trust_remote_code", False)
        model, tokenizer = load_pretrained(spec, trust_remote_code=trust_remote_code)
        name = model_name(spec)
        if adapter is not None:
            model = attach_adapter(model, adapter)
            name = f"{name}+{Path(adapter).name}"
        return cls(model, tokenizer, name, **opts)

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        for value in (configured if isinstance(configured, list) else [configured]) + [self.tokenizer.eos_token_id]:
            if value is not None and value not in ids:
                ids.append(int(value))
        if not ids:
            raise TunewiseError(
                f"model {self.name!r} has no end-of-sequence token: set tokenizer.eos_token or "
                "generation_config.eos_token_id so generation can stop"
            )
        return ids

    def generate(
        self, conversations: Sequence[Messages], max_new_tokens: int, progress: Progress | None = None, constraint: Any = None
    ) -> list[Generation]:
        """`constraint` (tunewise.models.constraints.Constraint) restricts every answer through an
        xgrammar logits processor; without it generation is unchanged."""
        prompts = [self.prompt_ids(conv) for conv in conversations]
        results: list[Generation | None] = [None] * len(prompts)
        batches = bucket_batches(
            [len(p) for p in prompts], max_new_tokens, self.max_batch_tokens, self.max_batch_size
        )
        for batch in batches:
            started = time.perf_counter()
            outputs = self._generate_batch([prompts[i] for i in batch], max_new_tokens, constraint)
            latency = time.perf_counter() - started
            for i, new_ids in zip(batch, outputs):
                text = self.tokenizer.decode(new_ids, skip_special_tokens=True).strip()
                results[i] = Generation(text, len(prompts[i]), len(new_ids), latency)
            if progress:
                progress(len(batch))
        return [r for r in results if r is not None]

    def stream(self, messages: Messages, max_new_tokens: int, constraint: Any = None) -> TokenStream:
        """Yield the answer as it is decoded; return its Generation, equal to what
        `generate([messages], max_new_tokens)[0]` gives (same prompt, same greedy decoding, same
        stripping), so a streamed answer is the non-streamed one.

        Generation runs in a thread and hands each new token to a queue (transformers' streamer
        interface, as `TextIteratorStreamer` does); this generator decodes the tokens so far and
        yields the new text. It decodes the whole answer each time rather than per line, as
        TextIteratorStreamer does, so the pieces join to exactly `decode(all tokens)`: per-line
        decoding drops a leading space on SentencePiece tokenizers. Text ending in an incomplete
        UTF-8 sequence waits for the next token. Closing the generator early stops generation.
        """
        import torch
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        prompt = self.prompt_ids(messages)
        started = time.perf_counter()
        tokens: queue.Queue = queue.Queue()
        stop = threading.Event()
        outcome: dict[str, Any] = {}
        eos = set(self.eos_ids)

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=self.eos_ids, pad_token_id=self.pad_id)
        input_ids = torch.tensor([prompt], dtype=torch.long, device=self.device)  # (1, prompt)
        device_type = torch.device(self.device).type

        def run() -> None:
            # inference_mode and autocast are thread-local: enter them in the generating thread.
            try:
                with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.bf16):
                    self.model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        generation_config=config,
                        streamer=_TokenQueue(tokens),
                        stopping_criteria=StoppingCriteriaList([Cancelled()]),
                        **self._constrained(constraint),
                    )
            except BaseException as err:  # noqa: BLE001 - re-raised in the consuming thread
                outcome["error"] = err
            finally:
                tokens.put(None)

        thread = threading.Thread(target=run, name=f"stream-{self.name}", daemon=True)
        thread.start()
        new_ids: list[int] = []
        shown = ""
        stripped = StrippedPieces()
        ended = False
        try:
            while (token := tokens.get()) is not None:
                if ended:
                    continue
                if token in eos:
                    ended = True  # generate() cuts here too
                    continue
                new_ids.append(token)
                text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
                if text.endswith("\ufffd") or not text.startswith(shown):
                    continue  # an incomplete UTF-8 sequence, or a decode that rewrote earlier text
                piece, shown = text[len(shown) :], text
                out = stripped.feed(piece)
                if out:
                    yield out
            thread.join()
            if "error" in outcome:
                raise outcome["error"]
            full = self.tokenizer.decode(new_ids, skip_special_tokens=True)
            if full.startswith(shown):
                rest = stripped.feed(full[len(shown) :])
                if rest:
                    yield rest
            text = full.strip()
            return Generation(text, len(prompt), len(new_ids), time.perf_counter() - started)
        finally:
            stop.set()  # closed early (the client left, a stop sequence): end generation now
            thread.join()

    def _constrained(self, constraint: Any) -> dict[str, Any]:
        """`generate` keyword arguments enforcing `constraint`: none without one."""
        if constraint is None:
            return {}
        from transformers import LogitsProcessorList

        from tunewise.models.constraints import GrammarCache, hf_logits_processor, import_error_hint

        if getattr(self, "_grammars", None) is None:
            try:
                vocab = self.model.get_output_embeddings().weight.shape[0]  # logits width, may exceed len(tokenizer)
                self._grammars = GrammarCache(self.tokenizer, vocab, self.eos_ids)
            except ImportError:
                raise TunewiseError(import_error_hint()) from None
        return {"logits_processor": LogitsProcessorList([hf_logits_processor(self._grammars, constraint)])}

    def _generate_batch(self, prompts: list[list[int]], max_new_tokens: int, constraint: Any = None) -> list[list[int]]:
        """Greedy continuations of a batch of prompts, each cut before its first eos.

        Rows are laid out as [shared prefix][padding][own suffix]: the prefix all rows share (the
        system prompt, fixed few-shot examples) is encoded once and its KV cache repeated per row,
        and only the suffixes are left padded. Position ids come from the attention mask, so each
        suffix continues right after the prefix whatever its padding.
        """
        import torch
        from transformers import GenerationConfig

        shared = shared_prefix_len(prompts)
        suffixes = [p[shared:] for p in prompts]
        width = max(len(s) for s in suffixes)
        input_ids = torch.full((len(prompts), shared + width), self.pad_id, dtype=torch.long)  # (batch, seq)
        attention_mask = torch.ones((len(prompts), shared + width), dtype=torch.long)
        for row, (ids, suffix) in enumerate(zip(prompts, suffixes)):
            input_ids[row, :shared] = torch.tensor(ids[:shared], dtype=torch.long)
            input_ids[row, shared + width - len(suffix) :] = torch.tensor(suffix, dtype=torch.long)
            attention_mask[row, shared : shared + width - len(suffix)] = 0
        # A fresh config: a hub model's sampling defaults (temperature, top_p) must not leak in.
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
        )
        device_type = torch.device(self.device).type
        with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.bf16):
            cache = {}
            if shared:
                prefix = input_ids[:1, :shared].to(self.device)  # (1, shared)
                past = self.model(input_ids=prefix, use_cache=True).past_key_values
                past.batch_repeat_interleave(len(prompts))
                cache["past_key_values"] = past
            out = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                generation_config=config,
                **cache,
                **self._constrained(constraint),
            )  # (batch, shared + width + new)
        new_tokens = out[:, shared + width :].tolist()
        stops = set(self.eos_ids)
        cut = []
        for row in new_tokens:
            end = next((j for j, t in enumerate(row) if t in stops), len(row))
            cut.append(row[:end])
        return cut


class _TokenQueue:
    """A transformers streamer (`put` / `end`) that queues each newly generated token id."""

    def __init__(self, tokens: queue.Queue) -> None:
        self.tokens = tokens
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() first puts the prompt itself
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():  # (1,) or (1, 1) per step
            self.tokens.put(int(token))

    def end(self) -> None:
        pass  # the generating thread marks the end itself, also when generation fails


def shared_prefix_len(prompts: list[list[int]]) -> int:
    """Tokens every prompt of a batch starts with, worth encoding once: 0 for a single prompt or a
    prefix under MIN_SHARED_PREFIX; always leaves each prompt at least one token of its own.

    >>> shared_prefix_len([[1] * 20 + [2], [1] * 20 + [3, 4]])
    20
    """
    if len(prompts) < 2:
        return 0
    shortest = min(len(p) for p in prompts)
    n = 0
    while n < shortest - 1 and all(p[n] == prompts[0][n] for p in prompts):
        n += 1
    return n if n >= MIN_SHARED_PREFIX else 0


def attach_adapter(model: Any, adapter: str | Path) -> Any:
    """Wrap `model` with a saved peft adapter folder (adapter_config.json + safetensors)."""
    from peft import PeftModel

    folder = Path(adapter)
    if not (folder / "adapter_config.json").is_file():
        raise TunewiseError(
            f"adapter not found: {folder} has no adapter_config.json (give the folder `tunewise train` wrote)"
        )
    return PeftModel.from_pretrained(model, str(folder), is_trainable=False)
