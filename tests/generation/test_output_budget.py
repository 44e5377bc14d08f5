"""A rationale schema sized to the token budget: its largest document always fits."""

import json

import jsonschema
import pytest

from annotation_db.render import render_compact, tokenizer_counter
from generation.cohort import generate
from generation.cohort_config import CohortConfig
from generation.models import load_tokenizer
from generation.output_budget import (
    MAX_RATIONALE_CHARS,
    BudgetError,
    densest,
    derive_bounds,
    document_tokens,
    escaped,
    estimated_tokens,
    largest_document,
)
from generation.rationale_schema import json_schema, parse_output


@pytest.fixture(scope="module")
def count(bundled_model):
    return tokenizer_counter(load_tokenizer(bundled_model.path))


@pytest.fixture(scope="module")
def cohort(count):
    records, _ = generate(CohortConfig(n=24, seed=5))
    histories = [render_compact(r, 700, count).text for r in records]
    ids = sorted({item["id"] for r in records for item in r["items"]})
    return histories, ids


@pytest.mark.parametrize("format", ["free", "stepwise"])
def test_the_largest_valid_document_fits_every_budget(format, count, cohort):
    histories, ids = cohort
    filler, _ = densest(histories, count)
    for max_tokens in range(64, 2100, 41):
        bounds = derive_bounds(max_tokens, format, count, ids=ids, texts=histories)
        document = largest_document(bounds, ids, filler)
        # It is valid under the schema the decoder is given, and under the content checks.
        jsonschema.validate(document, json_schema(ids, format, bounds))
        output, error = parse_output(json.dumps(document), ids, format)
        assert error is None, (max_tokens, error)
        # Tokenized with the widest separators the engine writes, it fits the budget.
        written = document_tokens(document, count)
        assert written == bounds.largest_document_tokens <= max_tokens, (max_tokens, written)
        # Any longer string would break the schema: the bound is the schema's bound.
        longer = json_schema(ids, format, bounds)
        if format == "free":
            assert longer["properties"]["rationale"]["maxLength"] == bounds.rationale_chars
        else:
            assert longer["properties"]["rationale"]["maxItems"] == bounds.steps


def test_bounds_grow_with_the_budget_up_to_the_content_limits(count, cohort):
    histories, ids = cohort
    sizes = [derive_bounds(t, "free", count, ids=ids, texts=histories).rationale_chars
             for t in (128, 256, 384, 768, 4096)]
    assert sizes == sorted(sizes) and sizes[0] > 100 and sizes[-1] == MAX_RATIONALE_CHARS


def test_characters_per_token_are_measured_on_the_densest_history(count, cohort):
    histories, ids = cohort
    bounds = derive_bounds(384, "free", count, ids=ids, texts=histories)
    ratios = [len(h) / count(escaped(h)) for h in histories]
    assert bounds.chars_per_token == round(min(ratios), 4)
    # The prose of the instructions packs more characters into a token than the history.
    assert bounds.chars_per_token < len(escaped("The record shows possible early cognitive "
                                                "change and established risk factors.")) / 12


@pytest.mark.parametrize("format, minimum", [("free", "at least 20"), ("stepwise", "at least 10")])
def test_a_budget_too_small_for_the_format_names_its_minimum(format, minimum, count, cohort):
    histories, ids = cohort
    with pytest.raises(BudgetError, match=f"max_tokens 24 is too small for the {format} "
                                          f".*{minimum}.*raise max_tokens"):
        derive_bounds(24, format, count, ids=ids, texts=histories)


def test_an_estimated_count_errs_long_for_dense_text(count, cohort):
    histories, _ = cohort
    assert all(estimated_tokens(h) >= count(h) for h in histories)
