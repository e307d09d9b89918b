"""Reading, normalising and auditing training/eval data. Pure Python: no torch."""

from tunewise.data.example import Example

__all__ = ["Example"]
