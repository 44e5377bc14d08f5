"""The rating rubric's terms: the two scored dimensions and their 1–5 scale, the flags a
rater can raise and the verdicts of claim review.

Guidelines, the annotation screen, the agreement report, the approval policy and the
exported ``ratings_long`` view all use these names.
"""

SCALE_DIMENSIONS = ("accuracy", "faithfulness")  # each scored on SCALE
SCALE = (1, 2, 3, 4, 5)  # the scores of every scored dimension, lowest to highest
SCALE_MIN, SCALE_MAX = SCALE[0], SCALE[-1]
FLAGS = ("hallucinated_fact", "missed_key_risk_factor", "unsafe_or_misleading",
         "label_contradicts_record")

# Claim review: one verdict per claim (a step, or a sentence of free text), in the order
# the screen offers them (keys 1–5). Nominal: no verdict is "more" than another.
CLAIM_VERDICTS = {
    "supported": "supported by the record",
    "partly_supported": "partly supported",
    "not_in_record": "not in the record",
    "contradicted": "contradicted by the record",
    "general_knowledge": "general medical knowledge (not checkable against the record)",
}
UNSUPPORTED_VERDICTS = ("not_in_record", "contradicted")  # what the export policy counts
CLAIM_DIMENSION = "claim_verdict"  # the dimension name of claim verdicts in agreement
