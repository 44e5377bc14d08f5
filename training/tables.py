"""Report building blocks shared by the grid's report and its mechanism section: runs'
predictions paired by patient, metrics with their CIs, Markdown tables."""


import numpy as np

from training import runs
from training.evaluate import read_predictions


def format_metric(metric: dict | None) -> str:
    """``0.731 [0.662, 0.795]``: a metric with its CI, ``–`` when there is none."""
    if not metric or metric.get("value") is None:
        return "–"
    if metric.get("low") is None:
        return f"{metric['value']:.3f}"
    return f"{metric['value']:.3f} [{metric['low']:.3f}, {metric['high']:.3f}]"


def format_difference(entry: dict, key: str = "value") -> str:
    """``+0.060 [+0.004, +0.120]``: a signed difference (``entry[key]``) with its CI."""
    return f"{entry[key]:+.3f} [{entry['low']:+.3f}, {entry['high']:+.3f}]"


def align(reference: dict, other: dict) -> tuple[list[str], np.ndarray, np.ndarray,
                                                  np.ndarray]:
    """Two result rows' predictions, :func:`training.runs.paired`."""
    return runs.paired(read_predictions(reference["predictions"]),
                  read_predictions(other["predictions"]), reference["run_id"], other["run_id"])


def table(columns: list[str], rows) -> list[str]:
    """A Markdown table: the header, its rule, one line per row of cells."""
    return ([f"| {' | '.join(columns)} |", "|" + "---|" * len(columns)]
            + [f"| {' | '.join(map(str, cells))} |" for cells in rows])


def number(value, digits: int = 3) -> str:
    """``value`` to ``digits`` decimals, ``–`` when there is none."""
    return "–" if value is None else f"{value:.{digits}f}"
