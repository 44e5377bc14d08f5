"""The "store a cohort" stage: simulate a configured cohort and write it to the database.

The CLI (``rationale-audit cohort generate``), the demo and the study all call
:func:`store_generated_cohort`, so every stored cohort carries the same provenance:
its config and content hash, the code version and the library versions.
"""

from collections.abc import Callable

from annotation_db.cohorts import store_cohort
from annotation_db.provenance import code_version, library_versions
from annotation_db.render import render_text
from generation.cohort import CohortSimulator
from generation.cohort_config import CohortConfig


def store_generated_cohort(engine, cfg: CohortConfig, *, workers: int = 1,
                           on_progress: Callable[[int], None] | None = None
                           ) -> tuple[int, dict | None]:
    """Generate ``cfg``'s cohort and store it; returns its id and its sampling record."""
    plan = CohortSimulator(cfg).plan()
    provenance = {"config": cfg.model_dump(mode="json"), "config_sha256": cfg.content_hash(),
                  "code_version": code_version(), "libraries": library_versions()}
    cohort_id = store_cohort(engine, name=cfg.name, source="generator", seed=cfg.seed,
                             config=provenance, sampling=plan.sampling,
                             batches=plan.row_batches(render_text, workers),
                             on_progress=on_progress)
    return cohort_id, plan.sampling
