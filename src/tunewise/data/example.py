"""The one in-memory shape every data format is normalised to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Example:
    """One conversation: the messages up to the last user turn, and the gold assistant answer.

    >>> ex = Example(messages=[{"role": "user", "content": "2+2?"}], answer="4")
    >>> ex.input_text, ex.references
    ('2+2?', ['4'])
    """

    messages: list[dict[str, str]]
    """Chat messages before the answer (may start with a system message), OpenAI roles."""
    answer: str
    """The gold assistant reply (the last assistant turn)."""
    references: list[str] = field(default_factory=list)
    """Every accepted answer; defaults to [answer]."""
    source_id: str | None = None
    """Id of the corpus document that holds the answer (for retrieval recall)."""
    line: int | None = None
    """1-based line (or CSV row) number in the file it came from."""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.references:
            self.references = [self.answer]

    @property
    def system(self) -> str | None:
        if self.messages and self.messages[0]["role"] == "system":
            return self.messages[0]["content"]
        return None

    @property
    def turns(self) -> list[dict[str, str]]:
        """The messages without the system prompt."""
        return [m for m in self.messages if m["role"] != "system"]

    @property
    def input_text(self) -> str:
        """The last user message: what retrieval, few-shot selection and dedup key on."""
        for m in reversed(self.messages):
            if m["role"] == "user":
                return m["content"]
        return ""

    def lone_surrogate(self) -> tuple[str, str] | None:
        """(field, escape) of the first lone surrogate in the text a model would see, else None.

        Half a UTF-16 pair (JSON's "\\ud800") decodes to a str no tokenizer can encode: the run
        would crash at the first batch holding it, so loading refuses it instead.

        >>> Example([{"role": "user", "content": "a\\ud800"}], "b").lone_surrogate()
        ('messages[0].content', '\\\\ud800')
        """
        fields = [(f"messages[{i}].{k}", v) for i, m in enumerate(self.messages) for k, v in m.items()]
        fields += [("answer", self.answer), ("source_id", self.source_id)]
        fields += [(f"references[{i}]", r) for i, r in enumerate(self.references)]
        for name, text in fields:
            if not isinstance(text, str):
                continue
            try:
                text.encode("utf-8")  # C speed; fails only on a surrogate
            except UnicodeEncodeError as err:
                return name, text[err.start].encode("utf-8", "backslashreplace").decode("ascii")
        return None

    def to_chat(self) -> dict[str, Any]:
        """OpenAI chat fine-tuning format, with the extra fields kept."""
        row: dict[str, Any] = {"messages": [*self.messages, {"role": "assistant", "content": self.answer}]}
        if self.references != [self.answer]:
            row["references"] = self.references
        if self.source_id is not None:
            row["source_id"] = self.source_id
        return row
