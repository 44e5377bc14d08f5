"""The task the student model learns, defined once for export, SFT, scoring and few-shot.

A student sees a system turn and one user turn holding a patient's rendered history,
and answers with an assistant turn that ends in the answer line::

    system     You are a clinical prediction assistant. ...
    user       Patient record as of the index date:\\n<history>\\n\\nWill this patient ...
    assistant  [<rationale>\\n]Final answer: yes|no

Label-only rows teach the answer line alone; rationale rows teach the rationale then
the answer line; scoring reads P(" yes") against P(" no") right after
:data:`ANSWER_PREFIX`. Few-shot prompts repeat the same user/assistant pair per
demonstration. Everything that builds or reads these turns calls this module.
"""

SYSTEM = ("You are a clinical prediction assistant. Given a patient's record as of the index "
          "date, predict whether the patient will be diagnosed with Alzheimer's disease or a "
          "related dementia within five years.")
ANSWER_PREFIX = "Final answer:"
ANSWER_WORDS = ("no", "yes")  # indexed by the label: 0 → "no", 1 → "yes"

_RECORD_INTRO = "Patient record as of the index date:\n"
_QUESTION = "\n\nWill this patient be diagnosed with ADRD within five years? Answer yes or no."


def user_message(history: str) -> str:
    """The question every chat view (and every few-shot demonstration) asks."""
    return f"{_RECORD_INTRO}{history}{_QUESTION}"


def history_of(message: str) -> str:
    """The history inside a :func:`user_message` (the inverse of it)."""
    if not (message.startswith(_RECORD_INTRO) and message.endswith(_QUESTION)):
        raise ValueError("not a user message of the student task")
    return message[len(_RECORD_INTRO):-len(_QUESTION)]


def answer_line(label: int | bool) -> str:
    """``Final answer: yes`` for a positive label, ``Final answer: no`` otherwise."""
    return f"{ANSWER_PREFIX} {ANSWER_WORDS[int(bool(label))]}"


def assistant_text(label: int | bool, rationale: str | None = None) -> str:
    """The assistant turn taught: the answer line, after the rationale when there is one."""
    if rationale is None:
        return answer_line(label)
    return f"{rationale.strip()}\n{answer_line(label)}"


def prompt_messages(history: str) -> list[dict]:
    """The system and user turns of one patient."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": user_message(history)}]


def completion_messages(label: int | bool, rationale: str | None = None) -> list[dict]:
    """The assistant turn of one training row (TRL's prompt-completion ``completion``)."""
    return [{"role": "assistant", "content": assistant_text(label, rationale)}]


def fewshot_messages(query_prompt: list[dict], demonstrations: list[dict],
                     with_rationales: bool) -> list[dict]:
    """System turn, one user/assistant pair per demonstration, then the query's user turn.

    Each demonstration is a ``fewshot_pool`` row (``history``, ``label``, ``rationale``).
    """
    messages = [{"role": "system", "content": SYSTEM}]
    for demo in demonstrations:
        messages += [{"role": "user", "content": user_message(demo["history"])},
                     {"role": "assistant", "content": assistant_text(
                         demo["label"], demo["rationale"] if with_rationales else None)}]
    return messages + [m for m in query_prompt if m["role"] != "system"]
