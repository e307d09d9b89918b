"""Time to first token of `stream: true` requests: real token streaming vs the old behaviour (the
whole answer generated first, then sent in pieces), in the same run, through the real HTTP server.

    python bench/bench_stream.py                  # 8 requests per mode and workload; ~10 min on 2 shared CPU cores
    python bench/bench_stream.py --requests 16 --json bench-stream.json

One server, the embedded model, two model names over the same weights: `stream` uses the model's
own streaming path (`TransformersModel.stream`), `whole` hides it, so the server falls back to
generating the whole answer and then sending it, which is what every streamed request did before.
Requests go one at a time, alternating between the two names, so background load hits both alike.
Two workloads: the intent task's zero-shot prompts with its 8 new tokens (short answers: little to
gain) and an open question with 64 new tokens. TTFT is the arrival of the first non-empty content
chunk; total is the arrival of [DONE]. Each streamed answer is checked against the same request
sent without streaming.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
INTENT_EVAL = ROOT / "src" / "tunewise" / "examples" / "intent" / "eval.jsonl"
STORIES = [
    "Write a short story about a cat who learns to swim.",
    "Explain how a bicycle works to a ten year old.",
    "Describe a busy market on a Saturday morning.",
    "Write a letter to a friend about your new job.",
]


class WholeAnswer:
    """The same model without its `stream` method: the server's fallback, i.e. the old behaviour."""

    def __init__(self, model) -> None:
        self.inner = model
        self.name = model.name + " (whole)"
        self.model = model.model  # its config gives the context window

    def generate(self, conversations, max_new_tokens, progress=None):
        return self.inner.generate(conversations, max_new_tokens, progress)

    def count_tokens(self, text):
        return self.inner.count_tokens(text)

    def prompt_ids(self, conversation):
        return self.inner.prompt_ids(conversation)


def timed_stream(http, url: str, model: str, messages: list, max_tokens: int) -> tuple[float, float, str]:
    started = time.perf_counter()
    first = None
    text = ""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True}
    with http.stream("POST", url, json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
                if delta:
                    first = first or time.perf_counter() - started
                    text += delta
    return first if first is not None else float("nan"), time.perf_counter() - started, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8, help="streamed requests per mode and workload")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import httpx

    from tunewise.rungs.base import Prepared, Request
    from tunewise.models.resolve import load_model
    from tunewise.serve.app import build_app
    from tunewise.serve.config import ServedConfig
    from tunewise.serve.server import BackgroundServer

    model = load_model("embedded")
    as_is = lambda turns: Request([dict(m) for m in turns])  # noqa: E731 - the messages as sent
    configs = {
        "stream": ServedConfig(Prepared(model, as_is), "stream", "base", 64),
        "whole": ServedConfig(Prepared(WholeAnswer(model), as_is), "whole", "base", 64),
    }
    intent = [json.loads(line)["messages"][:2] for line in INTENT_EVAL.read_text().splitlines()[: args.requests]]
    workloads = {
        "intent, 8 new tokens": (intent, 8),
        "open question, 64 new tokens": ([[{"role": "user", "content": STORIES[i % len(STORIES)]}] for i in range(args.requests)], 64),
    }
    results: dict = {}
    with BackgroundServer(build_app(configs, max_batch=1)) as server, httpx.Client(timeout=600) as http:
        url = server.url + "/v1/chat/completions"
        http.post(url, json={"model": "stream", "messages": intent[0], "max_tokens": 2})  # warm-up
        for label, (conversations, max_tokens) in workloads.items():
            rows = {"stream": [], "whole": []}
            mismatches = 0
            for i, messages in enumerate(conversations):
                plain = http.post(url, json={"model": "stream", "messages": messages, "max_tokens": max_tokens}).json()
                expected = plain["choices"][0]["message"]["content"]
                for mode in (("stream", "whole") if i % 2 == 0 else ("whole", "stream")):
                    ttft, total, text = timed_stream(http, url, mode, messages, max_tokens)
                    rows[mode].append((ttft, total, plain["usage"]["completion_tokens"]))
                    mismatches += text != expected
            results[label] = {"rows": rows, "mismatches": mismatches}
            print(f"  {label}: done", file=sys.stderr)

    print(f"\nEmbedded model ({model.precision}), {args.requests} streamed requests per mode and workload, one at a time.\n")
    print("| workload | mean answer tokens | TTFT p50 s: whole / streamed | ratio | total p50 s: whole / streamed | streamed = non-streamed |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for label, result in results.items():
        rows = result["rows"]
        med = {m: (statistics.median(r[0] for r in rows[m]), statistics.median(r[1] for r in rows[m])) for m in rows}
        tokens = statistics.mean(r[2] for r in rows["stream"])
        count = len(rows["stream"]) + len(rows["whole"])
        ratio = med["stream"][0] / med["whole"][0]
        summary[label] = {"ttft_whole_s": med["whole"][0], "ttft_stream_s": med["stream"][0], "ratio": ratio,
                          "total_whole_s": med["whole"][1], "total_stream_s": med["stream"][1], "mismatches": result["mismatches"]}
        print(
            f"| {label} | {tokens:.1f} | {med['whole'][0]:.2f} / {med['stream'][0]:.2f} | x{ratio:.2f} | "
            f"{med['whole'][1]:.2f} / {med['stream'][1]:.2f} | {count - result['mismatches']}/{count} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": {k: v["rows"] for k, v in results.items()}}, indent=2))


if __name__ == "__main__":
    main()
