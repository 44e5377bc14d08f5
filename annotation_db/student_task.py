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


TASKS = ("predict", "explain")  # the multitask target's input prefixes (``predict: …``)


def user_message(history: str, task: str | None = None) -> str:
    """The question every chat view (and every few-shot demonstration) asks.

    ``task`` (``predict`` or ``explain``) prefixes it for the multitask target, in the
    style of distilling step-by-step: one input, two outputs told apart by the prefix.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task prefix {task!r}; one of {', '.join(TASKS)}")
    return f"{task + ': ' if task else ''}{_RECORD_INTRO}{history}{_QUESTION}"


def split_user_message(message: str) -> tuple[str | None, str]:
    """(task prefix or None, history) of a :func:`user_message` (its inverse)."""
    task = next((t for t in TASKS if message.startswith(f"{t}: {_RECORD_INTRO}")), None)
    body = message[len(task) + 2:] if task else message
    if not (body.startswith(_RECORD_INTRO) and body.endswith(_QUESTION)):
        raise ValueError("not a user message of the student task")
    return task, body[len(_RECORD_INTRO):-len(_QUESTION)]


def history_of(message: str) -> str:
    """The history inside a :func:`user_message`."""
    return split_user_message(message)[1]


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


def with_task(messages: list[dict], task: str) -> list[dict]:
    """``messages`` with the last user turn asked as ``task`` (see :func:`user_message`)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    _, history = split_user_message(messages[last]["content"])
    return [*messages[:last], {**messages[last], "content": user_message(history, task)},
            *messages[last + 1:]]


def split_assistant_text(text: str) -> tuple[str | None, int]:
    """(rationale or None, label) of an :func:`assistant_text` that ends in the answer line."""
    body, _, last = text.rpartition("\n")
    for label, word in enumerate(ANSWER_WORDS):
        if last.strip() == f"{ANSWER_PREFIX} {word}":
            return (body.strip() or None), label
    raise ValueError("the assistant turn does not end in the answer line")


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
