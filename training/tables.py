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


def paired(pa: dict[str, tuple[int, float]], pb: dict[str, tuple[int, float]], name_a,
           name_b) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The one rule for comparing two runs patient by patient: (patient ids, labels, scores
    of each run), refusing runs scored on other patients or with other labels."""
    if set(pa) != set(pb):
        raise runs.RunError(f"runs {name_a} and {name_b} were scored on different patients "
                            f"({len(set(pa) ^ set(pb))} differ); a paired comparison needs the "
                            "same test set")
    ids = sorted(pa)
    if any(pa[i][0] != pb[i][0] for i in ids):
        raise runs.RunError(f"runs {name_a} and {name_b} disagree on patients' labels; they "
                            "were not scored on the same test set")
    return (ids, np.asarray([pa[i][0] for i in ids]), np.asarray([pa[i][1] for i in ids]),
            np.asarray([pb[i][1] for i in ids]))


def align(reference: dict, other: dict) -> tuple[list[str], np.ndarray, np.ndarray,
                                                  np.ndarray]:
    """Two result rows' predictions, :func:`paired`."""
    return paired(read_predictions(reference["predictions"]),
                  read_predictions(other["predictions"]), reference["run_id"], other["run_id"])


def table(columns: list[str], rows) -> list[str]:
    """A Markdown table: the header, its rule, one line per row of cells."""
    return ([f"| {' | '.join(columns)} |", "|" + "---|" * len(columns)]
            + [f"| {' | '.join(map(str, cells))} |" for cells in rows])


def number(value, digits: int = 3) -> str:
    """``value`` to ``digits`` decimals, ``–`` when there is none."""
    return "–" if value is None else f"{value:.{digits}f}"
