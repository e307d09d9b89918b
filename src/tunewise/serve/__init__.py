"""Serve a run's chosen configuration behind an OpenAI-compatible API (`tunewise serve`).

    config.py   ServedConfig and load_runs: run folders -> prepared rungs, by model name
    batcher.py  one worker per model: bounded queue, dynamic batches, grouped by max_tokens
    router.py   kNN router between configurations, with a base-model fallback
    schema.py   the OpenAI wire format: requests, responses, stream chunks, errors
    app.py      build_app(configs, ...) -> FastAPI
    server.py   uvicorn in the foreground (CLI) or a background thread (tests, bench)

FastAPI and uvicorn are imported by app.py and server.py only: `tunewise.serve.config` stays light.
"""
