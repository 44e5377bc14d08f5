"""The budget planner: its model reproduces the pilot, its sizes hit the target width, and
the closed-form floor is Krippendorff's."""

import json

import numpy as np
import pytest

from annotation_db.agreement import alpha_from_coincidences
from annotation_db.planner import (
    DOMAIN,
    PlanError,
    ci_widths,
    closed_form_minimum,
    model_from_alpha,
    model_from_coincidences,
    plan,
    size_for_width,
)


def test_the_closed_form_gives_krippendorffs_published_example():
    # four equiprobable values (p_c = 0.25), two coders, p = 0.05: 139 values for
    # α_min = 0.800 and 81 for α_min = 0.667 (Krippendorff 2019, as the ATLAS.ti manual)
    assert closed_form_minimum(0.8, 0.25)["values"] == 139
    assert closed_form_minimum(0.667, 0.25)["values"] == 81
    assert closed_form_minimum(0.8, 0.25, coders=3)["values"] > 139


def test_a_stated_alpha_is_the_alpha_the_model_simulates():
    model = model_from_alpha(0.7, [0.05, 0.1, 0.2, 0.35, 0.3])
    rng = np.random.default_rng(0)
    o = model.simulate_coincidences(rng, 20_000, 3).sum(axis=0)
    alpha = alpha_from_coincidences(o[None], "ordinal", DOMAIN)[0]
    assert alpha == pytest.approx(0.7, abs=0.02)


def test_the_pilot_model_reproduces_the_pilots_coincidence_matrix():
    pilot = np.array([[6, 3, 1, 0, 0], [3, 10, 5, 1, 0], [1, 5, 20, 8, 1],
                      [0, 1, 8, 30, 9], [0, 0, 1, 9, 18]], dtype=float)
    model = model_from_coincidences(pilot, "pilot")
    implied = (model.q.T * model.p) @ model.q  # any two ratings of one item
    assert implied == pytest.approx(pilot / pilot.sum(), abs=0.001)  # clipping costs < 0.001
    o = model.simulate_coincidences(np.random.default_rng(1), 40_000, 2).sum(axis=0)
    assert o / o.sum() == pytest.approx(pilot / pilot.sum(), abs=0.006)  # ± 3 SD at 40k


def test_the_recommended_size_meets_the_target_by_direct_simulation():
    model = model_from_alpha(0.7, [0.1, 0.15, 0.25, 0.3, 0.2])
    plan_ = size_for_width(model, 2, 0.15, datasets=20, replicates=150, seed=0)
    widths = ci_widths(model, plan_["items"], 2, datasets=40, replicates=150,
                       rng=np.random.default_rng(123))  # an independent check
    assert np.median(widths) == pytest.approx(0.15, rel=0.10)
    # half the items give a visibly wider CI: the size is not padded for nothing
    half = ci_widths(model, plan_["items"] // 2, 2, datasets=40, replicates=150,
                     rng=np.random.default_rng(7))
    assert np.median(half) > 0.15 * 1.2


def test_more_raters_per_item_need_fewer_items_and_hours_come_from_seconds():
    model = model_from_alpha(0.6, [0.1, 0.15, 0.25, 0.3, 0.2])
    result = plan({"accuracy": model}, target_width=0.2, raters=[2, 4], datasets=10,
                  replicates=100, seconds_per_rating=90, items_so_far={"1": 2, "2": 2})
    two, four = result["options"]
    assert four["items"] < two["items"]
    assert two["more_ratings"] == two["ratings"] - 4
    assert two["hours_more"] == pytest.approx(two["more_ratings"] * 90 / 3600)


@pytest.mark.parametrize("kwargs, message", [
    ({"target_width": 0}, "between 0 and 2"), ({"raters": [1]}, "at least two raters")])
def test_a_plan_that_cannot_be_made_says_why(kwargs, message):
    model = model_from_alpha(0.6, [0.2] * 5)
    with pytest.raises(PlanError, match=message):
        plan({"accuracy": model}, **{"target_width": 0.1, "raters": [2], **kwargs})


def test_a_stated_distribution_must_be_five_shares_that_sum_to_one():
    with pytest.raises(PlanError, match="sum to 1"):
        model_from_alpha(0.6, [0.5, 0.5, 0.5, 0, 0])


def test_campaign_plan_from_a_pilot_of_ratings(engine, monkeypatch):
    from sqlmodel import Session
    from typer.testing import CliRunner

    from annotation_db import campaigns
    from annotation_db.simulate import simulate, simulated_raters
    from app.cli import app
    from tests.helpers import seed_rationales

    run_id = seed_rationales(engine, n=16, gold=0)
    with Session(engine) as session:
        campaigns.create_campaign(session, name="pilot", run_ids=[run_id],
                                  annotators=simulated_raters(session, 3), k=3, claim_review=False)
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    runner = CliRunner()
    empty = runner.invoke(app, ["campaign", "plan", "pilot"])
    assert empty.exit_code == 1 and "needs at least 10" in empty.output
    with Session(engine) as session:
        simulate(session, campaigns.get_campaign(session, "pilot"), seed=4)
    planned = runner.invoke(app, ["campaign", "plan", "pilot", "--include-simulated", "--raters",
                                  "2", "--target-ci-width", "0.3", "--seconds-per-rating", "60",
                                  "--json"])
    assert planned.exit_code == 0, planned.output
    result = json.loads(planned.output)
    option = result["options"][0]
    assert result["items_so_far"] == 16 and result["ratings_so_far"] == 48
    assert option["more_ratings"] == max(0, option["ratings"] - 2 * min(16, option["items"]))
    assert option["hours_more"] == pytest.approx(option["more_ratings"] / 60)
    assert "pilot: 16 items" in result["models"]["accuracy"]


def test_ratings_that_never_vary_give_a_plan_error_not_a_crash():
    with pytest.raises(PlanError, match="never vary"):
        plan({"accuracy": model_from_alpha(0.5, [0, 0, 0, 0, 1])}, target_width=0.1,
             raters=[2], datasets=4, replicates=20)
