"""Rendering for annotators: cited items highlighted, evidence linked, everything escaped."""

from app.views import evidence_line, history_html, rationale_html

RECORD = {"sex": "F", "index_date": "2009-01-01", "items": [
    {"id": "E1", "kind": "diagnosis", "date": "2001-01-01", "code": "I10",
     "code_system": "ICD-10", "description": "Essential hypertension <b>bold</b>"},
    {"id": "E2", "kind": "symptom", "date": "2008-01-01", "code": "R41.3",
     "code_system": "ICD-10", "description": "Memory complaint"},
]}


def test_history_highlights_only_cited_items_and_escapes_text():
    page = history_html(RECORD, ["E2"])
    assert "id='ev-E2' class='ra-item ra-cited'" in page
    assert "id='ev-E1' class='ra-item'" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page


def test_the_record_is_one_tab_stop_whose_lines_arrow_keys_can_reach():
    page = history_html(RECORD, ["E2"])
    assert "id='ev-E1' class='ra-item' tabindex='0'" in page  # the list's one Tab stop
    assert "id='ev-E2' class='ra-item ra-cited' tabindex='-1'" in page  # focusable by script
    assert "<ol class='ra-items' aria-label='Patient record'>" in page


def test_rationale_links_known_ids_marks_unknown_ones_and_escapes_script():
    page = rationale_html("Memory loss [E2] and [E9] <script>alert(1)</script>", None,
                          {"E1", "E2"})
    assert "href='#ev-E2'" in page
    assert "ra-missing" in page and "E9" in page
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_stepwise_rationale_lists_steps_with_their_evidence():
    page = rationale_html("", [{"step": "Hypertension [E1]", "evidence": ["E1"]}], {"E1"})
    assert page.count("href='#ev-E1'") == 2


def test_selecting_an_id_shows_its_item():
    assert evidence_line(RECORD, "[E1]").startswith("[E1] 2001-01-01 · Diagnosis")
    assert "not an item" in evidence_line(RECORD, "E7")
