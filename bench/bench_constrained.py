"""Cost per generated token of constrained decoding against free generation, on this CPU.

    OMP_NUM_THREADS=1 python bench/bench_constrained.py [--n 8]

Embedded model, one request at a time (the latency a user meets), fp32 and greedy. Two workloads:
the intent labels (zero-shot intent prompts, 7 labels) and the e2e_extract JSON schema inferred
from its training answers (96 new tokens). Each is run free, under xgrammar (the logits processor
tunewise uses) and under llguidance (a minimal logits processor over its torch helpers), taking
turns example by example so background load slows all alike. Prints seconds per generated token and
the ratio to free generation; grammar compilation is timed once, separately.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "tunewise" / "examples"


def rows(task: str) -> list[list[dict[str, str]]]:
    return [json.loads(line)["messages"] for line in (EXAMPLES / task / "eval.jsonl").read_text().splitlines() if line.strip()]


def train_answers(task: str) -> list[str]:
    return [json.loads(line)["messages"][-1]["content"] for line in (EXAMPLES / task / "train.jsonl").read_text().splitlines() if line.strip()]


class LLGuidanceProcessor:
    """llguidance in transformers' generate(): one matcher per row, a token bitmask per step."""

    def __init__(self, lltok, grammar: str, vocab: int) -> None:
        import llguidance
        import llguidance.torch as llt

        self.llt, self.lltok, self.grammar, self.vocab = llt, lltok, grammar, vocab
        self.matchers: list = []
        self.prefilled = False
        self.llguidance = llguidance

    def __call__(self, input_ids, scores):
        if not self.matchers:
            self.matchers = [self.llguidance.LLMatcher(self.lltok, self.grammar) for _ in range(input_ids.shape[0])]
            self.mask = self.llt.allocate_token_bitmask(input_ids.shape[0], self.vocab)
        else:
            for i, m in enumerate(self.matchers):
                if not m.is_stopped():
                    m.consume_token(int(input_ids[i, -1]))
        for i, m in enumerate(self.matchers):
            self.llt.fill_next_token_bitmask(m, self.mask, i)  # a stopped matcher allows only the end token
        self.llt.apply_token_bitmask_inplace(scores, self.mask)
        return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="requests per workload and method")
    args = parser.parse_args()

    import llguidance
    import llguidance.hf
    import torch
    from transformers import LogitsProcessorList

    from tunewise.models.constraints import Constraint, GrammarCache, hf_logits_processor, infer_json_schema, label_set
    from tunewise.models.resolve import load_model

    torch.manual_seed(0)
    model = load_model("embedded", bf16="off")
    vocab = model.model.get_output_embeddings().weight.shape[0]
    started = time.perf_counter()
    cache = GrammarCache(model.tokenizer, vocab, model.eos_ids)
    xgr_setup = time.perf_counter() - started
    started = time.perf_counter()
    lltok = llguidance.hf.from_tokenizer(model.tokenizer, n_vocab=vocab, eos_token=model.eos_ids[0])
    llg_setup = time.perf_counter() - started
    print(f"tokenizer set-up (once per model): xgrammar {xgr_setup:.2f}s, llguidance {llg_setup:.2f}s")

    workloads = {
        "intent labels": (Constraint("labels", label_set(train_answers("intent"))), rows("intent"), 24),
        "e2e JSON schema": (Constraint("json_schema", schema=infer_json_schema(train_answers("e2e_extract"))), rows("e2e_extract"), 96),
    }
    for name, (constraint, examples, max_new) in workloads.items():
        started = time.perf_counter()
        cache.get(constraint)
        xgr_compile = time.perf_counter() - started
        if constraint.kind == "labels":
            grammar = llguidance.LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(x) for x in constraint.labels))
        else:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(
                constraint.schema, defaults={"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
            )
        started = time.perf_counter()
        llguidance.LLMatcher(lltok, grammar)
        llg_compile = time.perf_counter() - started
        methods = {
            "free": lambda: [],
            "xgrammar": lambda: [hf_logits_processor(cache, constraint)],
            "llguidance": lambda: [LLGuidanceProcessor(lltok, grammar, vocab)],
        }
        seconds = dict.fromkeys(methods, 0.0)
        tokens = dict.fromkeys(methods, 0)
        requests = dict.fromkeys(methods, 0.0)

        def run(ids, method: str, new: int) -> tuple[float, int]:
            start = time.perf_counter()
            with torch.inference_mode():
                out = model.model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False,
                    eos_token_id=model.eos_ids, pad_token_id=model.pad_id, logits_processor=LogitsProcessorList(methods[method]()),
                )
            return time.perf_counter() - start, out.shape[1] - ids.shape[1]

        for messages in examples[: args.n]:
            prompt = model.prompt_ids([m for m in messages if m["role"] != "assistant"])
            ids = torch.tensor([prompt])
            # The prompt's forward pass and first token, the same for every method: taken out, so the
            # ratio compares the cost of each further token (where the grammar's mask is computed).
            prefill = min(run(ids, "free", 1)[0] for _ in range(2))
            for method in methods:
                wall, new = run(ids, method, max_new)
                requests[method] += wall
                seconds[method] += max(0.0, wall - prefill)
                tokens[method] += new - 1
        print(f"\n{name}: {args.n} requests, batch 1, compile xgrammar {xgr_compile * 1000:.0f} ms, llguidance {llg_compile * 1000:.0f} ms")
        free = seconds["free"] / tokens["free"]
        for method in methods:
            per_token = seconds[method] / max(1, tokens[method])
            print(
                f"  {method:<11} {tokens[method] + args.n:>5} tokens  {requests[method] / args.n:6.2f} s/request  "
                f"{per_token * 1000:6.1f} ms/token after the first  ratio to free {per_token / free:.2f}x"
            )


if __name__ == "__main__":
    main()
