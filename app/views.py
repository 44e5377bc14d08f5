"""What the annotator sees, as escaped HTML: the history with cited items highlighted, and the
rationale with its evidence ids as links to those items.

Everything that comes from a model or a person (rationale text, descriptions, comments) is
passed through ``html.escape``; nothing they contain can become markup or script.
"""

import html
import re
from pathlib import Path

import yaml

from annotation_db.records import KIND_LABEL

GUIDELINES = Path(__file__).with_name("guidelines")
EVIDENCE = re.compile(r"\b(E[1-9][0-9]*)\b")


def load_guidelines(version: str = "1.0") -> dict:
    path = GUIDELINES / f"rubric-v{version}.yaml"
    if not path.is_file():
        path = sorted(GUIDELINES.glob("rubric-v*.yaml"))[-1]
    return yaml.safe_load(path.read_text())


def rubric_choices(guidelines: dict, dimension: str) -> list[tuple[str, int]]:
    anchors = guidelines["dimensions"][dimension]["anchors"]
    return [(f"{score} – {anchors[score]}", score) for score in range(1, 6)]


def history_html(record: dict, cited: list[str]) -> str:
    """The chronological record; cited items are highlighted and anchored by their id."""
    cited_set = set(cited)
    sex = {"F": "Female", "M": "Male"}[record["sex"]]
    lines = [f"<div class='ra-history'><p class='ra-head'>{sex} · index date "
             f"{html.escape(str(record['index_date']))}</p><ol class='ra-items'>"]
    for item in record["items"]:
        css = "ra-item ra-cited" if item["id"] in cited_set else "ra-item"
        date = html.escape(str(item["date"])) + " · " if item.get("date") else ""
        code = (f" <span class='ra-code'>({html.escape(item['code'])})</span>"
                if item.get("code") and item.get("code_system") in ("ICD-10", "ATC") else "")
        lines.append(
            f"<li id='ev-{html.escape(item['id'])}' class='{css}' data-evidence="
            f"'{html.escape(item['id'])}'><b>[{html.escape(item['id'])}]</b> {date}"
            f"{KIND_LABEL[item['kind']]} · {html.escape(item['description'])}{code}</li>")
    lines.append("</ol></div>")
    return "".join(lines)


def rationale_html(text: str, steps: list[dict] | None, known_ids: set[str]) -> str:
    """The rationale, escaped, with each evidence id turned into a link to its item."""

    def link(match: re.Match) -> str:
        evidence_id = match.group(1)
        if evidence_id not in known_ids:
            return f"<span class='ra-missing' title='not in the record'>{evidence_id}</span>"
        return (f"<a href='#ev-{evidence_id}' class='ra-ref' data-evidence='{evidence_id}'>"
                f"{evidence_id}</a>")

    if steps:
        body = "<ol>" + "".join(
            f"<li>{EVIDENCE.sub(link, html.escape(s['step']))}"
            + (f" <small>[{', '.join(EVIDENCE.sub(link, html.escape(e)) for e in s['evidence'])}]"
               "</small>" if s.get("evidence") else "") + "</li>" for s in steps) + "</ol>"
    else:
        body = f"<p>{EVIDENCE.sub(link, html.escape(text)).replace(chr(10), '<br>')}</p>"
    return f"<div class='ra-rationale'>{body}</div>"


def evidence_line(record: dict, evidence_id: str) -> str:
    evidence_id = evidence_id.strip().strip("[]")
    for item in record["items"]:
        if item["id"] == evidence_id:
            date = f"{item['date']} · " if item.get("date") else ""
            return f"[{item['id']}] {date}{KIND_LABEL[item['kind']]} · {item['description']}"
    return f"{evidence_id} is not an item of this record"


def grounding_summary(grounding: dict | None) -> str:
    if not grounding or "checks" not in grounding:
        return "No automatic checks recorded."
    failed = [c for c in grounding["checks"] if not c["ok"]]
    if not failed:
        return f"Automatic checks: all {len(grounding['checks'])} passed."
    return "Automatic checks failed: " + "; ".join(
        html.escape(f"{c['kind']} {c['claim']} ({c['detail']})") for c in failed[:6])


CSS = """
.ra-items{list-style:none;padding-left:0;max-height:32em;overflow-y:auto;font-size:.92em}
.ra-item{padding:2px 6px;border-radius:4px}
.ra-cited{background:#fff3bf;border-left:4px solid #f08c00}
.ra-item.ra-focus{outline:2px solid #1c7ed6}
.ra-ref{font-weight:600;color:#1c7ed6;cursor:pointer}
.ra-missing{color:#c92a2a;text-decoration:line-through}
.ra-dim-focus{outline:3px solid #1c7ed6;border-radius:6px}
"""

# Keyboard: 1–5 score the focused dimension (then focus moves on), ↑/↓ or j/k move between
# dimensions, Enter submits, s skips (it first asks for a reason). Ignored while typing.
KEYBOARD_JS = """
<script>
(() => {
  const dims = ["accuracy_radio", "faithfulness_radio"];
  let focused = 0;
  const el = (id) => document.getElementById(id);
  function mark() {
    dims.forEach((d, i) => el(d) && el(d).classList.toggle("ra-dim-focus", i === focused));
  }
  function typing(t) {
    if (!t) return false;
    if (t.tagName === "TEXTAREA" || t.isContentEditable) return true;
    return t.tagName === "INPUT" && !["radio", "checkbox"].includes(t.type);
  }
  document.addEventListener("click", (e) => {
    const ref = e.target.closest && e.target.closest("[data-evidence]");
    if (!ref) return;
    const id = ref.getAttribute("data-evidence");
    document.querySelectorAll(".ra-item.ra-focus").forEach((n) => n.classList.remove("ra-focus"));
    const item = document.getElementById("ev-" + id);
    if (item) { item.classList.add("ra-focus"); item.scrollIntoView({block: "nearest"}); }
    const box = document.querySelector("#evidence_box textarea, #evidence_box input");
    if (box) { box.value = id; box.dispatchEvent(new Event("input", {bubbles: true})); }
    const btn = el("show_evidence_btn"); if (btn) btn.click();
  });
  document.addEventListener("keydown", (e) => {
    if (typing(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key >= "1" && e.key <= "5") {
      const radio = el(dims[focused]);
      const input = radio && radio.querySelector(`input[type=radio][value="${e.key}"]`);
      if (input) { input.click(); focused = Math.min(focused + 1, dims.length - 1); mark(); }
      e.preventDefault();
    } else if (e.key === "ArrowDown" || e.key === "j") {
      focused = Math.min(focused + 1, dims.length - 1); mark(); e.preventDefault();
    } else if (e.key === "ArrowUp" || e.key === "k") {
      focused = Math.max(focused - 1, 0); mark(); e.preventDefault();
    } else if (e.key === "Enter") {
      const b = el("submit_btn"); if (b) { b.click(); focused = 0; mark(); } e.preventDefault();
    } else if (e.key === "s") {
      const reason = document.querySelector("#skip_reason textarea, #skip_reason input");
      if (reason && !reason.value.trim()) { reason.focus(); }
      else { const b = el("skip_btn"); if (b) b.click(); }
      e.preventDefault();
    }
  });
  new MutationObserver(mark).observe(document.documentElement, {childList: true, subtree: true});
})();
</script>
"""
