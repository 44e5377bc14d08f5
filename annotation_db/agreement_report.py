"""Render an agreement report (from annotation_db.agreement) as JSON, Markdown or HTML.

The HTML embeds matplotlib figures: rating histograms per rater, the pairwise kappa heatmap,
and alpha with its CI per dimension against the 0.667 and 0.800 bands.
"""

import base64
import html
import io
import json

BAND_TEXT = ("Krippendorff's conventional bands: α ≥ 0.800 reliable; 0.667–0.800 tentative "
             "conclusions only; below 0.667 unreliable. They are conventions, not laws.")


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _stat(result: dict, key: str = "value") -> str:
    if not result.get("computable", True):
        return f"not computable: {result['reason']}"
    return _num(result.get(key))


def _alpha_line(result: dict) -> str:
    if not result.get("computable"):
        return f"not computable: {result['reason']}"
    ci = result.get("ci95")
    ci_text = f" (95% CI {_num(ci[0])}–{_num(ci[1])})" if ci else ""
    probs = (f"; P(α<0.667) = {_num(result['p_below_0667'])}, P(α<0.800) = "
             f"{_num(result['p_below_0800'])}" if "p_below_0667" in result else "")
    return f"{_num(result['alpha'])}{ci_text}{probs} — {result['verdict']}"


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


def to_markdown(report: dict, title: str) -> str:
    design = report["design"]
    lines = [f"# {title}", "", "## Design", ""]
    lines += [f"- **{key.replace('_', ' ')}**: {value}" for key, value in design.items()]
    lines += ["", BAND_TEXT, ""]
    for section in report["dimensions"]:
        lines += [f"## {section['dimension']}", ""]
        if not section.get("computable", True):
            lines += [f"Not computable: {section['reason']}", ""]
            continue
        lines += [
            f"- raters {section['raters']}, items {section['items']}, ratings "
            f"{section['ratings']}, items rated at least twice "
            f"{section['items_with_two_or_more']}",
            f"- Krippendorff's α ({section['level']}): {_alpha_line(section['alpha'])}",
        ]
        if "alpha_interval" in section:
            lines.append(f"- α (interval, sensitivity): {_alpha_line(section['alpha_interval'])}")
        agreement = section["agreement"]
        if agreement.get("computable"):
            lines.append(f"- exact agreement {_num(agreement['percent_exact'])}, within one "
                         f"{_num(agreement['percent_within_one'])} ({agreement['pairs']} pairs)")
        lines.append(f"- Gwet's AC1: {_stat(section['ac1'])}")
        if "ac2" in section:
            lines.append(f"- Gwet's AC2 (ordinal weights): {_stat(section['ac2'])}")
        lines += ["", "| rater | ratings | mean | leniency | distribution |",
                  "| --- | --- | --- | --- | --- |"]
        for rater in section["raters_profile"]:
            dist = " ".join(f"{k}:{v}" for k, v in rater["distribution"].items())
            lines.append(f"| {rater['rater']} | {rater['ratings']} | {_num(rater['mean'])} | "
                         f"{_num(rater['leniency'])} | {dist} |")
        lines += ["", "| rater pair | overlap | weighted κ |", "| --- | --- | --- |"]
        for pair in section["pairwise_kappa"]:
            kappa = _num(pair["kappa"]) if pair.get("computable") else pair["reason"]
            lines.append(f"| {pair['rater_a']} – {pair['rater_b']} | {pair['overlap']} | "
                         f"{kappa} |")
        if section["most_disagreed"]:
            lines += ["", "Most disagreed items (the adjudication queue):", ""]
            lines += [f"- {row['item']}: ratings {row['ratings']} (range {row['range']:g})"
                      for row in section["most_disagreed"][:10]]
        lines.append("")
    if report["gold_accuracy"]:
        lines += ["## Gold-item accuracy", "", "| rater | gold rated | caught | accuracy |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {g['rater']} | {g['gold_rated']} | {g['caught']} | {_num(g['accuracy'])} |"
                  for g in report["gold_accuracy"]]
        lines.append("")
    repro = report["reproducibility"]
    lines += ["## Reproducibility", "", f"- data snapshot sha256 `{repro['data_sha256']}`",
              f"- bootstrap: {repro['bootstrap_replicates']} unit resamples, seed "
              f"{repro['bootstrap_seed']}", f"- code version {repro['code_version']}",
              "- libraries: " + ", ".join(f"{k} {v}" for k, v in repro["libraries"].items()), ""]
    return "\n".join(lines)


def _figure_png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def figures(report: dict) -> dict[str, str]:
    """Base64 PNGs: histograms per rater, kappa heatmaps, and alpha with CI by dimension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out: dict[str, str] = {}
    sections = [s for s in report["dimensions"] if s.get("computable", True)]
    for section in sections:
        profiles = section["raters_profile"]
        fig, axes = plt.subplots(1, len(profiles), figsize=(2.2 * len(profiles), 2.2),
                                 sharey=True, squeeze=False)
        for ax, rater in zip(axes[0], profiles, strict=True):
            ax.bar(list(rater["distribution"]), list(rater["distribution"].values()),
                   color="#4c72b0")
            ax.set_title(rater["rater"], fontsize=9)
        fig.suptitle(f"{section['dimension']}: ratings per rater", fontsize=10)
        out[f"hist_{section['dimension']}"] = _figure_png(fig)
        raters = [p["rater"] for p in profiles]
        grid = np.full((len(raters), len(raters)), np.nan)
        for pair in section["pairwise_kappa"]:
            if pair.get("computable"):
                a, b = raters.index(pair["rater_a"]), raters.index(pair["rater_b"])
                grid[a, b] = grid[b, a] = pair["kappa"]
        fig, ax = plt.subplots(figsize=(1 + 0.6 * len(raters), 0.8 + 0.6 * len(raters)))
        image = ax.imshow(grid, vmin=-0.2, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(raters)), raters, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(raters)), raters, fontsize=8)
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value < 0.6 else "black")
        fig.colorbar(image, ax=ax, fraction=0.046)
        ax.set_title(f"{section['dimension']}: pairwise weighted κ", fontsize=10)
        out[f"kappa_{section['dimension']}"] = _figure_png(fig)
    rows = [(s["dimension"], s["alpha"]) for s in sections if s["alpha"].get("computable")]
    if rows:
        fig, ax = plt.subplots(figsize=(6, 0.6 + 0.5 * len(rows)))
        ax.axvspan(-1, 0.667, color="#f4cccc")
        ax.axvspan(0.667, 0.8, color="#fff2cc")
        ax.axvspan(0.8, 1, color="#d9ead3")
        for y, (_name, result) in enumerate(rows):
            ci = result.get("ci95", [result["alpha"], result["alpha"]])
            ax.errorbar(result["alpha"], y, xerr=[[result["alpha"] - ci[0]],
                                                  [ci[1] - result["alpha"]]], fmt="o",
                        color="black", capsize=3)
        ax.set_yticks(range(len(rows)), [name for name, _ in rows])
        ax.set_xlim(min(-0.1, min(r["ci95"][0] for _, r in rows if "ci95" in r) - 0.05), 1)
        ax.set_xlabel("Krippendorff's α with 95% bootstrap CI")
        out["alpha"] = _figure_png(fig)
    return out


def to_html(report: dict, title: str) -> str:
    import markdown_it

    body = markdown_it.MarkdownIt("commonmark").enable("table").render(
        to_markdown(report, title))
    images = "".join(
        f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{png}'></figure>"
        for name, png in figures(report).items())
    style = ("body{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em}"
             "figure{display:inline-block;margin:.5em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>{body}<h2>Figures</h2>{images}"
            "</body></html>\n")
