"""Shared fixtures: databases (SQLite always, PostgreSQL when a server is given) and the model.

PostgreSQL tests need ``TEST_DATABASE_URL`` pointing at a server where the user may
create databases (``.ci/run`` starts one on loopback). Without it they are skipped,
unless ``RATIONALE_AUDIT_REQUIRE_POSTGRES=1`` makes that an error, as in CI.
"""

import gc
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from annotation_db import migrate
from annotation_db.session import make_engine
from generation.models import ResolvedModel, resolve_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def pytest_addoption(parser):
    parser.addoption("--fast", action="store_true", default=False,
                     help="the fast tier (make test-fast): everything but vLLM engines, trained "
                     "or loaded models, browsers, servers and slow tests; a test that starts "
                     "one of those without its marker fails (tests/tiers.py)")


def pytest_configure(config):
    """Under xdist, each worker's OpenMP pool gets its share of the cores, and so do the
    jobs, servers and CLI runs it starts (they inherit the variable): two workers with a
    pool of every core each spin-wait on each other. On 2 cores, OMP_NUM_THREADS=1 ran the
    four slowest test files in 396 s instead of 522 s (CPU time 9.2 min instead of 15.1;
    2026-12-06). A value already set is kept. Set here, in the controller, before it
    starts the workers."""
    workers = getattr(config.option, "numprocesses", None)
    if isinstance(workers, int) and workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))


def pytest_collection_modifyitems(config, items):
    from tests.tiers import is_heavy, mark_by_rule

    for item in items:
        mark_by_rule(item)
    if config.getoption("--fast"):
        heavy = [item for item in items if is_heavy(item)]
        if heavy:
            config.hook.pytest_deselected(items=heavy)
            items[:] = [item for item in items if not is_heavy(item)]


@pytest.fixture(scope="session", autouse=True)
def _fast_tier_guard(request):
    """Under ``--fast``, the heavy entry points fail the test that reaches them."""
    if not request.config.getoption("--fast"):
        yield
        return
    from tests.tiers import guard

    with guard():
        yield


def _postgres_admin_url() -> str | None:
    url = os.environ.get("TEST_DATABASE_URL")
    if not url and os.environ.get("RATIONALE_AUDIT_REQUIRE_POSTGRES") == "1":
        pytest.fail("RATIONALE_AUDIT_REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path) -> Iterator[str]:
    """A URL of a new, empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite'}"
        return
    admin_url = _postgres_admin_url()
    if not admin_url:
        pytest.skip("set TEST_DATABASE_URL to run the PostgreSQL variant")
    name = f"ra_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def empty_engine(database_url) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


class MigratedTemplates:
    """A database migrated to head once per session (per worker) for each kind, copied for
    every test that asks for a migrated one: a file copy on SQLite, ``CREATE DATABASE …
    TEMPLATE`` on PostgreSQL. The migrations themselves are tested from an empty database
    (tests/annotation_db/test_schema.py); running all of them again before each of some
    400 tests cost about 5 s apiece."""

    def __init__(self, folder):
        self.folder = folder
        self.sqlite_file = None
        self.postgres_name: str | None = None

    def sqlite(self) -> str:
        if self.sqlite_file is None:
            path = self.folder / "migrated.sqlite"
            engine = make_engine(f"sqlite:///{path}")
            migrate.upgrade(engine)
            with engine.connect() as conn:  # everything in the main file, nothing in the WAL
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            engine.dispose()
            self.sqlite_file = path
        return self.sqlite_file

    def postgres(self, admin_url: str) -> str:
        if self.postgres_name is None:
            name = f"ra_template_{uuid.uuid4().hex[:12]}"
            admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            engine = make_engine(make_url(admin_url).set(database=name).render_as_string(
                hide_password=False))
            migrate.upgrade(engine)
            engine.dispose()  # a template may have no open connection
            self.postgres_name = name
        return self.postgres_name

    def drop(self) -> None:
        admin_url = _postgres_admin_url()
        if self.postgres_name and admin_url:
            admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.postgres_name}" WITH (FORCE)'))
            admin.dispose()


@pytest.fixture(scope="session")
def _migrated(tmp_path_factory) -> Iterator[MigratedTemplates]:
    templates = MigratedTemplates(tmp_path_factory.mktemp("migrated"))
    yield templates
    templates.drop()


@pytest.fixture
def engine(database_url, _migrated) -> Iterator[Engine]:
    """An engine on a database migrated to head with the real Alembic migrations (a copy of
    the session's migrated template)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        shutil.copyfile(_migrated.sqlite(), url.database)
    else:
        admin_url = _postgres_admin_url()
        template = _migrated.postgres(admin_url)
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:  # the empty database database_url made, replaced
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{url.database}" TEMPLATE "{template}"'))
        admin.dispose()
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def bundled_model(model_cache) -> ResolvedModel:
    """The bundled SmolLM2, dequantized once per test session into a private cache."""
    return resolve_model("bundled:smollm2-135m-instruct", cache_dir=model_cache)


@pytest.fixture(scope="session")
def _shared_vllm(bundled_model):
    """Holds the session's one vLLM engine on the bundled model (see current_vllm_engine)."""
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install '.[cpu]')")
    holder: dict = {}
    yield holder
    holder.clear()


@pytest.fixture
def current_vllm_engine(_shared_vllm, bundled_model) -> Callable[[], Any]:
    """The session's shared vLLM engine as a test gets it at the moment of the call.

    vLLM keeps its parallel groups in process globals, and an engine that shuts down in
    process tears them down for every engine (EngineCore.shutdown calls
    cleanup_dist_env_and_memory). A test that starts and drops an engine of its own (a
    scorer pool, say) therefore leaves the shared one unable to step: it is restarted
    when those groups are gone."""
    from vllm.distributed.parallel_state import model_parallel_is_initialized

    from generation.engine import EngineOptions, load_vllm

    def current():
        if "llm" not in _shared_vllm or not model_parallel_is_initialized():
            _shared_vllm.pop("llm", None)
            gc.collect()  # the old engine's shutdown runs before the new one starts
            _shared_vllm["llm"] = load_vllm(
                bundled_model, EngineOptions(max_model_len=2048, dtype="float32"))
        return _shared_vllm["llm"]

    return current


@pytest.fixture
def vllm_engine(current_vllm_engine):
    """One in-process vLLM engine on the bundled model, shared by the session's tests."""
    return current_vllm_engine()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, bundled_model) -> str:
    """A randomly initialised 2-layer Llama with the bundled model's tokenizer and chat
    template: for tests of data plumbing through a trainer, where what the model has
    learned does not matter and a 135M-parameter step would only cost time. Its head size
    (32) and context (8,192) are ones vLLM's CPU engine serves."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-model")
    tokenizer = AutoTokenizer.from_pretrained(bundled_model.path)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=8192,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)  # the same weights in every session: no test depends on a draw
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
