"""The model contract every backend implements, and a fake for tests."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

Messages = list[dict[str, str]]
Progress = Callable[[int], None]
"""Called with the number of conversations just finished (for progress bars)."""


@dataclass
class Generation:
    """One completion with the figures the ladder reports."""

    text: str
    prompt_tokens: int
    output_tokens: int
    latency_s: float
    """Wall time this request waited, from its batch start to its last token."""


@runtime_checkable
class ChatModel(Protocol):
    """A chat model: turn conversations into greedy completions."""

    name: str

    def generate(
        self, conversations: Sequence[Messages], max_new_tokens: int, progress: Progress | None = None
    ) -> list[Generation]:
        """One Generation per conversation, in order."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens `text` costs this model (an estimate where the backend cannot tell)."""
        ...


def estimate_tokens(text: str) -> int:
    """Documented estimate for backends without a tokenizer: about 4 characters a token (OpenAI's
    rule of thumb for English), at least one token per word.

    >>> estimate_tokens("hello world")
    3
    """
    return max(len(text.split()), (len(text) + 3) // 4)


class FakeModel:
    """A model with queued or computed answers, for tests (like llm's MockModel).

    >>> m = FakeModel(["yes", "no"])
    >>> [g.text for g in m.generate([[{"role": "user", "content": "a"}]] * 2, 8)]
    ['yes', 'no']
    """

    def __init__(
        self,
        answers: Sequence[str] = (),
        name: str = "fake",
        respond: Callable[[Messages], str] | None = None,
    ) -> None:
        self.name = name
        self.queue: deque[str] = deque(answers)
        self.respond = respond
        self.calls: list[Messages] = []

    def enqueue(self, *answers: str) -> None:
        self.queue.extend(answers)

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def generate(
        self, conversations: Sequence[Messages], max_new_tokens: int, progress: Progress | None = None
    ) -> list[Generation]:
        out = []
        for conv in conversations:
            self.calls.append(list(conv))
            if self.queue:
                text = self.queue.popleft()
            elif self.respond is not None:
                text = self.respond(conv)
            else:
                raise AssertionError("FakeModel: no queued answer left and no `respond` function")
            prompt = sum(self.count_tokens(m["content"]) + 4 for m in conv)
            out.append(Generation(text, prompt, self.count_tokens(text), 0.001))
            if progress:
                progress(1)
        return out
