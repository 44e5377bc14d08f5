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
from annotation_db.rubric import SCALE

GUIDELINES = Path(__file__).with_name("guidelines")
EVIDENCE = re.compile(r"\b(E[1-9][0-9]*)\b")


def load_guidelines(version: str = "1.0") -> dict:
    path = GUIDELINES / f"rubric-v{version}.yaml"
    if not path.is_file():
        path = sorted(GUIDELINES.glob("rubric-v*.yaml"))[-1]
    return yaml.safe_load(path.read_text())


def rubric_choices(guidelines: dict, dimension: str) -> list[tuple[str, int]]:
    anchors = guidelines["dimensions"][dimension]["anchors"]
    return [(f"{score} – {anchors[score]}", score) for score in SCALE]


def history_html(record: dict, cited: list[str]) -> str:
    """The chronological record; cited items are highlighted and anchored by their id.

    The list is one Tab stop (its first line); ↑/↓ move along the lines and Enter shows one
    (``KEYBOARD_JS``), so the record is readable without a mouse."""
    cited_set = set(cited)
    sex = {"F": "Female", "M": "Male"}[record["sex"]]
    lines = [f"<div class='ra-history'><p class='ra-head'>{sex} · index date "
             f"{html.escape(str(record['index_date']))}</p>"
             "<ol class='ra-items' aria-label='Patient record'>"]
    for number, item in enumerate(record["items"]):
        css = "ra-item ra-cited" if item["id"] in cited_set else "ra-item"
        tabindex = 0 if number == 0 else -1  # roving: the list is one Tab stop
        date = html.escape(str(item["date"])) + " · " if item.get("date") else ""
        code = (f" <span class='ra-code'>({html.escape(item['code'])})</span>"
                if item.get("code") and item.get("code_system") in ("ICD-10", "ATC") else "")
        lines.append(
            f"<li id='ev-{html.escape(item['id'])}' class='{css}' tabindex='{tabindex}' "
            f"data-evidence="
            f"'{html.escape(item['id'])}'><b>[{html.escape(item['id'])}]</b> {date}"
            f"{KIND_LABEL[item['kind']]} · {html.escape(item['description'])}{code}</li>")
    lines.append("</ol></div>")
    return "".join(lines)


def rationale_html(text: str, steps: list[dict] | None, known_ids: set[str]) -> str:
    """The rationale, escaped, with each evidence id turned into a link to its item."""
    if steps:
        body = "<ol>" + "".join(
            f"<li>{_linked(s['step'], known_ids)}"
            + (f" <small>[{', '.join(_linked(e, known_ids) for e in s['evidence'])}]"
               "</small>" if s.get("evidence") else "") + "</li>" for s in steps) + "</ol>"
    else:
        body = f"<p>{_linked(text, known_ids).replace(chr(10), '<br>')}</p>"
    return f"<div class='ra-rationale'>{body}</div>"


def _linked(text: str, known_ids: set[str]) -> str:
    """``text`` escaped, each evidence id in it a link to its record line."""
    def link(match: re.Match) -> str:
        evidence_id = match.group(1)
        if evidence_id not in known_ids:
            return f"<span class='ra-missing' title='not in the record'>{evidence_id}</span>"
        return (f"<a href='#ev-{evidence_id}' class='ra-ref' data-evidence='{evidence_id}'>"
                f"{evidence_id}</a>")
    return EVIDENCE.sub(link, html.escape(text))


def claims_html(claims: list, known_ids: set[str], verdicts: dict, verdict_names: dict,
                unattributed: list[str]) -> str:
    """Claim review: each claim in order as a group of five verdicts (keys 1–5 on the
    highlighted claim) with the lines it cites and a box for the lines it should have
    cited; ``verdicts`` (claim id → {"verdict", "should_cite"}) fills them in."""
    if not claims:
        return ("<div class='ra-claims'><p>This rationale has no statements to judge one "
                "by one: give the two scores below.</p></div>")
    parts = ["<div class='ra-claims'><p id='claims_help' class='ra-claims-help'>Give each "
             "claim a verdict: keys <kbd>1</kbd>–<kbd>5</kbd> answer the highlighted claim. "
             "Its cited lines are outlined in the record. To mark a line it should have "
             "cited, press <kbd>m</kbd> on that line in the record, or type its id.</p>"]
    for claim in claims:
        given = verdicts.get(claim.id) or verdicts.get(str(claim.id)) or {}
        cid = claim.id
        cites = [e for e in claim.cited_ids if e in known_ids]
        options = "".join(
            f"<label class='ra-verdict'><input type='radio' name='verdict-{cid}' "
            f"value='{name}' data-key='{key}'{' checked' if given.get('verdict') == name else ''}"
            f"> <kbd aria-hidden='true'>{key}</kbd> {html.escape(words)}</label>"
            for key, (name, words) in enumerate(verdict_names.items(), start=1))
        cited_line = (", ".join(_linked(e, known_ids) for e in claim.cited_ids)
                      if claim.cited_ids else "nothing")
        marked = " ".join(given.get("should_cite") or [])
        parts.append(
            f"<div class='ra-claim' id='claim-{cid}' data-claim='{cid}' "
            f"data-cites='{html.escape(' '.join(cites))}' role='radiogroup' "
            f"aria-labelledby='claim-{cid}-text' aria-describedby='claims_help'>"
            f"<p id='claim-{cid}-text' class='ra-claim-text'><b>Claim {claim.position} of "
            f"{len(claims)}:</b> {_linked(claim.text, known_ids)}</p>"
            f"<div class='ra-verdicts'>{options}</div>"
            f"<p class='ra-claim-citing'>Cites: {cited_line}</p>"
            f"<label class='ra-should'>Should have cited (ids) "
            f"<input type='text' class='ra-should-input' data-claim='{cid}' "
            f"value='{html.escape(marked)}' autocomplete='off' spellcheck='false'></label>"
            "</div>")
    if unattributed:
        parts.append("<p class='ra-claims-rest'>Listed as evidence for the rationale as a "
                     "whole (no claim cites it): "
                     + ", ".join(_linked(e, known_ids) for e in unattributed) + "</p>")
    parts.append("</div>")
    return "".join(parts)


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


# Contrast (WCAG 1.4.3, ≥ 4.5:1). Gradio's defaults are too faint: info text such as the
# dimension questions #bbbbc2 on white (1.9:1), labels #71717a (4.4:1 on the highlighted
# dimension), the orange of the selected tab (2.8:1), white on the orange primary buttons
# (2.8:1) and on the red stop buttons (3.8:1). These reach 7.7:1, 7.2:1, 5.2:1, 5.2:1 and
# 6.5:1. CodeMirror's syntax colours (down to
# 2:1) give way to the text colour.
# Focus (2.4.7, 1.4.11): a 3 px ring (7.7:1 on white) on whatever holds keyboard focus.
CSS = """
.gradio-container{--color-accent:#c2410c;
  --body-text-color-subdued:#52525b;--block-info-text-color:#52525b;
  --block-title-text-color:#52525b;--block-label-text-color:#52525b;
  --button-primary-background-fill:#c2410c;--button-primary-background-fill-hover:#9a3412;
  --button-primary-border-color:#c2410c;--button-primary-border-color-hover:#9a3412;
  --button-primary-text-color:#fff;--button-primary-text-color-hover:#fff;
  --button-cancel-background-fill:#b91c1c;--button-cancel-background-fill-hover:#991b1b;
  --button-cancel-border-color:#b91c1c;--button-cancel-text-color:#fff}
.dark .gradio-container,.gradio-container.dark{--body-text-color-subdued:#d4d4d8;
  --block-info-text-color:#d4d4d8;--block-title-text-color:#e4e4e7;
  --block-label-text-color:#e4e4e7}
.gradio-container .cm-editor .cm-content span{color:var(--body-text-color) !important}
.gradio-container :is(a,button,input,textarea,select,summary,[tabindex]):focus-visible,
.ra-help :focus-visible{outline:3px solid #1864ab !important;outline-offset:2px !important}
.gradio-container label:has(> input[type=radio]:focus-visible){box-shadow:0 0 0 3px #1864ab}
#accuracy_radio .info-text,#faithfulness_radio .info-text{color:var(--body-text-color);
  font-size:.95rem}
.ra-items{list-style:none;padding-left:0;max-height:32em;overflow-y:auto;font-size:.92em}
.ra-item{padding:2px 6px;border-radius:4px}
.ra-cited{background:#fff3bf;color:#1f2937;border-left:4px solid #f08c00}
.ra-item.ra-focus{outline:2px solid #1864ab}
.ra-ref{font-weight:600;color:#1864ab;cursor:pointer}
.dark .ra-ref{color:#74c0fc}
.ra-missing{color:#c92a2a;text-decoration:line-through}
.ra-claims{display:flex;flex-direction:column;gap:.5rem}
.ra-claims-help,.ra-claims-rest{margin:0;font-size:.92em}
.ra-claim{border:1px solid #868e96;border-radius:6px;padding:.45rem .6rem}
.ra-claim-text{margin:0 0 .3rem}
.ra-verdicts{display:flex;flex-wrap:wrap;gap:.15rem .9rem}
.ra-verdict{display:inline-flex;gap:.3rem;align-items:center;cursor:pointer}
.ra-claims kbd{border:1px solid #868e96;border-radius:3px;padding:0 .3em;font-family:inherit;
  font-size:.85em}
.ra-claim-citing{margin:.25rem 0 0;font-size:.9em}
.ra-should{display:flex;gap:.4rem;align-items:center;font-size:.9em;margin-top:.25rem}
.ra-should-input{flex:1;min-width:6rem;border:1px solid #868e96;border-radius:4px;
  padding:.1rem .35rem;background:transparent;color:inherit}
.ra-item.ra-claim-cites{box-shadow:inset 4px 0 0 #1864ab;background:#e7f0fa;color:#1f2937}
.ra-item.ra-claim-marked{outline:2px dashed #7048e8;outline-offset:-2px}
.ra-item.ra-claim-marked::after{content:" · marked: should have cited";font-weight:600;
  color:#5f3dc4}
.ra-sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);
  white-space:nowrap}
.ra-dim-focus{outline:3px solid #1864ab !important;outline-offset:-3px !important;
  background:#eef5fc !important}
.dark .ra-dim-focus{background:#132a40 !important}
.ra-help{position:fixed;inset:0;z-index:1000;background:rgba(0,0,0,.45);display:flex;
  align-items:center;justify-content:center}
.ra-help[hidden]{display:none}
.ra-help-box{background:#fff;color:#1f2937;border-radius:8px;padding:1.2em 1.6em;
  max-width:40em;max-height:90vh;overflow:auto;font-size:15px;line-height:1.45}
.ra-help-box h2{margin:0 0 .6em;font-size:1.25em}
.ra-help-box dl{display:grid;grid-template-columns:max-content 1fr;gap:.35em 1.2em;margin:0}
.ra-help-box dt{font-weight:600;white-space:nowrap}
.ra-help-box dd{margin:0}
.ra-help-box kbd{border:1px solid #868e96;border-radius:3px;padding:0 .3em;background:#f1f3f5;
  font-family:inherit}
.ra-help-box button{margin-top:1em;padding:.4em 1em;border:1px solid #495057;border-radius:4px;
  background:#fff;color:#1f2937;cursor:pointer}
"""

# The ``elem_classes`` of the parts of the item under review where keyboard shortcuts act.
KEYS = ["ra-keys"]

# Keyboard-first annotation that cannot misfire. Shortcuts act only when focus is on nothing
# or in the item under review (the record, the rationale and the rating area, marked with the
# class ``ra-keys``) and never while typing. The questions are, in order, each claim (claim
# review) and then the two scales:
#   1–5  answer the question holding focus (else the highlighted one): a claim's verdict or
#        a score; focus and highlight then move to the next question, scrolled into view
#   ↑/↓, j/k  previous / next question (Tab too: each is one radio group, one Tab stop;
#        ←/→ change the answer within it)
#   r  go to the record (the highlighted claim's first cited line); Esc comes back
#   m  on a record line: mark it as a line the highlighted claim should have cited (again:
#        unmark); the claim's cited lines are outlined in the record while it is highlighted
#        or hovered, and the first is scrolled into view in the record
#   Enter  submits only when focus is on nothing, a score or a flag; on a button, link or
#        record line Enter activates that element only
#   s  skip (asks for a reason first; Enter in the reason box skips)   p  previous item
#   u  undo the last submit or skip (while its notice shows)   ?  this list   Esc  leave a
#        text box / close the list
# In the record, ↑/↓ (Home/End) move along the lines and Enter shows one; a citation in the
# rationale moves focus to its line. Gradio's radios are made one labelled radio group each
# (role radiogroup, named by the scale, described by its question).
KEYBOARD_JS = """
<script>
(() => {
  const SCALES = ["accuracy_radio", "faithfulness_radio"];
  const HELP = [
    ["1 – 5", "answer the highlighted question (a claim's verdict, or a score); the next " +
     "one is highlighted"],
    ["↑ ↓ or j k", "previous / next question (Tab also moves between them)"],
    ["← →", "change the answer within the question that has focus"],
    ["r", "go to the record: the highlighted claim's first cited line (Esc comes back)"],
    ["m in the record", "mark the line as one the highlighted claim should have cited " +
     "(again: unmark)"],
    ["Enter", "submit the item (on a button, link or record line: press that one only)"],
    ["s", "skip the item: type a reason, then Enter"],
    ["p", "previous item: reopen your last submitted item to revise it"],
    ["u", "undo the last submit or skip (while its notice shows)"],
    ["↑ ↓ in the record", "move along the record lines; Enter shows one"],
    ["Esc", "leave a text box; close this list"],
    ["?", "show this list"]];
  let active = 0, lastItem = null, helpFrom = null, scheduled = false, groups = 0;
  const el = (id) => document.getElementById(id);
  const shown = (e) => !!e && e.getClientRects().length > 0;
  // the questions in order: each claim under review, then the two scales
  const dims = () => [...document.querySelectorAll("#claims_view .ra-claim"),
                      ...SCALES.map(el)].filter(shown);
  const dimOf = (t) => dims().findIndex((d) => !!(t && d.contains(t)));
  const radio = (g, key) => g && g.querySelector(!key ? "input[type=radio]:checked"
    : g.dataset.claim ? `input[type=radio][data-key="${key}"]`
    : `input[type=radio][value="${key}"]`);
  function typing(t) {
    if (!t) return false;
    if (t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable) return true;
    return t.tagName === "INPUT" && !["radio", "checkbox"].includes(t.type);
  }
  // Focus on nothing, or in the item under review: the only places shortcuts act.
  function inItem(t) {
    return !t || t === document.body || t === document.documentElement ||
      !!(t.closest && t.closest(".ra-keys"));
  }
  function mark() {
    const all = dims();
    all.forEach((d, i) => d.classList.toggle("ra-dim-focus", i === active));
    outline(all[active] && all[active].dataset.claim ? all[active] : null, false);
  }
  function focusDim(i) {
    const all = dims();
    active = Math.max(0, Math.min(i, all.length - 1));
    mark();
    const g = all[active];
    if (!g) return;
    const r = radio(g) || g.querySelector("input[type=radio]");
    if (r) r.focus({preventScroll: true});
    g.scrollIntoView({block: "nearest"});
  }
  function score(value, t) {
    const all = dims();
    const i = dimOf(t) >= 0 ? dimOf(t) : active;
    const input = radio(all[i], value);
    if (!input) return;
    input.click();
    focusDim(i + 1);
    const submit = el("submit_btn");
    if (i === all.length - 1 && submit) submit.scrollIntoView({block: "nearest"});
  }
  // Claim review. The claim whose lines the record shows: the hovered one, else the
  // highlighted one; its cited lines are outlined, its marked ones dashed.
  let hovered = null;
  function outline(claim, scroll) {
    // the hovered claim's lines, except while marking lines in the record (m acts on the
    // highlighted claim, so the record shows that one)
    const f = document.activeElement;
    const marking = !!(f && f.closest && f.closest("#history_view"));
    const shownClaim = hovered && hovered.isConnected && !marking ? hovered : claim;
    const cites = new Set((shownClaim ? shownClaim.dataset.cites : "").split(" ").filter(Boolean));
    const marked = new Set(shownClaim ? should(shownClaim) : []);
    document.querySelectorAll("#history_view li.ra-item").forEach((line) => {
      const id = line.dataset.evidence;
      line.classList.toggle("ra-claim-cites", cites.has(id));
      line.classList.toggle("ra-claim-marked", marked.has(id));
    });
    if (!scroll || !shownClaim) return;
    const first = [...document.querySelectorAll("#history_view li.ra-item")]
      .find((line) => cites.has(line.dataset.evidence));
    const list = first && first.closest("ol");
    if (!first || !list) return;
    const top = first.offsetTop - list.offsetTop;  // scroll the record only, not the page
    if (top < list.scrollTop || top + first.offsetHeight > list.scrollTop + list.clientHeight)
      list.scrollTop = Math.max(0, top - 8);
  }
  function should(claim) {
    const box = claim.querySelector(".ra-should-input");
    return box ? box.value.toUpperCase().match(/E[1-9][0-9]*/g) || [] : [];
  }
  // the panel's answers, as the hidden box the server reads (a change there saves a draft)
  function syncClaims() {
    const box = document.querySelector("#claim_verdicts_box textarea, #claim_verdicts_box input");
    if (!box) return;
    const given = {};
    document.querySelectorAll("#claims_view .ra-claim").forEach((claim) => {
      const r = claim.querySelector("input[type=radio]:checked");
      const marks = [...new Set(should(claim))];
      if (r || marks.length) given[claim.dataset.claim] = {verdict: r ? r.value : null,
                                                           should_cite: marks};
    });
    const value = JSON.stringify(given);
    if (box.value === value) return;
    const proto = box.tagName === "TEXTAREA" ? HTMLTextAreaElement : HTMLInputElement;
    Object.getOwnPropertyDescriptor(proto.prototype, "value").set.call(box, value);
    box.dispatchEvent(new Event("input", {bubbles: true}));
  }
  function say(words) {
    const live = el("ra_live");
    if (live) live.textContent = words;
  }
  function toRecord() {
    const claim = dims()[active];
    const cites = claim && claim.dataset.claim ? claim.dataset.cites.split(" ") : [];
    const lines = [...document.querySelectorAll("#history_view li.ra-item")];
    const line = lines.find((l) => cites.includes(l.dataset.evidence))
      || lines.find((l) => l.getAttribute("tabindex") === "0") || lines[0];
    if (!line) return;
    rove(line);
    line.focus();
  }
  function toggleMark(line) {
    const claim = dims()[active];
    if (!claim || !claim.dataset.claim) {
      say("No claim is highlighted: highlight one (↑/↓, or Esc then ↑), then press m " +
          "on a line");
      return;
    }
    const box = claim.querySelector(".ra-should-input");
    const id = line.dataset.evidence;
    const marks = should(claim);
    box.value = (marks.includes(id) ? marks.filter((m) => m !== id) : [...marks, id]).join(" ");
    box.dispatchEvent(new Event("input", {bubbles: true}));
    const state = marks.includes(id) ? "unmarked" : "marked";
    say(`${id} ${state} for claim ` +
        `${[...document.querySelectorAll("#claims_view .ra-claim")].indexOf(claim) + 1}`);
  }
  function press(id) {
    const b = el(id);
    if (b && shown(b) && !b.disabled) b.click();
  }
  function rove(line) {
    const list = line.closest("ol");
    if (list) list.querySelectorAll("li[tabindex='0']")
      .forEach((n) => n.setAttribute("tabindex", "-1"));
    line.setAttribute("tabindex", "0");
  }
  function showEvidence(id, from) {
    const scope = (from.closest && from.closest(".tabitem, [role=tabpanel]")) || document;
    scope.querySelectorAll(".ra-item.ra-focus").forEach((n) => n.classList.remove("ra-focus"));
    const line = scope.querySelector("#ev-" + CSS.escape(id));
    if (line) {
      line.classList.add("ra-focus");
      rove(line);
      line.focus({preventScroll: true});
      line.scrollIntoView({block: "nearest"});
    }
    const box = scope.querySelector("#evidence_box textarea, #evidence_box input");
    if (!box) return;
    box.value = id;
    box.dispatchEvent(new Event("input", {bubbles: true}));
    press("show_evidence_btn");
  }
  function help() {
    let d = el("ra_help");
    if (d) return d;
    d = document.createElement("div");
    d.id = "ra_help"; d.className = "ra-help"; d.hidden = true;
    d.setAttribute("role", "dialog"); d.setAttribute("aria-modal", "true");
    d.setAttribute("aria-labelledby", "ra_help_title");
    d.innerHTML = "<div class='ra-help-box'><h2 id='ra_help_title'>Keyboard shortcuts</h2><dl>" +
      HELP.map(([k, v]) => `<dt><kbd>${k}</kbd></dt><dd>${v}</dd>`).join("") +
      "</dl><p>Keys act when nothing has focus or focus is in the item (record, rationale, " +
      "scores); never while you type.</p><button type='button' id='ra_help_close'>Close (Esc)" +
      "</button></div>";
    d.addEventListener("click", (e) => {
      if (e.target === d || e.target.id === "ra_help_close") closeHelp();
    });
    document.body.appendChild(d);
    return d;
  }
  const helpOpen = () => !!el("ra_help") && !el("ra_help").hidden;
  function openHelp() {
    helpFrom = document.activeElement;
    help().hidden = false;
    el("ra_help_close").focus();
  }
  function closeHelp() {
    if (!helpOpen()) return;
    el("ra_help").hidden = true;
    if (helpFrom && helpFrom !== document.body && document.contains(helpFrom)) helpFrom.focus();
    else document.activeElement.blur();
    helpFrom = null;
  }
  // Gradio gives every radio its own name (so each is a Tab stop) and the scale no group
  // role or name: make each Radio one radio group, labelled by its title, described by its
  // question. Gradio's empty-value placeholders carry an aria-label without a role.
  function enhance() {
    document.querySelectorAll("fieldset").forEach((f) => {
      const radios = f.querySelectorAll("input[type=radio]");
      if (!radios.length) return;
      if (!f.dataset.raGroup) f.dataset.raGroup = f.id || "ra-group-" + ++groups;
      const name = f.dataset.raGroup;
      radios.forEach((r) => { if (r.name !== name) r.name = name; });
      f.setAttribute("role", "radiogroup");
      const label = f.querySelector("[data-testid=block-info]");
      if (label) {
        label.id = label.id || name + "-label";
        f.setAttribute("aria-labelledby", label.id);
      }
      const info = f.querySelector(".info-text");
      if (info) {
        info.id = info.id || name + "-question";
        f.setAttribute("aria-describedby", info.id);
      }
    });
    document.querySelectorAll("div.empty[aria-label]:not([role])")
      .forEach((d) => d.setAttribute("role", "img"));
    if (!el("ra_live")) {  // what a key did that shows nowhere else, for screen readers
      const live = document.createElement("div");
      live.id = "ra_live"; live.className = "ra-sr";
      live.setAttribute("role", "status");
      document.body.appendChild(live);
    }
  }
  function refresh() {
    scheduled = false;
    enhance();
    const number = document.querySelector("#item_number input");
    const item = number ? number.value : null;
    if (item !== lastItem) {  // a new item: its first dimension is the active one
      const first = lastItem === null;
      lastItem = item;
      active = 0;
      hovered = null;
      const f = document.activeElement;
      if (!first && f && f !== document.body && inItem(f) &&
          !f.closest("#history_view, #rationale_view")) focusDim(0);
    }
    mark();
  }
  document.addEventListener("click", (e) => {
    const ref = e.target.closest && e.target.closest("[data-evidence]");
    if (!ref) return;
    if (ref.tagName === "A") e.preventDefault();
    showEvidence(ref.getAttribute("data-evidence"), ref);
  });
  document.addEventListener("focusin", (e) => {
    const i = dimOf(e.target);
    if (i < 0) return;
    const all = dims();
    if (i !== active) {
      active = i; mark();
      if (all[i].dataset.claim) outline(all[i], true);
    }
    // scrolled only under keyboard focus: moving the page under a mouse click loses the click
    if (e.target.matches(":focus-visible")) all[i].scrollIntoView({block: "nearest"});
  });
  document.addEventListener("mouseover", (e) => {
    const claim = e.target.closest && e.target.closest("#claims_view .ra-claim");
    if (claim === hovered) return;
    hovered = claim;
    const all = dims();
    outline(all[active] && all[active].dataset.claim ? all[active] : null, !!claim);
  });
  document.addEventListener("change", (e) => {
    if (e.target.closest && e.target.closest("#claims_view")) syncClaims();
  }, true);
  document.addEventListener("input", (e) => {
    if (e.target.closest && e.target.closest("#claims_view")) { syncClaims(); mark(); }
  }, true);
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (helpOpen()) {  // modal: Esc closes, Tab stays on Close, nothing reaches the item
      if (e.key === "Escape") { closeHelp(); e.preventDefault(); }
      else if (e.key === "Tab") { el("ra_help_close").focus(); e.preventDefault(); }
      else if (!(t.id === "ra_help_close" && ["Enter", " "].includes(e.key))) e.preventDefault();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey || !inItem(t)) return;
    if (typing(t)) {
      if (e.key === "Enter" && !e.shiftKey && t.closest("#skip_reason")) {
        e.preventDefault(); press("skip_btn");
      } else if (e.key === "Escape") { e.preventDefault(); focusDim(active); }
      return;
    }
    if (t.matches && t.matches("li.ra-item")) {  // moving along the record
      const lines = [...t.parentElement.querySelectorAll("li.ra-item")];
      const at = lines.indexOf(t);
      const to = {ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: lines.length - 1}[e.key];
      if (to !== undefined) {
        const line = lines[Math.max(0, Math.min(to, lines.length - 1))];
        rove(line); line.focus(); e.preventDefault(); return;
      }
      if (e.key === "Enter" || e.key === " ") {
        showEvidence(t.getAttribute("data-evidence"), t); e.preventDefault(); return;
      }
      if (e.key === "m") { toggleMark(t); e.preventDefault(); return; }
      if (e.key === "Escape") { focusDim(active); e.preventDefault(); return; }
    }
    if (e.key >= "1" && e.key <= "5") { score(e.key, t); e.preventDefault(); }
    else if (e.key === "ArrowDown" || e.key === "j") { focusDim(active + 1); e.preventDefault(); }
    else if (e.key === "ArrowUp" || e.key === "k") { focusDim(active - 1); e.preventDefault(); }
    else if (e.key === "Enter") {
      const onNothing = t === document.body || t === document.documentElement;
      if (onNothing || (t.matches && t.matches("input[type=radio], input[type=checkbox]"))) {
        press("submit_btn"); e.preventDefault();
      }  // anywhere else Enter is the focused element's own
    } else if (e.key === "s") {
      const reason = document.querySelector("#skip_reason textarea, #skip_reason input");
      if (reason && !reason.value.trim()) reason.focus();
      else press("skip_btn");
      e.preventDefault();
    } else if (e.key === "p") { press("previous_btn"); e.preventDefault(); }
    else if (e.key === "u") { press("undo_btn"); e.preventDefault(); }
    else if (e.key === "r") { toRecord(); e.preventDefault(); }
    else if (e.key === "?") { openHelp(); e.preventDefault(); }
  });
  new MutationObserver(() => {
    if (!scheduled) { scheduled = true; requestAnimationFrame(refresh); }
  }).observe(document.documentElement, {childList: true, subtree: true});
})();
</script>
"""
