"""The fast tier cannot hold a heavy test: the rule marks them, and the guard fails an
unmarked one at the entry point it reaches."""

import subprocess
import sys

import pytest
from _pytest.outcomes import Failed

from tests.tiers import FIXTURE_MARKERS, HEAVY, guard


def test_the_guard_fails_a_heavy_entry_point_with_the_marker_it_needs():
    import transformers

    import generation.engine

    original = generation.engine.load_vllm
    with guard():
        with pytest.raises(Failed, match=r"starts a vLLM engine .* @pytest.mark.vllm"):
            generation.engine.load_vllm(None)
        with pytest.raises(Failed, match=r"@pytest.mark.model"):
            transformers.LlamaForCausalLM.from_pretrained("anything")
        with pytest.raises(Failed, match=r"@pytest.mark.server"):
            subprocess.run([sys.executable, "-m", "app.cli", "--help"], check=False)
        done = subprocess.run([sys.executable, "-c", "print('light')"], capture_output=True,
                              text=True, check=True)  # an ordinary process is fine
        assert done.stdout == "light\n"
    assert generation.engine.load_vllm is original  # put back afterwards


def test_every_collected_test_that_uses_a_heavy_fixture_carries_its_marker(request):
    for item in request.session.items:
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                assert item.get_closest_marker(marker), item.nodeid
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1].startswith(
                "test_browser"):
            assert item.get_closest_marker("browser"), item.nodeid


def test_every_heavy_marker_is_registered(pytestconfig):
    registered = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert set(HEAVY) <= registered
