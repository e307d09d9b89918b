"""`tunewise serve RUN [RUN ...]`: the chosen configuration behind an OpenAI-compatible API."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click

from tunewise.paths import resolve_run
from tunewise.ui import console, err_console


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def usage_lines(url: str, names: list[str], api_key: bool) -> list[str]:
    auth = ' -H "Authorization: Bearer $TUNEWISE_API_KEY"' if api_key else ""
    key = 'os.environ["TUNEWISE_API_KEY"]' if api_key else '"unused"'
    return [
        f"curl -s {url}/v1/chat/completions{auth} -H 'Content-Type: application/json' \\",
        f"  -d '{{\"model\": \"{names[0]}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'",
        "",
        "from openai import OpenAI" + ("; import os" if api_key else ""),
        f'client = OpenAI(base_url="{url}/v1", api_key={key})',
        f'reply = client.chat.completions.create(model="{names[0]}", messages=[{{"role": "user", "content": "Hello"}}])',
        "print(reply.choices[0].message.content)",
    ]


@click.command("serve")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option("--rung", help="Serve this measured rung instead of the run's decision.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind; 0.0.0.0 exposes the server to the network.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--api-key",
    envvar="TUNEWISE_API_KEY",
    help="Prefer the TUNEWISE_API_KEY environment variable: a key on the command line shows in `ps` and shell history.",
)
@click.option("--max-queue", default=64, show_default=True, type=click.IntRange(1), help="Requests waiting per model before 429.")
@click.option("--max-batch", default=16, show_default=True, type=click.IntRange(1), help="Requests per generate call.")
@click.option("--batch-wait-ms", default=10.0, show_default=True, type=click.FloatRange(0), help="How long a batch waits to fill.")
@click.option("--max-prompt-tokens", type=click.IntRange(1), help="Reject built prompts longer than this [default: the model's context].")
@click.option("--max-tokens-limit", default=1024, show_default=True, type=click.IntRange(1), help="Largest max_tokens a request may ask.")
@click.option("--router", "use_router", is_flag=True, help="Add model `router`: picks the run whose train inputs the request resembles.")
@click.option("--router-threshold", default=None, type=click.FloatRange(-1, 1), help="Below this nearest-example similarity the router answers with the base model [default 0.35].")
@click.option("--read-timeout", default=30.0, show_default=True, type=click.FloatRange(0, min_open=True), help="Seconds a client may take to send a request's headers, and then its body.")
@click.option("--shutdown-timeout", default=60.0, show_default=True, type=click.FloatRange(0), help="Seconds SIGTERM/Ctrl-C waits for requests in flight before cancelling them.")
@click.option("--trust-remote-code", is_flag=True, help="Allow a hub model's own Python code to run (off by default).")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def command(runs, rung, host, port, api_key, max_queue, max_batch, batch_wait_ms, max_prompt_tokens, max_tokens_limit, use_router, router_threshold, read_timeout, shutdown_timeout, trust_remote_code, log_level):
    """Serve what RUN chose (system prompt, examples, retrieval, model or adapter) as OpenAI chat completions.

    Each run answers under its task name and `task:rung`. With several runs and --router, model
    `router` sends each request to the run whose training inputs it resembles, or to the plain base
    model when it resembles none. Ctrl-C / SIGTERM stop accepting requests and finish those in flight.

    To require an API key, set it in the environment: `TUNEWISE_API_KEY=... tunewise serve RUN`.
    """
    from tunewise.serve.app import build_app
    from tunewise.serve.config import BASE_NAME, ROUTER_NAME, load_runs, primary_names
    from tunewise.serve.router import DEFAULT_THRESHOLD, Router
    from tunewise.serve.server import run_server

    if router_threshold is not None and not use_router:
        raise click.ClickException("--router-threshold needs --router")
    if api_key and click.get_current_context().get_parameter_source("api_key") == click.core.ParameterSource.COMMANDLINE:
        err_console.print(
            "[yellow]warning: an API key given with --api-key is visible to other users of this machine (`ps`) and "
            "stays in your shell history; set TUNEWISE_API_KEY instead.[/yellow]"
        )
    folders = [resolve_run(r) for r in runs]
    configs = load_runs(
        folders,
        rung,
        with_base=use_router,
        trust_remote_code=trust_remote_code,
        log=lambda m: err_console.print(f"[dim]{m}[/dim]"),
    )
    router = None
    if use_router:
        from tunewise.retrieval.embed import load_embedder

        routes = {n: configs[n].train_inputs for n in primary_names(configs)}
        threshold = DEFAULT_THRESHOLD if router_threshold is None else router_threshold
        router = Router(load_embedder(), routes, fallback=BASE_NAME, threshold=threshold)
    app = build_app(
        configs,
        api_key=api_key or None,
        max_queue=max_queue,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        max_prompt_tokens=max_prompt_tokens,
        max_tokens_limit=max_tokens_limit,
        router=router,
        read_timeout_s=read_timeout,
        shutdown_timeout_s=shutdown_timeout,
    )

    if not is_loopback(host) and not api_key:
        err_console.print(
            f"[bold red]WARNING: binding {host} without an API key: anyone who can reach port {port} can use "
            "this model. Set --api-key or TUNEWISE_API_KEY, or bind 127.0.0.1.[/bold red]"
        )
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}"
    names = list(configs) + ([ROUTER_NAME] if router else [])
    console.print(f"[bold]Serving[/bold] {url}/v1  (OpenAI-compatible; auth: {'API key' if api_key else 'none'})")
    for name in primary_names(configs):
        c = configs[name]
        console.print(f"  model [bold]{name}[/bold] (alias {c.fingerprint}): rung {c.rung} of {c.run_dir}, {c.prepared.model.name}")
    if router:
        console.print(f"  model [bold]{ROUTER_NAME}[/bold]: routes between {', '.join(router.names)}; fallback {BASE_NAME} (similarity < {router.threshold})")
    console.print("\n" + "\n".join(usage_lines(url, names, bool(api_key))) + "\n", soft_wrap=True, markup=False)
    run_server(app, host, port, log_level)
