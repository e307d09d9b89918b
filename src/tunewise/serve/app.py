"""The FastAPI app: OpenAI chat completions over prepared rungs, with batching, limits and auth.

A request's messages go through `prepared.build(messages)` and then `prepared.model.generate(...)`,
the very calls the ladder scored; nothing else touches the prompt. The app is built from
already-prepared configurations, so tests inject fakes and nothing loads.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunewise.errors import TunewiseError
from tunewise.models.base import ChatModel, Generation, Messages
from tunewise.serve.batcher import Batcher, Job, QueueFull, Stopped
from tunewise.serve.config import ROUTER_NAME, ServedConfig
from tunewise.serve.router import Route, Router
from tunewise.serve.schema import (
    Answer,
    APIError,
    ChatCompletionRequest,
    StopCutter,
    chunk,
    completion,
    new_id,
    plain_messages,
    stop_list,
    unsupported,
)

log = logging.getLogger("tunewise.serve")

DEFAULT_MAX_TOKENS_LIMIT = 1024
DEFAULT_MAX_BODY_BYTES = 4 << 20
DEFAULT_READ_TIMEOUT_S = 30.0
"""Longest a client may take to send a request's headers, and then its body (4 MiB in 30 s is
140 KB/s). A slower client is cut off, so it cannot hold a connection or block shutdown."""
DEFAULT_SHUTDOWN_TIMEOUT_S = 60.0
"""Longest a graceful shutdown waits for requests in flight (a 1,024-token answer on a CPU fits)."""


@dataclass
class Limits:
    """Admission limits, checked before a request joins the queue."""

    max_queue: int = 64  # requests waiting per model; more answer 429
    max_batch: int = 16  # requests per generate call
    batch_wait_ms: float = 10.0  # how long the first request of a batch waits for company
    max_prompt_tokens: int | None = None  # built prompt (system + examples + documents + messages)
    max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT  # largest max_tokens a request may ask
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def problems(self) -> list[str]:
        out = []
        for name in ("max_queue", "max_batch", "max_tokens_limit", "max_body_bytes"):
            if getattr(self, name) < 1:
                out.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.batch_wait_ms < 0:
            out.append(f"batch_wait_ms must be >= 0 (got {self.batch_wait_ms})")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            out.append(f"max_prompt_tokens must be >= 1 (got {self.max_prompt_tokens})")
        return out


def count_prompt_tokens(model: ChatModel, messages: Messages) -> int:
    """Exact for local models (the chat-templated ids); otherwise the per-message estimate FakeModel
    and API backends use: content tokens + 4 per message for the role and separators."""
    prompt_ids = getattr(model, "prompt_ids", None)
    if callable(prompt_ids):
        return len(prompt_ids(messages))
    return sum(model.count_tokens(m["content"]) + 4 for m in messages)


def weights_of(model: ChatModel) -> object:
    """What a model's batches run on: an adapter view (serve/adapters.py) names the shared base it
    runs on, so every adapter over one copy of the weights shares one worker."""
    return getattr(model, "weights", None) or model


def context_window(model: ChatModel) -> int | None:
    """The model's maximum sequence length where the backend exposes it (transformers config)."""
    config = getattr(getattr(model, "model", None), "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) else None


class ChatService:
    """Everything between a validated request and its answer; the FastAPI routes are thin wrappers."""

    def __init__(self, configs: Mapping[str, ServedConfig], limits: Limits, router: Router | None = None) -> None:
        problems = limits.problems()
        if not configs:
            problems.append("no configuration to serve")
        for name, config in configs.items():
            if config.max_new_tokens > limits.max_tokens_limit:
                problems.append(
                    f"{name}: the run measured max_new_tokens={config.max_new_tokens} > max_tokens_limit="
                    f"{limits.max_tokens_limit}; raise --max-tokens-limit"
                )
        if router is not None:
            if ROUTER_NAME in configs:
                problems.append(f"model name {ROUTER_NAME!r} is reserved for the router")
            missing = [n for n in [*router.names, router.fallback] if n not in configs]
            if missing:
                problems.append(f"the router names configurations that are not served: {', '.join(missing)}")
        if problems:
            raise TunewiseError("cannot build the server: " + "; ".join(problems))
        self.configs = dict(configs)
        self.limits = limits
        self.router = router
        # One batcher per copy of the weights: rungs sharing a base model (or adapters sharing one
        # base) share its batches, and one worker thread is all that touches those weights.
        self.batchers: dict[int, Batcher] = {}
        for config in self.configs.values():
            model = config.prepared.model
            weights = weights_of(model)
            if id(weights) not in self.batchers:
                name = getattr(weights, "name", None) or model.name
                self.batchers[id(weights)] = Batcher(model, limits.max_queue, limits.max_batch, limits.batch_wait_ms, name=name)
        # Builders (embedders, retrievers, tokenizers) are not promised to be thread-safe; a build
        # takes milliseconds next to a generation, so one at a time costs little.
        self._build_lock = threading.Lock()
        self.draining = False

    @property
    def model_names(self) -> list[str]:
        return list(self.configs) + ([ROUTER_NAME] if self.router else [])

    def start(self) -> None:
        for b in self.batchers.values():
            b.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Finish every queued request, then stop the workers; wait at most `timeout_s` in all."""
        self.draining = True
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for b in self.batchers.values():
            b.stop(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def resolve(self, name: str, messages: Messages) -> tuple[str, ServedConfig, Route | None]:
        if name == ROUTER_NAME and self.router is not None:
            query = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
            route = self.router.route(query)
            return route.name, self.configs[route.name], route
        if name not in self.configs:
            raise APIError(
                404,
                f"The model {name!r} does not exist on this server; available models: {', '.join(self.model_names)}",
                param="model",
                code="model_not_found",
            )
        return name, self.configs[name], None

    def admit(
        self, req: ChatCompletionRequest, on_piece: Callable[[str], None] | None = None
    ) -> tuple[str, ServedConfig, Route | None, Job, int, list[str]]:
        """Validate, route, build and queue a request (runs in a worker thread: builds may embed).
        With `on_piece`, the answer is streamed to it piece by piece as it is generated.

        Returns (model name that answers, its config, route, queued job, max_tokens, stop list)."""
        problems = unsupported(req)
        if problems:
            param = problems[0][0]
            raise APIError(400, "; ".join(msg for _, msg in problems), param=param, code="unsupported_parameter")
        messages = plain_messages(req)
        if not any(m["role"] != "system" for m in messages) or messages[-1]["role"] != "user":
            raise APIError(
                400,
                f"the conversation must end with a user message (last role: {messages[-1]['role']!r}); "
                "served configurations answer the last user turn",
                param="messages",
            )
        with self._build_lock:
            name, config, route = self.resolve(req.model, messages)
            max_tokens = req.max_completion_tokens or req.max_tokens or config.max_new_tokens
            if max_tokens > self.limits.max_tokens_limit:
                raise APIError(
                    400,
                    f"max_tokens is too large: {max_tokens}. This server allows at most {self.limits.max_tokens_limit} "
                    "completion tokens per request (--max-tokens-limit)",
                    param="max_tokens",
                    code="invalid_value",
                )
            model = config.prepared.model
            built = config.prepared.build(messages)
            prompt_tokens = count_prompt_tokens(model, built.messages)
        self._check_length(config, prompt_tokens, max_tokens)
        job = Job(built.messages, max_tokens, model=model, on_piece=on_piece)
        try:
            self.batchers[id(weights_of(model))].submit(job)
        except QueueFull as full:
            raise APIError(
                429,
                f"The server is at capacity: {full.waiting} requests are already waiting for {name!r} "
                f"(--max-queue {self.limits.max_queue}); retry after {full.retry_after_s} s",
                type="rate_limit_exceeded",
                code="queue_full",
                headers={"Retry-After": str(full.retry_after_s)},
            ) from None
        except Stopped:
            raise APIError(503, "The server is shutting down; retry on another instance", type="server_error", code="shutting_down") from None
        return name, config, route, job, max_tokens, stop_list(req.stop)

    def _check_length(self, config: ServedConfig, prompt_tokens: int, max_tokens: int) -> None:
        what = (
            f"the prompt is {prompt_tokens} tokens after {config.fingerprint} added its system prompt, "
            "examples and retrieved documents"
        )
        limit = self.limits.max_prompt_tokens
        if limit is not None and prompt_tokens > limit:
            raise APIError(
                400,
                f"This server's maximum prompt length is {limit} tokens (--max-prompt-tokens); {what}. Shorten the messages.",
                param="messages",
                code="context_length_exceeded",
            )
        window = context_window(config.prepared.model)
        if window is not None and prompt_tokens + max_tokens > window:
            raise APIError(
                400,
                f"This model's maximum context length is {window} tokens; {what}, plus {max_tokens} completion "
                f"tokens = {prompt_tokens + max_tokens}. Shorten the messages or lower max_tokens.",
                param="messages",
                code="context_length_exceeded",
            )


# -- HTTP ---------------------------------------------------------------------------------------


_TYPE_TAGS = {"str", "int", "float", "bool", "none", "list", "dict"}


def _union_branch(part: object) -> bool:
    """pydantic names the branch of a union in an error's location (`str`, `list[ContentPart]`,
    `function-after[valid_unicode(), str]`); the client wants the field's path only."""
    return isinstance(part, str) and ("[" in part or part in _TYPE_TAGS)


def _shown(value: object, limit: int = 80) -> str:
    """A rejected value for an error message: repr (which escapes lone surrogates), capped."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _json_error(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex[:16]}"


class Guard:
    """ASGI middleware, outermost: a request id on every response, the API key on every request
    (constant-time), then the body: at most `max_body_bytes`, all of it within `read_timeout_s`."""

    def __init__(self, app: Any, api_key: str | None, max_body_bytes: int, read_timeout_s: float = DEFAULT_READ_TIMEOUT_S) -> None:
        self.app = app
        self.key_digest = hashlib.sha256(api_key.encode()).digest() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # One id per request, in the x-request-id header and in every 500's message and log line.
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        inner_send = send

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await inner_send(message)

        headers = dict(scope["headers"])
        if self.key_digest is not None:
            auth = headers.get(b"authorization", b"")
            token = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
            # Comparing digests keeps the comparison constant-time and independent of the key's length.
            if not hmac.compare_digest(hashlib.sha256(token).digest(), self.key_digest):
                message = "Incorrect API key provided" if token else "Missing API key: send `Authorization: Bearer KEY`"
                err = APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                return await _json_error(err)(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            err = APIError(413, f"request body is {int(length)} bytes; this server accepts at most {self.max_body_bytes}", code="request_too_large")
            return await _json_error(err)(scope, receive, send)
        if (length is not None and length != b"0") or b"transfer-encoding" in headers:
            receive = await self._buffered(receive, scope, send)
            if receive is None:
                return
        await self.app(scope, receive, send)

    async def _buffered(self, receive: Any, scope: dict, send: Any) -> Any:
        """Read the whole body (chunked too) up to the limit and within the read timeout, then replay
        it; None after answering 413 or 408, or when the client went away.

        A client that declares 100 bytes and sends 10 would otherwise hold the request, and with it
        the server's graceful shutdown, for as long as it keeps the connection open."""
        body, more = b"", True
        deadline = time.monotonic() + self.read_timeout_s
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                err = APIError(
                    408,
                    f"the request body did not arrive within {self.read_timeout_s:g} s ({len(body)} bytes received); "
                    "send the whole body at once",
                    code="request_timeout",
                    headers={"Connection": "close"},
                )
                await _json_error(err)(scope, receive, send)
                return None
            if message["type"] != "http.request":
                return None  # disconnected: nobody to answer
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                err = APIError(413, f"request body exceeds {self.max_body_bytes} bytes", code="request_too_large")
                await _json_error(err)(scope, receive, send)
                return None
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


def build_app(
    configs: Mapping[str, ServedConfig],
    *,
    api_key: str | None = None,
    max_queue: int = 64,
    max_batch: int = 16,
    batch_wait_ms: float = 10.0,
    max_prompt_tokens: int | None = None,
    max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    router: Router | None = None,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
) -> FastAPI:
    """An OpenAI-compatible app over `configs` (model name -> configuration; aliases may share one).

    The batch workers start and stop with the app's lifespan: uvicorn's graceful shutdown first
    lets in-flight requests finish, then the workers drain their queues and end. `read_timeout_s`
    and `shutdown_timeout_s` are kept on `app.state`, where run_server and BackgroundServer read
    them (headers are read by uvicorn, before the app sees anything).
    """
    limits = Limits(max_queue, max_batch, batch_wait_ms, max_prompt_tokens, max_tokens_limit, max_body_bytes)
    service = ChatService(configs, limits, router)
    if read_timeout_s <= 0 or shutdown_timeout_s < 0:
        raise TunewiseError(f"read_timeout_s must be > 0 and shutdown_timeout_s >= 0 (got {read_timeout_s}, {shutdown_timeout_s})")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop, shutdown_timeout_s)

    app = FastAPI(title="tunewise", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.state.read_timeout_s = read_timeout_s
    app.state.shutdown_timeout_s = shutdown_timeout_s
    started = int(time.time())

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError) -> JSONResponse:
        return _json_error(err)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        problems, param = [], None
        seen = set()
        for e in err.errors():
            loc = [str(p) for p in e.get("loc", ()) if p != "body" and not _union_branch(p)]
            if e.get("type") == "json_invalid":
                problems.append(f"the body is not valid JSON ({e.get('ctx', {}).get('error', e.get('msg'))})")
                continue
            if not loc and isinstance(e.get("input"), (bytes, str)):
                problems.append("the body must be a JSON object (send it with Content-Type: application/json)")
                continue
            where = ".".join(loc) or "body"
            param = param or where
            problem = f"{where}: {e.get('msg')}" + (f" (got {_shown(e['input'])})" if "input" in e and not isinstance(e["input"], (dict, list)) else "")
            if problem not in seen:
                seen.add(problem)
                problems.append(problem)
        return _json_error(APIError(400, "; ".join(problems) or "invalid request", param=param, code="invalid_request"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        message = f"{request.method} {request.url.path}: {err.detail}"
        if err.status_code == 404:
            message += "; endpoints: POST /v1/chat/completions, GET /v1/models, GET /health"
        return _json_error(APIError(err.status_code, message, code=code))

    @app.exception_handler(Exception)
    async def crashed(request: Request, err: Exception) -> JSONResponse:
        request_id = _request_id(request)
        log.error("request %s: unhandled error on %s", request_id, request.url.path, exc_info=err)
        # Starlette answers this one outside Guard (ServerErrorMiddleware is outermost): add the header here.
        error = internal_error(request_id)
        error.headers["x-request-id"] = request_id
        return _json_error(error)

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> dict[str, Any]:
        return {
            "status": "draining" if service.draining else "ok",
            "models": service.model_names,
            "batchers": {b.model.name: b.stats() for b in service.batchers.values()},
        }

    def model_card(name: str) -> dict[str, Any]:
        card: dict[str, Any] = {"id": name, "object": "model", "created": started, "owned_by": "tunewise"}
        if name == ROUTER_NAME:
            card["tunewise"] = {"routes": service.router.names if service.router else [], "fallback": service.router.fallback if service.router else None}
        else:
            c = service.configs[name]
            # The run's name only: its absolute path would tell every client the server's folder layout.
            card["tunewise"] = {"task": c.task, "rung": c.rung, "run": c.run_dir.name if c.run_dir else None, "base_model": c.prepared.model.name}
        return card

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(n) for n in service.model_names]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> dict[str, Any]:
        if name not in service.model_names:
            raise APIError(404, f"The model {name!r} does not exist; available models: {', '.join(service.model_names)}", param="model", code="model_not_found")
        return model_card(name)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest, request: Request) -> Any:
        request_id = _request_id(request)
        if not req.stream:
            name, config, route, job, max_tokens, stop = await asyncio.to_thread(service.admit, req)
            generation = await _generated(asyncio.wrap_future(job.future), request_id)
            cid, created = new_id()
            answer = Answer(generation, max_tokens, stop)
            return JSONResponse(completion(cid, created, name, config.fingerprint, answer), headers=_route_headers(name, config, route))

        # Streaming: the worker hands each piece to the event loop as the model produces it; the
        # future's completion (queued after the last piece, from the same thread) ends the stream.
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()

        def on_piece(piece: str) -> None:
            try:
                loop.call_soon_threadsafe(pieces.put_nowait, piece)
            except RuntimeError:  # the loop has closed: the server is gone, nobody is listening
                pass

        name, config, route, job, max_tokens, stop = await asyncio.to_thread(service.admit, req, on_piece)
        job.future.add_done_callback(lambda _: on_piece(_END))
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        cid, created = new_id()

        async def events() -> AsyncIterator[str]:
            def sse(data: dict[str, Any]) -> str:
                return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

            def content(text: str) -> str:
                return sse(chunk(cid, created, name, config.fingerprint, {"content": text}))

            cutter = StopCutter(stop)
            try:
                yield sse(chunk(cid, created, name, config.fingerprint, {"role": "assistant", "content": ""}))
                while (piece := await pieces.get()) is not _END:
                    text = cutter.feed(piece)
                    if text:
                        yield content(text)
                    if cutter.done:
                        job.cancel.set()  # a stop sequence ended the answer: stop generating
                try:
                    generation = await _generated(asyncio.wrap_future(job.future), request_id)
                except APIError as err:
                    yield sse(err.body())
                    yield "data: [DONE]\n\n"
                    return
                rest = cutter.finish()
                if rest:
                    yield content(rest)
                answer = Answer(generation, max_tokens, stop)
                yield sse(chunk(cid, created, name, config.fingerprint, {}, answer.finish_reason))
                if include_usage:
                    final = chunk(cid, created, name, config.fingerprint, {})
                    final["choices"], final["usage"] = [], answer.usage
                    yield sse(final)
                yield "data: [DONE]\n\n"
            finally:
                job.cancel.set()  # the client went away mid-stream: the worker stops generating

        headers = {**_route_headers(name, config, route), "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    # outermost: before parsing
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes, read_timeout_s=read_timeout_s)
    return app


_END = object()
"""Queued after a streamed answer's last piece."""


def _route_headers(name: str, config: ServedConfig, route: Route | None) -> dict[str, str]:
    headers = {"x-tunewise-route": name, "x-tunewise-config": config.fingerprint}
    if route is not None:
        headers["x-tunewise-route-similarity"] = f"{route.similarity:.4f}"
    return headers


def _request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or new_request_id()


def internal_error(request_id: str) -> APIError:
    """What a client sees of a failure inside the server: no exception text (it can carry paths,
    file names or data); the log has it under the same request id."""
    return APIError(500, f"internal server error (request id {request_id}); the server log has the details", type="server_error")


async def _generated(future: asyncio.Future, request_id: str) -> Generation:
    try:
        return await future
    except Exception as err:
        log.error("request %s: generation failed: %s: %s", request_id, type(err).__name__, err, exc_info=err)
        raise internal_error(request_id) from err


def service_of(app: FastAPI) -> ChatService:
    """The ChatService behind an app from build_app (for tests, the CLI and /health)."""
    return app.state.service
