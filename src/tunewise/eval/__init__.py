"""Scoring and statistics: metrics (`metrics.py`) and confidence intervals and tests (`stats.py`).

Plain Python and numpy: the decision core imports this without torch.
"""

from tunewise.eval import judge as _judge  # noqa: F401  registers METRICS["judge"] (it builds on Metric)
from tunewise.eval.metrics import METRICS, Metric, MetricError, get_metric, secondary_metrics
from tunewise.eval.stats import (
    Comparison,
    MetricResult,
    bootstrap_ci,
    compare,
    compare_predictions,
    evaluate,
    holm,
    mcnemar,
    paired_bootstrap,
)

__all__ = [
    "METRICS",
    "Comparison",
    "Metric",
    "MetricError",
    "MetricResult",
    "bootstrap_ci",
    "compare",
    "compare_predictions",
    "evaluate",
    "get_metric",
    "holm",
    "mcnemar",
    "paired_bootstrap",
    "secondary_metrics",
]
