"""The model contract every backend implements, and a fake for tests."""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

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

    # Optional: a backend that can stream also defines
    #     stream(messages, max_new_tokens) -> Generator[str, None, Generation]
    # yielding text pieces as they are decoded and returning the Generation (whose text is the
    # pieces joined, equal to what generate([messages], max_new_tokens) returns). Call it through
    # `stream(model, ...)` below, which falls back to the whole answer as one piece.


TokenStream = Generator[str, None, "Generation"]
"""Text pieces as they are generated; the generator's return value is the whole Generation."""


def stream(model: ChatModel, messages: Messages, max_new_tokens: int) -> TokenStream:
    """The model's own streaming path where it has one; otherwise one piece, the whole answer, which
    arrives only when generation is done (the behaviour of a backend that cannot stream).

    >>> list(stream(FakeModel(["one two"]), [{"role": "user", "content": "q"}], 8))
    ['one ', 'two']
    """
    own = getattr(model, "stream", None)
    if callable(own):
        return own(messages, max_new_tokens)
    return whole_answer(model, messages, max_new_tokens)


def whole_answer(model: ChatModel, messages: Messages, max_new_tokens: int) -> TokenStream:
    """The answer as one piece, once generated: the stream of a backend that cannot stream."""
    generation = model.generate([messages], max_new_tokens)[0]
    if generation.text:
        yield generation.text
    return generation


class TemplatedTokens:
    """Token counting and prompt building for a local model with a Hugging Face tokenizer (transformers,
    vLLM, llama.cpp): every engine builds the very same prompt ids from the same chat template."""

    tokenizer: Any

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, conversation: Messages) -> list[int]:
        """The chat-templated prompt, ending with the assistant header, as token ids."""
        text = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        # The template already holds every special token; adding BOS again would shift the prompt.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


class StrippedPieces:
    """Pieces of a growing text turned into pieces of `text.strip()`, which is what `generate`
    returns: leading whitespace is dropped and trailing whitespace held back until more text follows.

    >>> s = StrippedPieces()
    >>> [s.feed(p) for p in [" ", " play", " some ", "jazz", "\\n"]]
    ['', 'play', ' some', ' jazz', '']
    """

    def __init__(self) -> None:
        self.started = False
        self.held = ""

    def feed(self, piece: str) -> str:
        if not self.started:
            piece = piece.lstrip()
            if not piece:
                return ""
            self.started = True
        text = self.held + piece
        body = text.rstrip()
        self.held = text[len(body) :]
        return body


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
        seconds_per_piece: float = 0.0,
    ) -> None:
        self.name = name
        self.queue: deque[str] = deque(answers)
        self.respond = respond
        self.calls: list[Messages] = []
        self.seconds_per_piece = seconds_per_piece  # stream(): a pause before each word-sized piece

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

    def stream(self, messages: Messages, max_new_tokens: int) -> TokenStream:
        """The answer generate() would give, in word-sized pieces, `seconds_per_piece` apart."""
        generation = self.generate([messages], max_new_tokens)[0]
        for piece in re.findall(r"\S*\s*", generation.text):
            if piece:
                time.sleep(self.seconds_per_piece)
                yield piece
        return generation
