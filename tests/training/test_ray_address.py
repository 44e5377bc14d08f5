"""Which cluster a grid's Ray executor joins: none named means a new local instance, even
where Ray's own default would join another (``RAY_ADDRESS``, the machine's last
``ray start``); ``auto`` asks for those."""

import pytest

from training.grid.ray import Executor, ray_address

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[ray]')")

pytestmark = pytest.mark.slow


def test_no_address_starts_a_local_instance_even_when_ray_address_names_a_dead_cluster(
        monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")  # nothing listens there
    # Ray 2.60 would turn token auth on for this worker process and write ~/.ray/auth_token
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("HOME", str(tmp_path))
    ray.init(address=ray_address(Executor(kind="ray")), num_cpus=1,
             include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        assert ray.get(ray.remote(lambda: 6 * 7).remote()) == 42
    finally:
        ray.shutdown()


def test_a_named_address_is_passed_on_as_given():
    assert ray_address(Executor(kind="ray", address="auto")) == "auto"
    assert ray_address(Executor(kind="ray", address="ray://head:10001")) == "ray://head:10001"
