"""Small builders shared by test modules (fixtures stay in conftest.py)."""

import socket

from annotation_db import migrate
from annotation_db.cohorts import in_memory_batches, store_cohort
from annotation_db.session import make_engine
from generation.cohort import CohortConfig, generate
from generation.render import render_text


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def engine_with_cohort(url: str, *, n: int, seed: int):
    """A migrated database holding one generated cohort named "c"."""
    engine = make_engine(url)
    migrate.upgrade(engine)
    records, _ = generate(CohortConfig(n=n, seed=seed))
    store_cohort(engine, name="c", source="t", seed=seed, config={}, sampling=None,
                 batches=in_memory_batches(records, render_text))
    return engine


def audited_version(url: str, exports_dir, *, n: int = 60, seed: int = 7, name: str = "t"):
    """A migrated database with a small audited dataset version named ``name``.

    Template-teacher rationales in both formats, rated by simulated raters, exported
    under a policy that admits simulated ratings. Returns the engine.
    """
    from training.study import AuditSettings, DataSettings, prepare_dataset

    engine = make_engine(url)
    migrate.upgrade(engine)
    prepare_dataset(engine, DataSettings(cohort="c", n=n, seed=seed, history_budget=160,
                                         dataset=name, audit=AuditSettings(campaign="a")),
                    exports_dir=exports_dir)
    return engine
