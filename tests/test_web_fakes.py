"""Fakes the web app's test hook loads (TUNEWISE_WEB_TEST_MODEL=test_web_fakes:fake_run_options),
in the app's process (playground) and in the run's child process. No tests here."""

from __future__ import annotations

import re
import time
import zlib

import numpy as np

from tunewise.models.base import FakeModel

INTENT_WORDS = {
    "play_music": ("play", "music", "song", "album"),
    "get_weather": ("weather", "forecast", "rain", "temperature", "sunny", "cold", "warm"),
    "add_to_playlist": ("playlist", "add"),
    "rate_book": ("rate", "stars", "points", "book", "novel"),
    "book_restaurant": ("restaurant", "table", "reserve", "book a", "eat"),
    "search_screening_event": ("movie", "cinema", "showing", "film", "schedule"),
    "search_creative_work": ("find", "show", "tv", "game", "painting", "song called"),
}


def intent_answer(messages: list[dict]) -> str:
    """A keyword oracle: right often enough for a visible score, wrong sometimes for the error browser."""
    text = messages[-1]["content"].lower()
    for label in ("add_to_playlist", "get_weather", "rate_book", "book_restaurant", "search_screening_event", "play_music", "search_creative_work"):
        if any(word in text for word in INTENT_WORDS[label]):
            return label
    return "I'm not sure what you mean."


class SlowFake(FakeModel):
    """Takes a little time per conversation, so a browser can watch progress move."""

    def generate(self, conversations, max_new_tokens, progress=None):
        time.sleep(0.01 * len(conversations))
        return super().generate(conversations, max_new_tokens, progress)


class HashEmbedder:
    """Bag of words hashed into 256 buckets, L2-normalised (as in test_retrieval)."""

    name = "fake-hash-bow"

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 256), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[i, zlib.crc32(word.encode()) % 256] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


def fake_run_options() -> dict:
    return {"model": SlowFake(respond=intent_answer, name="fake-intent"), "embedder": HashEmbedder()}


class VerySlowFake(FakeModel):
    """A fifth of a second per conversation: a run long enough to cancel in the middle."""

    def generate(self, conversations, max_new_tokens, progress=None):
        out = []
        for conv in conversations:
            time.sleep(0.2)
            out += super().generate([conv], max_new_tokens, progress)
        return out


def slow_run_options() -> dict:
    return {"model": VerySlowFake(respond=intent_answer, name="fake-intent"), "embedder": HashEmbedder()}
