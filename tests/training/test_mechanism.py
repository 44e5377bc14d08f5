"""Mechanism ablations: what each derived target teaches, the weighted loss, the scoring
variants and the report section, through the real trainer and scorers."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sqlmodel import Session

from annotation_db.export import get_version
from annotation_db.student_task import ANSWER_PREFIX, split_assistant_text
from generation.models import load_tokenizer
from tests.helpers import audited_version
from training.data import (
    IGNORE,
    read_view,
    target_rows_by_patient,
    tokenize_row,
    training_rows,
)
from training.loss import LossWeighting, answer_counts, weighted_loss
from training.scoring import stream_seeds
from training.targets import TARGETS, patient_of

END = "<|im_end|>\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("mechanism")
    return audited_version(f"sqlite:///{root / 'db.sqlite'}", root / "exports"), root


def _version(engine):
    with Session(engine) as session:
        return get_version(session, "t")


def _taught(tokenizer, row, loss_on="completion") -> tuple[str, dict]:
    tokens = tokenize_row(tokenizer, row, 4096, loss_on)
    text = tokenizer.decode([t for t, lab in zip(tokens["input_ids"], tokens["labels"],
                                                 strict=True) if lab != IGNORE])
    return text, tokens


def _answer_tokens(tokenizer, tokens) -> list[str]:
    weighting = LossWeighting.for_target(tokenizer, "none")
    ids = torch.tensor([tokens["input_ids"]])
    targets = torch.nn.functional.pad(torch.tensor([tokens["labels"]]), (0, 1),
                                      value=IGNORE)[:, 1:]
    mask = weighting.answer_mask(ids, targets)[0]
    return [tokenizer.decode([int(t)]) for t in targets[0][mask]]


def test_each_derived_target_teaches_what_it_says(study, bundled_model):
    """Every derived view decoded token by token: what carries loss, what is context."""
    engine, _ = study
    version = _version(engine)
    tokenizer = load_tokenizer(bundled_model.path)
    free = target_rows_by_patient(version, "rationale-free")
    label = target_rows_by_patient(version, "label")
    pid = sorted(free)[0]
    source = free[pid][0]
    rationale, y = split_assistant_text(source["completion"][0]["content"])
    answer = f"{ANSWER_PREFIX} {'yes' if y else 'no'}"
    n_rationale = len(tokenizer(rationale, add_special_tokens=False)["input_ids"])

    padded = target_rows_by_patient(version, "label-padded", tokenizer, "own")[pid]
    assert len(padded) == 1 and padded[0]["prompt"] == label[pid][0]["prompt"]
    text, tokens = _taught(tokenizer, padded[0])
    filler, _, tail = text.rpartition("\n" + answer)
    assert tail == END and set(filler) <= {".", " "}
    assert len(tokenizer(filler, add_special_tokens=False)["input_ids"]) == n_rationale
    assert _answer_tokens(tokenizer, tokens) == [" " + answer.split()[-1]]
    # by default every patient's filler has one length, the median rationale's, so the
    # length says nothing of the label (a patient's own length can: "no" ones run longer)
    lengths = [len(tokenizer(split_assistant_text(r[0]["completion"][0]["content"])[0],
                             add_special_tokens=False)["input_ids"]) for r in free.values()]
    median = target_rows_by_patient(version, "label-padded", tokenizer)
    assert {r[0]["filler_tokens"] for r in median.values()} == {round(np.median(lengths))}
    assert {r[0]["label"] for r in median.values()} == {0, 1}

    weighted = target_rows_by_patient(version, "rationale-weighted")[pid]
    assert weighted == [source]

    text, tokens = _taught(tokenizer, target_rows_by_patient(
        version, "rationale-answer-only")[pid][0], TARGETS["rationale-answer-only"].loss_on)
    assert text == answer + END
    assert rationale in tokenizer.decode(tokens["input_ids"])  # context, not target

    text, tokens = _taught(tokenizer, target_rows_by_patient(version, "answer-first")[pid][0])
    assert text == f"{answer}\n{rationale}{END}"
    assert _answer_tokens(tokenizer, tokens) == [" " + answer.split()[-1]]

    predict, explain = target_rows_by_patient(version, "multitask")[pid]
    assert predict["prompt"][-1]["content"].startswith("predict: Patient record")
    assert explain["prompt"][-1]["content"].startswith("explain: Patient record")
    assert _taught(tokenizer, predict)[0] == answer + END
    text, tokens = _taught(tokenizer, explain)
    assert text == rationale + END and _answer_tokens(tokenizer, tokens) == []

    text, _ = _taught(tokenizer, target_rows_by_patient(version, "rationale-shuffled")[pid][0])
    shuffled = text.removesuffix("\n" + answer + END)
    assert sorted(shuffled.split()) == sorted(rationale.split())
    assert shuffled.split() != rationale.split()


def test_derived_targets_train_on_the_main_comparisons_patients(study, bundled_model):
    engine, _ = study
    version = _version(engine)
    tokenizer = load_tokenizer(bundled_model.path)
    main = ["label", "rationale-free", "rationale-stepwise"]
    drawn = {t: training_rows(version, t, 12, 3, main, tokenizer)
             for t in [*main, "label-padded", "multitask", "rationale-shuffled"]}
    patients = {t: sorted({patient_of(r) for r in rows}) for t, rows in drawn.items()}
    assert all(p == patients["label"] for p in patients.values()) and len(patients["label"]) == 12
    assert len(drawn["multitask"]) == 24  # predict and explain per patient


def _batch(tokenizer, rows):
    tokenized = [tokenize_row(tokenizer, r, 4096) for r in rows]
    width = max(len(t["input_ids"]) for t in tokenized)
    batch = {"input_ids": torch.full((len(rows), width), tokenizer.pad_token_id),
             "labels": torch.full((len(rows), width), IGNORE),
             "attention_mask": torch.zeros((len(rows), width), dtype=torch.long)}
    for i, t in enumerate(tokenized):
        n = len(t["input_ids"])
        batch["input_ids"][i, :n] = torch.tensor(t["input_ids"])
        batch["labels"][i, :n] = torch.tensor(t["labels"])
        batch["attention_mask"][i, :n] = 1
    return batch, tokenized


def test_the_weighted_loss_matches_label_onlys_answer_share(study, tiny_model):
    from transformers import AutoModelForCausalLM

    from training.sft import completion_loss

    engine, _ = study
    version = _version(engine)
    tokenizer = load_tokenizer(tiny_model)
    free = [g[0] for g in list(target_rows_by_patient(version, "rationale-free").values())[:3]]
    labels = [g[0] for g in list(target_rows_by_patient(version, "label").values())[:3]]
    batch, tokenized = _batch(tokenizer, free)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)

    plain, _ = completion_loss(model, batch)  # the unweighted path (TRL's loss)
    unit, _, _, _ = weighted_loss(model, batch, None, LossWeighting.for_target(tokenizer, "none"))
    assert unit.item() == pytest.approx(plain.item(), rel=1e-6)
    # a weight of exactly 1: the share each row already has
    one = [tokenized[0]]
    natural = answer_counts(LossWeighting.for_target(tokenizer, "none"), one)
    single, _ = _batch(tokenizer, free[:1])
    same, _, _, _ = weighted_loss(model, single, None, LossWeighting.for_target(
        tokenizer, "answer-share", answer_share=natural["answer_token_share"]))
    assert same.item() == pytest.approx(completion_loss(model, single)[0].item(), rel=1e-6)

    label_share = answer_counts(LossWeighting.for_target(tokenizer, "none"),
                                [tokenize_row(tokenizer, r, 4096) for r in labels])[
        "answer_token_share"]
    assert label_share == pytest.approx(1 / 6)  # Final, answer, :, yes, <|im_end|>, \n
    weighting = LossWeighting.for_target(tokenizer, "answer-share", answer_share=label_share)
    loss, answer_part, (kept, nll, answer, effective), _ = weighted_loss(model, batch, None,
                                                                        weighting)
    assert int(answer.sum()) == 3  # one answer token per row
    assert float(effective[answer].sum() / effective.sum()) == pytest.approx(label_share,
                                                                             abs=1e-6)
    for row in range(3):  # and in every row on its own
        assert float(effective[row][answer[row]].sum() / effective[row].sum()) == \
            pytest.approx(label_share, abs=1e-6)
    # by hand: full logits, the answer as the last yes/no target of each row
    from training.scoring import label_token_ids

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits.float()
    targets = torch.nn.functional.pad(batch["labels"], (0, 1), value=IGNORE)[:, 1:]
    token_nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets,
                                                  ignore_index=IGNORE, reduction="none")
    numerator = denominator = answer_sum = 0.0
    for row in range(3):
        on = (targets[row] != IGNORE).nonzero().flatten().tolist()
        last = max(t for t in on if int(targets[row, t]) in label_token_ids(tokenizer))
        w = label_share * (len(on) - 1) / (1 - label_share)
        numerator += float(token_nll[row, on].sum() - token_nll[row, last]
                           + w * token_nll[row, last])
        answer_sum += w * float(token_nll[row, last])
        denominator += len(on) - 1 + w
    assert float(loss) == pytest.approx(numerator / denominator, rel=1e-5)
    assert float(answer_part) == pytest.approx(answer_sum / denominator, rel=1e-5)


def test_multitask_weights_each_task_by_alpha_whatever_the_batch(study, tiny_model):
    engine, _ = study
    tokenizer = load_tokenizer(tiny_model)
    predict, explain = next(iter(target_rows_by_patient(_version(engine), "multitask")
                                 .values()))
    weighting = LossWeighting.for_target(tokenizer, "multitask", alpha=0.8)
    for rows, expected in (([predict, explain], [0.8, 0.2]), ([predict], [1.6]),
                           ([explain], [0.4])):
        batch, _ = _batch(tokenizer, rows)
        targets = torch.nn.functional.pad(batch["labels"], (0, 1), value=IGNORE)[:, 1:]
        answer = weighting.answer_mask(batch["input_ids"], targets)
        e = weighting.effective_weights(targets, answer)
        assert e.sum(1).tolist() == pytest.approx(expected)


def test_align_gives_the_answer_the_share_alpha_of_every_rows_loss(study, tiny_model):
    """rationale-align: each row's answer tokens hold α of its loss weight and its
    rationale tokens 1 − α, whatever their lengths; rows count equally in a batch."""
    engine, _ = study
    tokenizer = load_tokenizer(tiny_model)
    rows = [r for rows in list(target_rows_by_patient(_version(engine), "rationale-align")
                               .values())[:3] for r in rows]
    weighting = LossWeighting.for_target(tokenizer, "align", alpha=0.3)
    batch, _ = _batch(tokenizer, rows)
    targets = torch.nn.functional.pad(batch["labels"], (0, 1), value=IGNORE)[:, 1:]
    answer = weighting.answer_mask(batch["input_ids"], targets)
    assert answer.sum(1).tolist() == [1, 1, 1]
    e = weighting.effective_weights(targets, answer)
    assert (e * answer).sum(1).tolist() == pytest.approx([0.1] * 3)  # 0.3 of each row's 1/3
    assert e.sum(1).tolist() == pytest.approx([1 / 3] * 3)
    lengths = (targets != IGNORE).sum(1)
    assert len(set(lengths.tolist())) > 1  # rows of different lengths, same shares
    plain = LossWeighting.for_target(tokenizer, "none").effective_weights(targets, answer)
    assert ((plain * answer).sum() / plain.sum()).item() < 0.05  # what align undoes


def _hand_p_yes(model, tokenizer, text: str) -> float:
    from training.scoring import label_token_ids

    yes, no = label_token_ids(tokenizer)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        logits = model(**ids).logits[0, -1].double()
    return float(torch.softmax(logits[[yes, no]], dim=0)[0])


def test_direct_and_sampled_scoring_agree_with_a_hand_computation(tiny_model):
    from transformers import AutoModelForCausalLM

    from annotation_db.student_task import prompt_messages
    from training.data import prompt_text
    from training.evaluate import score_conversations
    from training.scoring import TransformersScorer

    scorer = TransformersScorer(tiny_model, batch_size=2)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    conversations = [prompt_messages("2019-03 E1 memory complaint"),
                     prompt_messages("2020-01 E1 hypertension\n2021-05 E2 MMSE 24")]
    heads = [prompt_text(scorer.tokenizer, c) for c in conversations]

    p, _, _, _ = score_conversations(scorer, conversations, "direct", 0)
    hand = [_hand_p_yes(model, scorer.tokenizer, h + ANSWER_PREFIX) for h in heads]
    assert p.tolist() == pytest.approx(hand, abs=1e-5)

    p, _, reached, texts = score_conversations(scorer, conversations, "sampled", 12,
                                               n_samples=3, temperature=1.0, seed=5)
    assert [len(t) for t in texts] == [3, 3] and [len(r) for r in reached] == [3, 3]
    samples = scorer.sample_until_answer(heads, 12, 3, 1.0, stream_seeds(5, heads))
    hand = [np.mean([_hand_p_yes(model, scorer.tokenizer, h + c.text.rstrip()
                                 + ("\n" if c.text.strip() else "") + ANSWER_PREFIX)
                     for c in group]) for h, group in zip(heads, samples, strict=True)]
    assert p.tolist() == pytest.approx(hand, abs=1e-4)
    assert len({c.text for c in samples[0]}) > 1  # sampled, not greedy


def test_a_filler_model_is_read_prefilled_where_its_training_rows_put_the_answer(
        study, tiny_model):
    """Prefilled scoring reads P(yes) after the filler the model was taught, written in
    at the taught median length, the same for every patient: the training text, token
    for token, up to the answer word."""
    from transformers import AutoModelForCausalLM

    from training.data import prompt_text
    from training.evaluate import prefill_for, score_conversations
    from training.scoring import TransformersScorer

    engine, _ = study
    scorer = TransformersScorer(tiny_model, batch_size=2)
    tokenizer = scorer.tokenizer
    own = target_rows_by_patient(_version(engine), "label-padded", tokenizer, "own")
    rows = [group[0] for _, group in sorted(own.items())][:5]
    lengths = sorted(r["filler_tokens"] for r in rows)
    assert len(set(lengths)) > 1  # the patients' own fillers differ in length
    prefill = prefill_for(tokenizer, [r["completion"][-1]["content"] for r in rows])
    assert prefill["taught_median"] == lengths[2] == prefill["tokens"]
    assert set(prefill["text"]) <= {".", " "}

    # the default filler is one length for every patient: prefilled reads every patient
    # at exactly its training text's answer position
    padded = target_rows_by_patient(_version(engine), "label-padded", tokenizer)
    rows = [group[0] for _, group in sorted(padded.items())][:5]
    prefill = prefill_for(tokenizer, [g[0]["completion"][-1]["content"]
                                      for g in padded.values()])
    for one in rows:
        head = prompt_text(tokenizer, one["prompt"])
        trained = tokenizer.apply_chat_template(one["prompt"] + one["completion"],
                                                tokenize=False)
        read = head + prefill["text"] + "\n" + ANSWER_PREFIX
        assert trained.startswith(read) and trained[len(read):].startswith((" yes", " no"))

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    conversations = [r["prompt"] for r in rows[:2]]
    p, _, reached, texts = score_conversations(scorer, conversations, "prefilled", 0,
                                               prefill=prefill["text"])
    hand = [_hand_p_yes(model, tokenizer, prompt_text(tokenizer, c) + prefill["text"] + "\n"
                        + ANSWER_PREFIX) for c in conversations]
    assert p.tolist() == pytest.approx(hand, abs=1e-5)
    assert reached == [None, None] and texts == [None, None]  # nothing generated


def test_only_a_filler_model_is_read_prefilled():
    from training.evaluate import mode_for_target
    from training.grid.config import ExperimentGrid
    from training.reading_rule import trained_position
    from training.runs import RunError

    assert mode_for_target("label-padded", "prefilled") == "prefilled"
    with pytest.raises(RunError, match="writes none"):
        mode_for_target("rationale-free", "prefilled")
    assert trained_position("label-padded", "prefilled")
    assert not trained_position("rationale-free", "prefilled")
    assert not trained_position("label-padded", "forced")

    sft = {"targets": ["label", "rationale-free", "label-padded"], "train_sizes": [8]}
    grid = ExperimentGrid(dataset="t", sft=sft, fewshot=None,
                          extra_scorings=["sampled", "prefilled"])
    assert grid.scorings_for("label-padded") == ["sampled", "prefilled"]
    assert grid.scorings_for("rationale-free") == ["sampled"]
    assert grid.scorings_for("label") == []
    assert grid.selection_scoring("label-padded") is None  # select_on: own
    primary = grid.model_copy(update={"select_on": "primary"})
    assert primary.selection_scoring("label-padded") == "prefilled"  # where it answers
    assert primary.selection_scoring("rationale-free") == "sampled"
    with pytest.raises(ValueError, match="rationale-free write no filler"):
        ExperimentGrid(dataset="t", sft=sft, fewshot=None, extra_scorings=["prefilled"],
                       extra_scoring_targets={"prefilled": ["rationale-free"]})


def test_vllm_samples_are_scored_like_transformers_scores_them(vllm_engine, bundled_model):
    from transformers import AutoModelForCausalLM

    from annotation_db.student_task import prompt_messages
    from training.data import prompt_text
    from training.evaluate import score_conversations
    from training.scoring import VLLMScorer

    scorer = VLLMScorer(vllm_engine)
    conversation = [prompt_messages("2019-03 E1 memory complaint\n2020-07 E2 MMSE 22")]
    head = prompt_text(scorer.tokenizer, conversation[0])
    p, _, _, texts = score_conversations(scorer, conversation, "sampled", 24, n_samples=3,
                                         temperature=1.0, seed=1)
    samples = scorer.sample_until_answer([head], 24, 3, 1.0,
                                         stream_seeds(1, [head]))[0]  # seeded: the same ones
    assert [c.text.strip() for c in samples] == texts[0]
    model = AutoModelForCausalLM.from_pretrained(bundled_model.path, dtype=torch.float32).eval()
    hand = np.mean([_hand_p_yes(model, scorer.tokenizer, head + c.text.rstrip()
                                + ("\n" if c.text.strip() else "") + ANSWER_PREFIX)
                    for c in samples])
    assert float(p[0]) == pytest.approx(hand, abs=2e-3)
    again, _, _, _ = score_conversations(scorer, conversation, "sampled", 24, n_samples=3,
                                         temperature=1.0, seed=1)
    assert again.tolist() == p.tolist()  # seeded


def test_vllm_samples_a_batch_larger_than_one_engine_step_the_same_as_one_prompt(
        vllm_engine):
    """A batch of seeded samples whose prompts exceed one step's token budget (vLLM 0.32
    on CPU crashed when chunked prefill split such a prompt) gives each prompt the
    samples it gets on its own."""
    from annotation_db.student_task import prompt_messages
    from training.data import prompt_text
    from training.scoring import VLLMScorer

    scorer = VLLMScorer(vllm_engine)
    def history(patient: int) -> str:  # each patient its own lines: no shared prefix
        return "\n".join(f"20{10 + i}-0{1 + (i + patient) % 9} E{patient * 12 + i} memory "
                          f"complaint, MMSE {20 + (i * patient) % 9}" for i in range(12))

    heads = [prompt_text(scorer.tokenizer, prompt_messages(history(p))) for p in range(32)]
    ids = [scorer.tokenizer(h)["input_ids"] for h in heads]
    shared = next(i for i, (a, b) in enumerate(zip(ids[0], ids[1], strict=False))
                  if a != b)
    budget = vllm_engine.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    assert sum(len(i) - shared for i in ids) > budget  # more than one step, even cached
    seeds = stream_seeds(7, [str(p) for p in range(32)])
    batch = scorer.sample_until_answer(heads, 6, 3, 1.0, seeds)
    alone = scorer.sample_until_answer(heads[-1:], 6, 3, 1.0, seeds[-1:])
    assert [c.text for c in batch[-1]] == [c.text for c in alone[0]]


def test_each_patient_and_run_samples_from_its_own_stream(vllm_engine):
    """Sampled scoring gives every patient, in every run, random numbers of its own.
    With one seed for all (vLLM seeds sample j of every request with seed + j), two
    patients with the same record drew the same rationales, and sample j of every
    patient opened alike: a template-taught model's conclusion followed the sample's
    index rather than the patient."""
    from annotation_db.student_task import prompt_messages
    from training.data import prompt_text
    from training.scoring import VLLMScorer

    scorer = VLLMScorer(vllm_engine)
    head = prompt_text(scorer.tokenizer, prompt_messages("2019-03 E1 memory complaint"))
    other = prompt_text(scorer.tokenizer, prompt_messages("2020-01 E1 hypertension"))

    def draw(prompts, keys):
        groups = scorer.sample_until_answer(prompts, 8, 4, 1.0, stream_seeds(3, keys))
        return [[c.text for c in group] for group in groups]

    twins = draw([head, head], ["run-a/P1", "run-a/P2"])
    assert twins[0] != twins[1]  # one record, two patients: two sets of draws
    assert draw([head], ["run-b/P1"])[0] != twins[0]  # another run: other draws
    # the same patient and run draw the same rationales wherever it sits in the batch
    assert draw([other, head], ["run-a/P9", "run-a/P1"])[1] == twins[0]
    assert len(set(stream_seeds(3, [f"r/P{i}" for i in range(1000)]))) == 1000


@pytest.mark.slow
def test_a_mechanism_grid_reports_every_target_and_variant_and_reuses_its_runs(
        study, tiny_model, tmp_path):
    from training.grid.config import ExperimentGrid
    from training.grid.experiment import run_experiment

    engine, _ = study
    targets = ["label", "rationale-free", "label-padded", "rationale-weighted",
               "rationale-answer-only", "answer-first", "multitask", "rationale-shuffled"]
    grid = ExperimentGrid(
        name="mech", dataset="t", base_models=[tiny_model], runs_dir=str(tmp_path / "runs"),
        sft={"targets": targets, "pair_with": ["label", "rationale-free",
                                               "rationale-stepwise"],
             "train_sizes": [8], "seeds": [0], "learning_rates": [1e-3], "lora_ranks": [4],
             "settings": {"max_steps": 2, "per_device_train_batch_size": 4,
                          "max_length": 768, "logging_steps": 1,
                          "validate_each_epoch": False}},  # the probe: at the last step
        fewshot=None, baseline=False, extra_scorings=["direct", "sampled", "prefilled"],
        extra_scoring_targets={"sampled": ["rationale-free"]},
        evaluation={"engine": "transformers", "n_bootstrap": 100, "limit": 8,
                    "min_reached_answer": 0.0,
                    "max_one_answer_share": 1.0, "n_samples": 2})
    messages = []
    with Session(engine) as session:
        test = read_view(get_version(session, "t"), "label_only", "test")[:8]
    assert len({r["label"] for r in test}) == 2  # both classes among the patients scored
    report = run_experiment(engine, grid, on_stage=messages.append)
    folder = Path(report["folder"])
    text = (folder / "results.md").read_text()
    assert "## Mechanism" in text and (folder / "mechanism_loss_share.png").exists()
    settings = {(s["target"], s["scoring"]) for s in report["mechanism"]["settings"]}
    generating = [t for t in targets if TARGETS[t].scoring == "generate"]
    # direct for every model that writes first; sampled only where it was asked for
    from training.mechanism import FORCED_TARGETS

    assert settings == ({(t, TARGETS[t].scoring) for t in targets}
                        | {(t, "forced") for t in FORCED_TARGETS}
                        | {(t, "direct") for t in generating} | {("rationale-free", "sampled")}
                        | {("label-padded", "prefilled")})
    found = {c["contrast"] for c in report["mechanism"]["contrasts"]}
    assert found >= {"weighting", "answer first", "direct scoring", "sampled scoring",
                     "multitask", "length, direct", "narrative, direct"}
    # an untrained tiny model may not answer yes/no where its cue is forced: the forced
    # contrasts are read exactly when their forced rows pass the gate, else listed unread
    valid = {f["target"]: f["valid"] for f in report["mechanism"]["forced"]}
    unread = {c["contrast"] for c in report["mechanism"]["unread_contrasts"]}
    assert ("length" in found) == valid["label-padded"] == ("length" not in unread)
    both = valid["rationale-shuffled"] and valid["rationale-free"]
    assert ("narrative" in found) == both == ("narrative" not in unread)
    assert not any(r["scoring"] == "forced" for r in report["rows"])
    diags = {d["target"]: d for d in report["mechanism"]["diagnostics"]}
    assert diags["rationale-weighted"]["answer_weight_share"] == pytest.approx(1 / 6, abs=1e-6)
    assert diags["rationale-free"]["answer_weight_share"] < 0.05
    run_dir = Path(next(r["run_dir"] for r in report["rows"] if r["target"] == "multitask"))
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("answer_loss_share" in m for m in lines)
    assert any(m.get("probe_answer_grad_share") is not None for m in lines)
    # the main tables hold each cell's own scoring only
    assert len(report["rows"]) == len(targets)
    messages.clear()
    run_experiment(engine, grid, on_stage=messages.append)
    assert sum("reusing finished run" in m for m in messages) == len(targets)
    assert not any(m.startswith("training") or "scoring" in m for m in messages)


def test_new_options_leave_earlier_runs_and_results_where_they_were():
    """Options added for the ablations are in a run's identity only when its own target
    reads them and they are set: earlier runs and results keep their hashes."""
    from training.evaluate_config import EvaluateConfig
    from training.sft_config import SFTRunConfig

    label = SFTRunConfig(dataset="v", target="label")
    before = set(label.identity_data())
    assert not before & {"multitask_alpha", "answer_loss_share", "probe_steps",
                         "probe_rows", "validate_each_epoch", "align_alpha"}
    for other in ({"multitask_alpha": 0.7}, {"answer_loss_share": 0.3}, {"align_alpha": 0.8},
                  {"probe_steps": 3, "validate_each_epoch": False}):
        assert SFTRunConfig(dataset="v", target="label", **other).identity("h") == \
            label.identity("h")
    multitask = SFTRunConfig(dataset="v", target="multitask")
    assert SFTRunConfig(dataset="v", target="multitask", multitask_alpha=0.7).identity("h") \
        != multitask.identity("h")
    with pytest.raises(ValueError, match="gradient accumulation"):
        SFTRunConfig(dataset="v", target="multitask", gradient_accumulation_steps=2)
    align = SFTRunConfig(dataset="v", target="rationale-align")
    assert SFTRunConfig(dataset="v", target="rationale-align", align_alpha=0.8).identity("h") \
        != align.identity("h")
    with pytest.raises(ValueError, match="gradient accumulation"):
        SFTRunConfig(dataset="v", target="rationale-align", gradient_accumulation_steps=2)
    # the filler's length: "own" is how the first grid's filler runs were made (their
    # hash), the label-blind median is a new run; other targets never read it
    padded = {k: SFTRunConfig(dataset="v", target="label-padded", filler_length=k)
              for k in ("own", "median")}
    assert "filler_length" not in padded["own"].identity_data()
    assert padded["median"].identity("h") != padded["own"].identity("h")
    assert SFTRunConfig(dataset="v", target="label").filler_length == "median"
    assert "filler_length" not in label.identity_data()
    evaluation = EvaluateConfig()
    assert not set(evaluation.identity_data()) & {"scoring", "n_samples",
                                                  "sample_temperature",
                                                  "max_one_answer_share"}
    assert EvaluateConfig(scoring="sampled").settings_hash() != evaluation.settings_hash()


def _scored(root: Path, name: str, labels, scores, *, reached=None, mass=None,
            texts=None, **row) -> dict:
    """A run folder as evaluation leaves it: predictions.csv (+ .jsonl when it wrote
    rationales) and the report row that points at it."""
    folder = root / name / "eval" / "test"
    folder.mkdir(parents=True)
    ids = [f"P{i:04d}" for i in range(len(labels))]
    mass = [0.99] * len(ids) if mass is None else mass
    lines = ["id,label,p_yes,label_mass,reached_answer"] + [
        f"{pid},{y},{float(p)!r},{float(m)!r},{'' if reached is None else int(reached[i])}"
        for i, (pid, y, p, m) in enumerate(zip(ids, labels, scores, mass, strict=True))]
    (folder / "predictions.csv").write_text("\n".join(lines) + "\n")
    if texts is not None:
        (folder / "predictions.jsonl").write_text("".join(
            json.dumps({"id": pid, "rationale": t}) + "\n" for pid, t in zip(ids, texts,
                                                                              strict=True)))
    return {"kind": "sft", "base_model": "m", "train_size": 40, "seed": 0, "lora_r": 4,
            "run_id": name, "run_dir": str(root / name),
            "predictions": str(folder / "predictions.csv"), "valid": True,
            "invalid_reason": None, "invalid_code": None,
            "reached_answer_share": None if reached is None else float(np.mean(reached)),
            "mean_label_mass": float(np.mean(mass)), "rationale_token_cap": 150,
            "completion_max": 148, "auroc": {"value": 0.5}, **row}


NOT_REACHED = {"valid": False, "invalid_reason": "only a few reached 'Final answer:'",
               "invalid_code": "answer_not_reached"}


def test_content_free_targets_are_read_forced_in_their_contrasts_and_only_there(tmp_path):
    """Filler and shuffled words have nothing to finish: a model that never writes the
    cue on its own is read with the cue appended where it stopped, in the length and
    narrative contrasts only; a forced reading whose forced patients do not answer yes/no
    is refused and its contrast listed as not read; the direct alternatives are beside
    them and a reading says when they would change it; the generate rows stay invalid."""
    import copy

    from training import mechanism

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    n = y.size
    strong, weak = y + rng.normal(0, 0.5, n), y + rng.normal(0, 3.0, n)
    none, every = np.zeros(n, bool), np.ones(n, bool)
    some = np.arange(n) % 5 == 0  # 20% reached the cue on their own
    low_mass = np.where(np.arange(n) % 4 == 1, 0.2, 0.99)  # 25% of all and of the forced
    rows = [_scored(tmp_path, "label", y, strong, target="label", scoring="direct"),
            _scored(tmp_path, "free", y, weak, target="rationale-free", scoring="generate",
                    reached=every, texts=["Age 71 [E1]; APOE e4 [E2]."] * n),
            _scored(tmp_path, "free-direct", y, weak, target="rationale-free",
                    scoring="direct"),
            _scored(tmp_path, "padded", y, weak, target="label-padded", scoring="generate",
                    reached=none, texts=[". . . ."] * n, **NOT_REACHED),
            _scored(tmp_path, "padded-direct", y, weak, target="label-padded",
                    scoring="direct"),
            _scored(tmp_path, "shuffled", y, strong, target="rationale-shuffled",
                    scoring="generate", reached=some, mass=list(low_mass),
                    texts=["[E1]; [E1]; [E1]; age"] * n, **NOT_REACHED),
            _scored(tmp_path, "shuffled-direct", y, strong, target="rationale-shuffled",
                    scoring="direct"),
            _scored(tmp_path, "answer-only", y, weak, target="rationale-answer-only",
                    scoring="generate", reached=some, texts=["x"] * n, **NOT_REACHED)]
    before = copy.deepcopy(rows)
    lines, data = mechanism.section(rows, tmp_path, n_resamples=200, seed=0)
    assert rows == before  # the caller's rows (the main tables') get no forced row

    forced = {f["target"]: f for f in data["forced"]}
    assert set(forced) == {"label-padded", "rationale-shuffled", "rationale-free"}
    padded, shuffled, free = (forced[t] for t in ("label-padded", "rationale-shuffled",
                                                  "rationale-free"))
    assert padded["valid"] and padded["forced_share"] == 1.0
    assert padded["forced_one_word_majority_share"] == 1.0  # filler is one word
    assert free["valid"] and free["forced_share"] == 0 and free["forced_patients"] == 0
    assert shuffled["forced_patients"] == 96 and not shuffled["valid"]
    assert shuffled["forced_low_mass_share"] == pytest.approx(24 / 96)
    assert "25% of the 96 patients whose cue was appended" in shuffled["invalid_reason"]
    assert "| label-padded | 0.00 | 1.00 | 150 | 148 | 0.000 | 1.00 | yes |" in lines

    contrasts = {c["contrast"]: c for c in data["contrasts"]}
    assert contrasts["length"]["b"] == "label-padded/forced" and contrasts["length"]["forced"]
    assert contrasts["length"]["shown"] == 1  # label-only's strong scores beat the filler's
    assert contrasts["length, direct"]["b"] == "label-padded/direct"
    assert "narrative" not in contrasts and contrasts["narrative, direct"]["shown"] == 1
    unread = {c["contrast"]: c["reason"] for c in data["unread_contrasts"]}
    assert "rationale-shuffled/forced: 25% of the 96" in unread["narrative"]
    assert unread["answer-only loss"].startswith("rationale-answer-only/generate: only")

    reading = {r["explanation"]: r for r in data["readings"]}
    narrative = reading["narrative plausibility vs discrimination (the study's)"]
    assert narrative["reading"].startswith("not tested")
    assert narrative["direct_reading"] == {"contrasts": ["narrative, direct"],
                                           "reading": "supported", "same": False}
    loss_shift = reading["next-token loss shifted onto rationale tokens"]
    assert loss_shift["untested"] == ["answer-only loss", "weighting"] and not loss_shift["tested"]
    assert reading["dilution of the answer's gradient by length"]["forced"] == ["length"]
    assert any("Read with narrative, direct instead: supported." in line for line in lines)

    settings = {(s["target"], s["scoring"]): s for s in data["settings"]}
    assert settings[("label-padded", "generate")].get("invalid")  # the main gate holds
    assert settings[("label-padded", "forced")]["mean_auroc"] is not None
    assert ("rationale-answer-only", "forced") not in settings


def test_a_forced_reading_needs_to_know_who_was_forced_and_allows_five_percent_low_mass(
        tmp_path):
    from training.forced_reading import forced_rows

    y = np.repeat([0, 1], 10)
    one_low = [0.3] + [0.9] * 19  # 1 of 20 forced patients: exactly 5%
    rows = [_scored(tmp_path, "at-the-limit", y, y * 0.5, target="label-padded",
                    scoring="generate", reached=np.zeros(20, bool), mass=one_low,
                    **NOT_REACHED),
            _scored(tmp_path, "no-reached-column", y, y * 0.5, target="label-padded",
                    scoring="generate", **NOT_REACHED),
            _scored(tmp_path, "invalid-otherwise", y, y * 0.5, target="label-padded",
                    scoring="generate", reached=np.zeros(20, bool), valid=False,
                    invalid_reason="truncated prompts", invalid_code="truncated")]
    out = {r["run_id"]: r for r in forced_rows(rows, {"label-padded"})}
    assert out["at-the-limit"]["valid"]
    assert out["at-the-limit"]["forced_one_word_majority_share"] is None  # no generations
    assert not out["no-reached-column"]["valid"]
    assert "do not say which patients" in out["no-reached-column"]["invalid_reason"]
    # only the reached-answer gate is lifted: any other reason stays, and says so
    assert not out["invalid-otherwise"]["valid"]
    assert out["invalid-otherwise"]["invalid_reason"] == \
        "its generate result is invalid: truncated prompts"


def test_a_forced_reading_of_saturated_scores_is_left_out_as_degenerate(tmp_path):
    """The forced row reads the same scores as its generate row: the degenerate rule the
    report applies to every run (seed_report.run_figures, as results.py adds it) holds
    there too, although the generate row was already invalid for its answers."""
    from training import seed_report
    from training.forced_reading import forced_rows

    y = np.repeat([0, 1], 10)
    rows = []
    for name, scores in (("saturated", [0.01] * 19 + [0.2]), ("graded", 0.3 + 0.01 * y)):
        row = _scored(tmp_path, name, y, scores, target="label-padded", scoring="generate",
                      reached=np.zeros(20, bool), **NOT_REACHED)
        rows.append({**row, **seed_report.run_figures(row)})
    out = {r["run_id"]: r for r in forced_rows(rows, {"label-padded"})}
    assert not out["saturated"]["valid"]
    assert out["saturated"]["invalid_code"] == "degenerate"
    assert out["saturated"]["invalid_reason"].endswith("below 5%")
    assert out["graded"]["valid"]  # P(yes) 0.30-0.31 for all: calibration, not constant
    # a generate row already left out as degenerate: its forced row says so in the same way
    generate_left_out = {**rows[0], "run_id": "left-out", "invalid_code": "degenerate",
                         "invalid_reason": rows[0]["degenerate"]}
    (forced,) = forced_rows([generate_left_out], {"label-padded"})
    assert (forced["valid"], forced["invalid_code"]) == (False, "degenerate")


def test_a_run_stored_before_an_option_rebuilds_as_it_was_made():
    """The first grid's filler run, archived before ``filler_length`` existed, rebuilds
    from its stored config to its own identity (so it can be retrained as itself): the
    option takes the value runs had before it, not today's default."""
    from training.sft_config import SFTRunConfig

    stored = json.loads((Path(__file__).resolve().parents[2] / "experiments" / "archive"
                         / "mechanism-cpu" / "sft-label-padded-0ce3fcf60d0f"
                         / "run.json").read_text())
    assert "filler_length" not in stored["config"]
    version = stored["dataset"]["sha256"]
    rebuilt = SFTRunConfig.from_stored(stored["config"])
    assert rebuilt.filler_length == "own"
    assert rebuilt.identity(version) == stored["config_hash"]
    assert SFTRunConfig.model_validate(stored["config"]).identity(version) != \
        stored["config_hash"]  # today's default would make it another run


def test_a_pre_registered_grid_runs_its_filler_model_prefilled_and_reads_it_under_its_rule(
        study, tiny_model, tmp_path):
    """Mechanism-v2's path end to end on the tiny model: two seeds, the rule in every
    run's identity, the label-blind filler trained and read prefilled, the contrast read
    seeds then patients or listed unread with why (sampled rationales in a grid: the
    test above)."""
    from training.grid.config import ExperimentGrid
    from training.grid.experiment import run_experiment

    engine, _ = study
    rule = {"trained_positions_only": True, "interval": "seeds-then-patients",
            "contrasts": {
                "length": {"a": ["label", "direct"], "b": ["label-padded", "prefilled"],
                           "what": "filler"}},
            "explanations": {"dilution": ["length"]}}
    grid = ExperimentGrid(
        name="mech-v2", dataset="t", base_models=[tiny_model],
        runs_dir=str(tmp_path / "runs"), fewshot=None, baseline=False, reading=rule,
        sft={"targets": ["label", "label-padded"],
             "pair_with": ["label", "rationale-free", "rationale-stepwise"],
             "train_sizes": [8], "seeds": [0, 1], "learning_rates": [1e-3], "lora_ranks": [4],
             "settings": {"max_steps": 1, "per_device_train_batch_size": 4,
                          "max_length": 768, "logging_steps": 1,
                          "validate_each_epoch": False}},
        extra_scorings=["prefilled"],
        evaluation={"engine": "transformers", "n_bootstrap": 100, "limit": 8,
                    "min_reached_answer": 0.0})
    report = run_experiment(engine, grid)
    mechanism = report["mechanism"]
    assert mechanism["reading_rule"] == {"hash": grid.preregistration(),
                                         "rule": grid.reading.digest(), "pre_registered": True,
                                         "interval": "seeds-then-patients",
                                         "sides_must_learn": True, "amends": []}
    settings = {(s["target"], s["scoring"]) for s in mechanism["settings"]}
    assert ("label-padded", "prefilled") in settings
    read = {c["contrast"]: c for c in mechanism["contrasts"]}
    unread = {c["contrast"]: c["reason"] for c in mechanism["unread_contrasts"]}
    assert set(read) | set(unread) == {"length"}  # read, or listed unread with why
    assert all(c["interval"] in ("seeds-then-patients", "patients only (one seed)")
               for c in read.values())
    padded = [Path(r["run_dir"]) for r in report["rows"] if r["target"] == "label-padded"]
    assert len(padded) == 2
    for folder in padded:
        made = yaml.safe_load((folder / "config.yaml").read_text())
        assert made["reading_rule"] == grid.preregistration()
        assert made["filler_length"] == "median"
        metrics = json.loads((folder / "eval" / "test-prefilled" / "metrics.json").read_text())
        taught = json.loads((folder / "dataset.json").read_text())
        assert metrics["prefill"]["tokens"] == metrics["prefill"]["taught_median"]
        assert metrics["scoring"]["mode"] == "prefilled" and taught["examples"] == 8
