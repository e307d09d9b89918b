"""Counting tokens: a real tokenizer when there is one, else a documented estimate.

Chat token counts follow OpenAI's cookbook (`num_tokens_from_messages`): every message costs its
content plus MESSAGE_OVERHEAD tokens for the role and separators, and every conversation
REPLY_OVERHEAD more to prime the reply. Chat templates of open models add a similar 3-6 tokens a turn.

>>> counter = TokenCounter()
>>> counter.count("hello world"), counter.count_messages([{"role": "user", "content": "hello world"}])
(3, 9)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from tunewise.data.example import Example
from tunewise.models.base import estimate_tokens

MESSAGE_OVERHEAD = 3
"""Tokens each message costs beyond its content (role markers, separators)."""
REPLY_OVERHEAD = 3
"""Tokens each conversation costs to prime the assistant reply."""
ESTIMATE = "estimate (~4 characters a token, at least one a word)"


class Tokenizer(Protocol):
    def encode(self, text: str, *args: Any, **kwargs: Any) -> list[int]: ...


class TokenCounter:
    """Counts tokens with `tokenizer` (anything with `encode(text) -> list`), or estimates them."""

    def __init__(self, tokenizer: Tokenizer | None = None, name: str | None = None, note: str | None = None):
        self.tokenizer = tokenizer
        self.name = name or (type(tokenizer).__name__ if tokenizer is not None else None)
        self.note = note
        """Why the estimate is used although a tokenizer was asked for (None otherwise)."""
        self._plain = False  # encode() takes no add_special_tokens (e.g. tiktoken)

    @property
    def exact(self) -> bool:
        return self.tokenizer is not None

    @property
    def source(self) -> str:
        """What the counts come from, for reports."""
        return f"tokenizer {self.name}" if self.tokenizer is not None else ESTIMATE

    def count(self, text: str) -> int:
        if self.tokenizer is None:
            return estimate_tokens(text)
        if not self._plain:
            try:
                # Hugging Face tokenizers add BOS/EOS by default; the overheads already cover them.
                return len(self.tokenizer.encode(text, add_special_tokens=False))
            except TypeError:
                self._plain = True
        return len(self.tokenizer.encode(text))

    def count_messages(self, messages: list[dict[str, str]]) -> int:
        """Tokens a conversation costs, overheads included."""
        return sum(self.count(m["content"]) + MESSAGE_OVERHEAD for m in messages) + REPLY_OVERHEAD

    def count_example(self, example: Example) -> tuple[int, int]:
        """(prompt tokens, answer tokens); their sum is what one training pass over it costs."""
        prompt = self.count_messages(example.messages)
        return prompt, self.count(example.answer) + MESSAGE_OVERHEAD


def tokenizer_for(name: str | Path | None) -> TokenCounter:
    """A counter with the tokenizer at a local path (a model folder or a .gguf file), else the estimate.

    Never downloads: a hub id falls back to the estimate, with `note` saying why. transformers is
    imported only here, and only when a path is given.
    """
    if name is None or str(name) == "":
        return TokenCounter()
    path = Path(name).expanduser()
    if not path.exists():
        return TokenCounter(note=f"tokenizer {name}: no such local path (tunewise never downloads one)")
    try:
        from transformers import AutoTokenizer

        if path.is_file() and path.suffix == ".gguf":
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
        else:
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means: use the estimate, and say why
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        return TokenCounter(note=f"could not load a tokenizer from {path}: {reason}")
    return TokenCounter(tok, name=f"{type(tok).__name__} from {path}")
