"""Several LoRA adapters, and the plain base model, on one copy of the base weights (PEFT multi-adapter).

Serving three LoRA runs and the router's base fallback used to load the base model four times: once
per run (its base + its adapter) and once plain. Here the base is loaded once, each run's adapter is
added to it under its own name (`PeftModel.load_adapter(..., adapter_name=...)`), and each served
configuration gets an `AdapterView`: a ChatModel that switches to its adapter (`set_adapter`), or
turns adapters off for the plain base (`disable_adapter`), around every generate or stream call.

Only one adapter can be active at a time, so the views of one `SharedBase` must never generate
concurrently: they all carry `weights = the SharedBase`, and the server gives one batch worker per
`weights` (serve/app.py `weights_of`), which groups each batch by view. A lock makes misuse safe
anyway.

A shared adapter runs unmerged (base + LoRA A and B at each layer). A single served adapter is
merged into its own copy of the weights instead (finetune/rung.py); sharing trades that speed for
memory, and is used only where it saves a copy (see config.py `load_runs`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.models.base import Generation, Messages, Progress, TokenStream


class SharedBase:
    """One copy of a base model with any number of named LoRA adapters.

    >>> shared = SharedBase.from_spec("embedded")  # doctest: +SKIP
    >>> intent = shared.add_adapter("intent", "runs/intent-1a2b/train/adapter")  # doctest: +SKIP
    >>> base = shared.view(None)  # the plain base model, adapters off  # doctest: +SKIP
    """

    def __init__(self, model: Any, tokenizer: Any, name: str, **options: Any) -> None:
        from tunewise.models.hf import TransformersModel

        self.base = model
        self.tokenizer = tokenizer
        self.name = name
        self.options = options
        self.peft: Any = None  # the PeftModel, once the first adapter is added
        self.generator = TransformersModel(model, tokenizer, name, **options)
        self.adapters: dict[str, Path] = {}  # view name -> adapter folder
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: str, trust_remote_code: bool = False, **options: Any) -> "SharedBase":
        from tunewise.models.resolve import load_pretrained, model_name

        model, tokenizer = load_pretrained(spec, trust_remote_code=trust_remote_code)
        model.eval()
        return cls(model, tokenizer, model_name(spec), **options)

    def add_adapter(self, label: str, folder: str | Path) -> "AdapterView":
        """Load a saved adapter folder (adapter_config.json + safetensors) under its own name."""
        from peft import PeftModel

        from tunewise.models.hf import TransformersModel

        folder = Path(folder)
        if not (folder / "adapter_config.json").is_file():
            raise TunewiseError(f"adapter not found: {folder} has no adapter_config.json (give the folder `tunewise train` wrote)")
        # PEFT adapter names become module attribute keys: keep them to word characters, unique.
        name = f"{re.sub(r'[^0-9A-Za-z_]', '_', label)}_{len(self.adapters)}"
        with self._lock:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base, str(folder), adapter_name=name, is_trainable=False)
                self.peft.eval()
                # From here on every view generates through the PeftModel, the plain one with adapters off.
                self.generator = TransformersModel(self.peft, self.tokenizer, self.name, **self.options)
            else:
                self.peft.load_adapter(str(folder), adapter_name=name, is_trainable=False)
            self.adapters[name] = folder
        return AdapterView(self, name, f"{self.name}+{label}")

    def view(self, adapter: str | None) -> "AdapterView":
        """A ChatModel over this copy with `adapter` active (None: the plain base model)."""
        if adapter is not None and adapter not in self.adapters:
            raise TunewiseError(f"no adapter {adapter!r} on {self.name}; loaded: {', '.join(self.adapters) or 'none'}")
        return AdapterView(self, adapter, self.name if adapter is None else f"{self.name}+{adapter}")

    @contextmanager
    def active(self, adapter: str | None) -> Iterator[None]:
        """Generate with `adapter` (None: none) for the duration of the block, one caller at a time."""
        with self._lock:
            if self.peft is None:
                yield
            elif adapter is None:
                with self.peft.disable_adapter():
                    yield
            else:
                if self.peft.active_adapter != adapter:
                    self.peft.set_adapter(adapter)
                yield


class AdapterView:
    """A ChatModel: one adapter (or none) of a SharedBase. Its batches run on `weights`."""

    def __init__(self, weights: SharedBase, adapter: str | None, name: str) -> None:
        self.weights = weights
        self.adapter = adapter
        self.name = name

    @property
    def model(self) -> Any:
        """The transformers model (for its config: context window)."""
        return self.weights.generator.model

    def count_tokens(self, text: str) -> int:
        return self.weights.generator.count_tokens(text)

    def prompt_ids(self, conversation: Messages) -> list[int]:
        return self.weights.generator.prompt_ids(conversation)

    def generate(
        self, conversations: Sequence[Messages], max_new_tokens: int, progress: Progress | None = None, constraint: Any = None
    ) -> list[Generation]:
        extra = {} if constraint is None else {"constraint": constraint}  # a constrained rung's (ladder/rungs.py)
        with self.weights.active(self.adapter):
            return self.weights.generator.generate(conversations, max_new_tokens, progress, **extra)

    def stream(self, messages: Messages, max_new_tokens: int, constraint: Any = None) -> TokenStream:
        extra = {} if constraint is None else {"constraint": constraint}
        with self.weights.active(self.adapter):
            return (yield from self.weights.generator.stream(messages, max_new_tokens, **extra))
