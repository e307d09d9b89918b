"""Model backends behind one small contract (`ChatModel.generate`). Heavy imports stay inside."""

from tunewise.models.base import ChatModel, FakeModel, Generation

__all__ = ["ChatModel", "FakeModel", "Generation"]
