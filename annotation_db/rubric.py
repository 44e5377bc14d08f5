"""The rating rubric's terms: the two scored dimensions and the flags a rater can raise.

Guidelines, the annotation screen, the agreement report, the approval policy and the
exported ``ratings_long`` view all use these names.
"""

SCALE_DIMENSIONS = ("accuracy", "faithfulness")  # each scored 1–5
FLAGS = ("hallucinated_fact", "missed_key_risk_factor", "unsafe_or_misleading",
         "label_contradicts_record")
