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
