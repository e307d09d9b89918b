"""llama.cpp (llama-cpp-python) as a ChatModel over a GGUF file: the quantized_gguf rung's runtime.

Same contract as `TransformersModel`: the prompt is the model's own chat template rendered by its
transformers tokenizer, and those very token ids are fed to llama.cpp (the GGUF and the tokenizer
share one vocabulary: the tokenizer was read from the GGUF), so both backends see the same prompt.
Decoding is greedy (top-k 1, no repetition penalty), stops at the end-of-turn token, and the answer is
decoded by the same tokenizer. llama.cpp runs one sequence at a time here; a request reuses the KV
cache of the prompt before it up to their common prefix (the system prompt).

llama-cpp-python is imported only when a model is built; it is not a tunewise dependency.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.models.base import Generation, Messages, Progress, TemplatedTokens

MAX_CONTEXT = 4096
"""Context window llama.cpp allocates (its KV cache), at most; the model's own if smaller."""


class LlamaCppModel(TemplatedTokens):
    """Greedy chat completions from a GGUF file through llama.cpp."""

    def __init__(self, path: Path, tokenizer: Any, name: str, eos_ids: Sequence[int], n_threads: int | None = None, llama: Any = None) -> None:
        """`llama`: an already built `llama_cpp.Llama` (tests); None builds one on `path`."""
        self.path = Path(path)
        self.tokenizer = tokenizer
        self.name = name
        self.eos_ids = list(eos_ids)
        self.precision = f"GGUF {self.path.name}"
        self.weight_bytes = self.path.stat().st_size if self.path.is_file() else 0  # llama.cpp maps the file
        if llama is None:
            import torch
            from llama_cpp import Llama

            # The same thread budget as torch (OMP_NUM_THREADS), so the backends compare on equal CPUs.
            threads = n_threads or torch.get_num_threads()
            probe = Llama(model_path=str(self.path), vocab_only=True, verbose=False)
            context = min(MAX_CONTEXT, int(probe.n_ctx_train()))
            del probe
            llama = Llama(model_path=str(self.path), n_ctx=context, n_threads=threads, n_threads_batch=threads, verbose=False)
        self.llama = llama

    def generate(self, conversations: Sequence[Messages], max_new_tokens: int, progress: Progress | None = None) -> list[Generation]:
        out = []
        context = self.llama.n_ctx()
        for conversation in conversations:
            prompt = self.prompt_ids(conversation)
            if len(prompt) + max_new_tokens > context:
                raise TunewiseError(
                    f"a prompt of {len(prompt)} tokens + {max_new_tokens} new tokens exceeds llama.cpp's context of "
                    f"{context} tokens for {self.path.name}; shorten the prompt (fewer few-shot or retrieved chunks)"
                )
            started = time.perf_counter()
            new_ids: list[int] = []
            if max_new_tokens > 0:
                for token in self.llama.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
                    if token in self.eos_ids:
                        break
                    new_ids.append(int(token))
                    if len(new_ids) >= max_new_tokens:
                        break
            text = self.tokenizer.decode(new_ids, skip_special_tokens=True).strip()
            out.append(Generation(text, len(prompt), len(new_ids), time.perf_counter() - started))
            if progress:
                progress(1)
        return out
