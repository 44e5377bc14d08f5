"""Ratings in long format, from a CSV file or from a campaign in the database.

CSV: a header ``rater,item,dimension,score`` and one row per rating; a rater's missing item
is simply absent. A bad file is rejected whole, with every bad line's number and reason.
"""

from pathlib import Path

from sqlalchemy import select
from sqlmodel import Session

from annotation_db.agreement import DimensionSpec, Rating
from annotation_db.csv_files import CsvFileError, read_csv
from annotation_db.errors import UserError
from annotation_db.models import Annotation, Assignment, CampaignItem, Rationale, User
from annotation_db.revisions import newest_only
from annotation_db.rubric import CLAIM_DIMENSION, CLAIM_VERDICTS, FLAGS, SCALE, SCALE_DIMENSIONS

CSV_COLUMNS = ("rater", "item", "dimension", "score")


class RatingsError(UserError):
    """Ratings that cannot be read; the message lists every problem."""


def default_dimensions(names: set[str]) -> list[DimensionSpec]:
    """Ordinal 1–5 for the rubric scales, nominal 0/1 for flags, nominal over the five
    claim verdicts, ordinal otherwise."""
    specs = []
    for name in sorted(names, key=lambda n: (n not in SCALE_DIMENSIONS, n)):
        if name == CLAIM_DIMENSION:
            specs.append(DimensionSpec(name, "nominal",
                                       tuple(float(c) for c in range(len(CLAIM_VERDICTS)))))
        elif name in FLAGS or name.startswith("flag_"):
            specs.append(DimensionSpec(name, "nominal", (0, 1)))
        else:
            specs.append(DimensionSpec(name, "ordinal", SCALE))
    return specs


def load_ratings_csv(path: str | Path) -> list[Rating]:
    path = Path(path)
    problems: list[str] = []
    ratings: list[Rating] = []
    seen: dict[tuple[str, str, str], int] = {}
    try:
        header, rows = read_csv(path)
    except OSError as exc:
        raise RatingsError(f"cannot read {path}: {exc.strerror}") from exc
    except CsvFileError as exc:
        raise RatingsError(f"{path}: {exc}; nothing was read") from None
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise RatingsError(f"{path}: the header lacks {', '.join(missing)} "
                           f"(expected {','.join(CSV_COLUMNS)})")
    for line, row in rows:
        values = [(row.get(c) or "").strip() for c in CSV_COLUMNS]
        if not all(values[:3]):
            problems.append(f"line {line}: rater, item and dimension must not be empty")
            continue
        try:
            score = float(values[3])
        except ValueError:
            problems.append(f"line {line}: score {values[3]!r} is not a number")
            continue
        key = tuple(values[:3])
        if key in seen:
            problems.append(f"line {line}: {values[0]} rated {values[1]} on {values[2]} "
                            f"already on line {seen[key]}")
            continue
        seen[key] = line
        ratings.append(Rating(*values[:3], score))
    if len(problems) == 1:
        raise RatingsError(f"{path}: {problems[0]}; nothing was read")
    if problems:
        raise RatingsError(f"{path}: {len(problems)} problem(s); nothing was read\n  "
                           + "\n  ".join(problems[:200]))
    if not ratings:
        raise RatingsError(f"{path} holds no ratings")
    return ratings


def load_campaign_ratings(session: Session, campaign_name: str, *,
                          include_simulated: bool = False) -> tuple[list[Rating], set[str], dict]:
    """The newest revision of every submitted annotation of a campaign, as long ratings.

    Returns the ratings, the gold item ids and the campaign's design facts.
    """
    from annotation_db.campaigns import CampaignError, get_campaign

    try:
        campaign = get_campaign(session, campaign_name)
    except CampaignError as exc:
        raise RatingsError(str(exc)) from None
    query = (newest_only(select(User.username, Assignment.rationale_id, Annotation)
                         .join(Assignment, Assignment.user_id == User.id)
                         .join(Annotation, Annotation.assignment_id == Assignment.id))
             .where(Assignment.campaign_id == campaign.id, Assignment.status == "submitted"))
    if not include_simulated:
        query = query.where(Annotation.simulated.is_(False))
    ratings: list[Rating] = []
    for username, rationale_id, annotation in session.execute(query):
        item = str(rationale_id)
        ratings.append(Rating(username, item, "accuracy", float(annotation.accuracy)))
        ratings.append(Rating(username, item, "faithfulness", float(annotation.faithfulness)))
        for flag in FLAGS:
            ratings.append(Rating(username, item, flag, float(flag in annotation.flags)))
    from annotation_db.claim_review import campaign_verdicts, claim_summary, verdict_ratings

    verdicts = campaign_verdicts(session, campaign, include_simulated=include_simulated)
    ratings += verdict_ratings(verdicts)
    gold = {str(r) for r in session.execute(
        select(CampaignItem.rationale_id).join(Rationale, Rationale.id == CampaignItem.rationale_id)
        .where(CampaignItem.campaign_id == campaign.id,
               CampaignItem.is_gold | Rationale.is_gold)).scalars()}
    design = {"campaign": campaign.name, "ratings_per_item": campaign.ratings_per_item,
              "guidelines_version": campaign.guidelines_version,
              "blinding": "raters see no model, prompt or other raters' scores"
                          + ("; grounding results hidden" if campaign.blind_grounding else ""),
              "simulated_ratings": "included" if include_simulated else "excluded"}
    if verdicts:
        design["claim_review"] = _claims_line(claim_summary(verdicts))
    return ratings, gold, design


def _claims_line(summary: dict) -> str:
    """The claim-level figures that α does not give, in one line."""
    if not summary["claims_with_two_or_more"]:
        return f"{summary['claims']} claims judged, none by two raters yet"
    return (f"{summary['claims']} claims judged, {summary['claims_with_two_or_more']} by two "
            f"or more raters: unanimous verdict on {summary['unanimous_share']:.0%}; "
            "lines marked as should-have-cited agree at a mean pairwise Jaccard of "
            f"{summary['should_cite_jaccard']:.2f} (marked on "
            f"{summary['should_cite_marked_share']:.0%} of those claims)")
