"""The OpenAI chat-completions wire format: request validation, responses, chunks and errors."""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tunewise.models.base import Generation, Messages


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# -- request ------------------------------------------------------------------------------------


def valid_unicode(text: str) -> str:
    """JSON may carry a lone UTF-16 surrogate (`"\\ud800"`), which no tokenizer can encode: reject it
    here as a 400 instead of letting the model fail with a 500.

    >>> valid_unicode("ok")
    'ok'
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"contains a lone UTF-16 surrogate ({text[err.start]!r}) at character {err.start}; "
            "send valid Unicode (surrogates only in pairs)"
        ) from None
    return text


Text = Annotated[str, AfterValidator(valid_unicode)]
"""Every string the server reads: strict (no numbers as strings) and valid Unicode."""

# Strict: JSON says what type a value is, so "5" is not a number and 1 is not a boolean. JSON
# integers are still accepted for float fields (temperature: 0).
STRICT = ConfigDict(extra="allow", strict=True)


class ContentPart(BaseModel):
    model_config = STRICT
    type: Text
    text: Text | None = None


class ChatMessage(BaseModel):
    model_config = STRICT  # extra fields, e.g. `name`, are ignored
    role: Text
    # Required and never null: without tool calls, a message with no text has nothing to say.
    content: Text | list[ContentPart]


class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields this server reads. Unknown fields are ignored, as OpenAI-compatible servers do;
    known ones it cannot honour (n > 1, tools, logprobs, JSON mode) are rejected with a 400."""

    model_config = STRICT

    model: Text = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="newer name of max_tokens; wins when both are set")
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Text | list[Text] | None = None
    # Accepted for compatibility; decoding is always greedy, as the ladder measured it.
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    user: Text | None = None
    logprobs: bool | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None


ROLES = {"system", "developer", "user", "assistant"}


def unsupported(req: ChatCompletionRequest) -> list[tuple[str, str]]:
    """(param, message) for every feature asked for that this server cannot honour."""
    out = []
    if req.n != 1:
        out.append(("n", f"n={req.n} is not supported: this server returns one choice; send n separate requests"))
    if req.logprobs:
        out.append(("logprobs", "logprobs are not supported"))
    if req.tools or req.functions:
        out.append(("tools", "tool and function calling are not supported by a served tunewise configuration"))
    if req.response_format and req.response_format.get("type", "text") != "text":
        out.append(
            ("response_format", f"response_format {req.response_format.get('type')!r} is not supported; "
             "the configuration's output format is what the ladder measured (use type 'text' or leave it out)")
        )
    for i, m in enumerate(req.messages):
        if m.role not in ROLES:
            out.append((f"messages.{i}.role", f"role {m.role!r} is not supported; use one of {', '.join(sorted(ROLES))}"))
        if isinstance(m.content, list):
            for j, part in enumerate(m.content):
                if part.type != "text" or part.text is None:
                    out.append((f"messages.{i}.content.{j}", f"content part of type {part.type!r} is not supported; send text"))
    return out


def plain_messages(req: ChatCompletionRequest) -> Messages:
    """OpenAI messages as {"role", "content"} strings; "developer" is the newer name of "system"."""
    out = []
    for m in req.messages:
        if isinstance(m.content, list):
            content = "".join(p.text or "" for p in m.content)
        else:
            content = m.content
        out.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    return out


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [s for s in ([stop] if isinstance(stop, str) else stop) if s]


# -- response -----------------------------------------------------------------------------------


class Answer:
    """A generation turned into what the client sees: text cut at a stop sequence, finish reason."""

    def __init__(self, generation: Generation, max_tokens: int, stop: list[str]) -> None:
        text = generation.text
        cut = first_stop(text, stop)
        self.text = text[:cut] if cut >= 0 else text
        # Greedy generation stops at the end-of-turn token or at max_tokens; only the second is "length".
        self.finish_reason = "length" if cut < 0 and generation.output_tokens >= max_tokens else "stop"
        self.usage = {
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.output_tokens,
            "total_tokens": generation.prompt_tokens + generation.output_tokens,
        }


def first_stop(text: str, stop: list[str]) -> int:
    """Where the answer is cut: the earliest occurrence of any stop sequence, or -1.

    >>> first_stop("a. b\\n", [".", "\\n"])
    1
    """
    return min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)


class StopCutter:
    """Streams text as it arrives, cut where `Answer` would cut it: text that could still be the start
    of a stop sequence is held back, and once a stop sequence is certain, `done` turns True.

    >>> c = StopCutter(["END"])
    >>> [c.feed(p) for p in ["one E", "N", "D two"]], c.done
    (['one', ' ', ''], True)
    """

    def __init__(self, stop: list[str]) -> None:
        self.stop = stop
        self.longest = max((len(s) for s in stop), default=0)
        self.text = ""
        self.sent = 0
        self.done = False

    def feed(self, piece: str) -> str:
        self.text += piece
        cut = first_stop(self.text, self.stop)
        # An earlier-starting stop sequence could still complete unless the text is long enough.
        if cut >= 0 and cut - 1 + self.longest <= len(self.text):
            self.done = True
            return self._send_to(cut)
        safe = len(self.text) - max(self.longest - 1, 0)
        return self._send_to(min(safe, cut) if cut >= 0 else safe)

    def finish(self) -> str:
        """The rest, once generation has ended."""
        cut = first_stop(self.text, self.stop)
        self.done = True
        return self._send_to(cut if cut >= 0 else len(self.text))

    def _send_to(self, end: int) -> str:
        if end <= self.sent:
            return ""
        out, self.sent = self.text[self.sent : end], end
        return out


def new_id() -> tuple[str, int]:
    return f"chatcmpl-{uuid.uuid4().hex}", int(time.time())


def completion(cid: str, created: int, model: str, fingerprint: str, answer: Answer) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
        ],
        "usage": answer.usage,
    }


def chunk(
    cid: str, created: int, model: str, fingerprint: str, delta: dict[str, Any], finish_reason: str | None = None
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


_PIECE = re.compile(r"\S*\s*")


def stream_pieces(text: str) -> list[str]:
    """Word-sized pieces whose concatenation is exactly `text`.

    >>> stream_pieces(" play  some jazz")
    [' ', 'play  ', 'some ', 'jazz']
    """
    return [p for p in _PIECE.findall(text) if p]
