"""Any OpenAI-compatible chat API (OpenAI, vLLM, llama.cpp server, Ollama) over plain httpx.

Requests run on a bounded thread pool; 429, 5xx, timeouts and dropped connections are retried
with exponential backoff and full jitter, honouring Retry-After.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from email.utils import parsedate_to_datetime
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.models.base import Generation, Messages, Progress, StrippedPieces, TokenStream, estimate_tokens

OPENAI_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 120.0


class ModelAPIError(TunewiseError):
    """The API refused a request in a way retrying cannot fix (bad key, unknown model, bad request)."""


class OpenAIChatModel:
    """A `ChatModel` over POST {base_url}/chat/completions at temperature 0.

    >>> m = OpenAIChatModel("llama3.1", base_url="http://localhost:11434/v1")  # Ollama
    >>> m.name, m.url
    ('llama3.1', 'http://localhost:11434/v1/chat/completions')
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 60,
        transport: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise TunewiseError(
                f"need max_concurrency >= 1, max_retries >= 0, timeout > 0 "
                f"(got {max_concurrency}, {max_retries}, {timeout})"
            )
        self.name = model
        self.base_url = (base_url or OPENAI_BASE_URL).rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.transport = transport  # tests inject httpx.MockTransport
        self.sleep = sleep

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env)
        if not key and self.base_url == OPENAI_BASE_URL:
            raise ModelAPIError(f"{self.api_key_env} is not set: export {self.api_key_env}=sk-... to call {self.base_url}")
        # Local servers (vLLM, llama.cpp, Ollama) usually take no key.
        return {"Authorization": f"Bearer {key}"} if key else {}

    def generate(
        self, conversations: Sequence[Messages], max_new_tokens: int, progress: Progress | None = None, constraint: Any = None
    ) -> list[Generation]:
        """`constraint` (tunewise.models.constraints.Constraint) travels as request fields:
        `response_format` for a JSON schema, vLLM's `guided_choice` / `guided_regex` otherwise."""
        import httpx

        extra = self._constraint_fields(constraint)  # an unsupported constraint fails before any request
        headers = self._headers()  # a missing key fails once, before any request
        results: list[Generation | None] = [None] * len(conversations)
        limits = httpx.Limits(max_connections=self.max_concurrency)
        # One client for all threads: httpx.Client is thread-safe and pools connections.
        with (
            httpx.Client(timeout=self.timeout, transport=self.transport, headers=headers, limits=limits) as client,
            ThreadPoolExecutor(max_workers=self.max_concurrency) as pool,
        ):
            futures = {pool.submit(self._complete, client, conv, max_new_tokens, extra): i for i, conv in enumerate(conversations)}
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in done:
                        results[futures[future]] = future.result()  # re-raises the first error
                        if progress:
                            progress(1)
            finally:
                for future in pending:
                    future.cancel()
        return [r for r in results if r is not None]

    def _constraint_fields(self, constraint: Any) -> dict[str, Any]:
        return {} if constraint is None else constraint.openai_fields(hosted_openai=self.base_url == OPENAI_BASE_URL)

    def _complete(self, client: Any, conversation: Messages, max_new_tokens: int, extra: dict[str, Any] | None = None) -> Generation:
        import httpx

        body = {"model": self.name, "messages": list(conversation), "temperature": 0, "max_tokens": max_new_tokens, **(extra or {})}
        started = time.perf_counter()
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = client.post(self.url, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as err:
                if last:
                    raise self._unreachable(err, attempt + 1) from None
                self.sleep(backoff_s(attempt))
                continue
            if response.status_code in RETRY_STATUS and not last:
                asked = retry_after_s(response.headers.get("retry-after"))
                self.sleep(backoff_s(attempt) if asked is None else asked)
                continue
            if response.status_code >= 400:
                raise self._error(response, attempt + 1)
            return self._parse(response, conversation, started)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def stream(self, messages: Messages, max_new_tokens: int, constraint: Any = None) -> TokenStream:
        """The answer as the API streams it (`stream: true`, server-sent events), stripped as
        generate() strips it; returns the Generation with the server's usage when it sends one
        (`stream_options.include_usage`), else the documented estimate.

        Failures before the first byte of the answer are retried like generate()'s; once text has
        been yielded, a dropped connection is an error (the caller already has part of the answer).
        """
        import httpx

        body = {
            "model": self.name,
            "messages": list(messages),
            "temperature": 0,
            "max_tokens": max_new_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self._constraint_fields(constraint),
        }
        headers = self._headers()
        started = time.perf_counter()
        with httpx.Client(timeout=self.timeout, transport=self.transport, headers=headers) as client:
            for attempt in range(self.max_retries + 1):
                last = attempt == self.max_retries
                try:
                    with client.stream("POST", self.url, json=body) as response:
                        if response.status_code in RETRY_STATUS and not last:
                            asked = retry_after_s(response.headers.get("retry-after"))
                            self.sleep(backoff_s(attempt) if asked is None else asked)
                            continue
                        if response.status_code >= 400:
                            response.read()
                            raise self._error(response, attempt + 1)
                        return (yield from self._events(response, messages, started))
                except (httpx.TimeoutException, httpx.TransportError) as err:
                    if last:
                        raise self._unreachable(err, attempt + 1) from None
                    self.sleep(backoff_s(attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _unreachable(self, err: Exception, attempts: int) -> ModelAPIError:
        """The error for a server that did not answer (timeout, refused connection), after retrying."""
        return ModelAPIError(
            f"{self.url}: {type(err).__name__} after {attempts} attempt(s) (timeout {self.timeout}s); "
            "check the server is up, or raise timeout"
        )

    def _events(self, response: Any, messages: Messages, started: float) -> TokenStream:
        import httpx

        stripped = StrippedPieces()
        text, usage = "", {}
        try:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue  # comments, event names, blank separators
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except ValueError:
                    raise ModelAPIError(f"{self.url} streamed something that is not JSON: {data[:200]!r}") from None
                if isinstance(event, dict) and event.get("error"):
                    error = event["error"]
                    raise ModelAPIError(f"{self.url} failed mid-stream: {str(error.get('message') if isinstance(error, dict) else error)[:300]}")
                usage = (event.get("usage") if isinstance(event, dict) else None) or usage
                for choice in (event.get("choices") if isinstance(event, dict) else None) or []:
                    piece = ((choice or {}).get("delta") or {}).get("content") or ""
                    out = stripped.feed(piece)
                    if out:
                        text += out
                        yield out
        except (httpx.TimeoutException, httpx.TransportError) as err:
            raise ModelAPIError(f"{self.url}: the stream broke after {len(text)} characters ({type(err).__name__})") from None
        prompt = usage.get("prompt_tokens")
        output = usage.get("completion_tokens")
        if prompt is None:
            prompt = sum(estimate_tokens(m.get("content") or "") + 4 for m in messages)
        if output is None:
            output = estimate_tokens(text)
        return Generation(text, int(prompt), int(output), time.perf_counter() - started)

    def _error(self, response: Any, attempts: int) -> ModelAPIError:
        detail = _server_message(response)
        status = response.status_code
        if status == 401:
            return ModelAPIError(
                f"401 Unauthorized from {self.base_url}: the key in {self.api_key_env} was refused "
                f"({'set' if os.environ.get(self.api_key_env) else 'not set'}); set {self.api_key_env} to a valid key ({detail})"
            )
        if status == 404:
            return ModelAPIError(
                f"404 from {self.url}: model {self.name!r} not found, or base_url is wrong "
                f"(it should end in /v1); list models at {self.base_url}/models ({detail})"
            )
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        return ModelAPIError(f"{status} from {self.url}{tried}: {detail}")

    def _parse(self, response: Any, conversation: Messages, started: float) -> Generation:
        try:
            data = response.json()
            text = data["choices"][0]["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise ModelAPIError(
                f"{self.url} answered {response.status_code} but not an OpenAI chat completion: {response.text[:200]!r}"
            ) from None
        usage = data.get("usage") or {}
        prompt = usage.get("prompt_tokens")
        output = usage.get("completion_tokens")
        if prompt is None:  # some servers omit usage: fall back to the documented estimate
            prompt = sum(estimate_tokens(m.get("content") or "") + 4 for m in conversation)
        if output is None:
            output = estimate_tokens(text)
        return Generation(text.strip(), int(prompt), int(output), time.perf_counter() - started)


def backoff_s(attempt: int) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))


def retry_after_s(header: str | None) -> float | None:
    """Seconds a Retry-After header asks for (delta seconds or an HTTP date), capped.

    >>> retry_after_s("3"), retry_after_s(None), retry_after_s("soon")
    (3.0, None, None)
    """
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(header).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def _server_message(response: Any) -> str:
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return str(message)[:300]
    except (ValueError, AttributeError):
        pass
    return response.text[:300] or response.reason_phrase
