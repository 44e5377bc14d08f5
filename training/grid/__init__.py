"""Experiment grids: a YAML of factors → resumable runs → a results table and figure.

A grid crosses SFT targets × training-set sizes × seeds × base models × LoRA ranks
(× learning rates × epochs, the tuning budget every target gets alike), and few-shot
k × with/without rationales. Every cell is an ordinary run (see :mod:`training.sft`,
:mod:`training.fewshot`), so re-running a grid skips what is finished and resumes what
was interrupted. When a cell has more than one learning-rate/epoch combination, each
is scored on the validation split and the best one (by validation AUROC) is the cell's
test result.

The package, one job a module:

- :mod:`.config`: the grid's YAML (:class:`ExperimentGrid`); pydantic only, no torch
  and no database at import time;
- :mod:`.steps`: the steps both runners schedule (train a candidate, score a choice);
- :mod:`.cells`: the cells' bookkeeping and the failure policy both runners share, and
  what a runner returns (:class:`GridResult`, :class:`FailedCell`);
- :mod:`.local` and :mod:`.ray`: the two runners (one run after another here; Ray tasks);
- :mod:`.experiment`: run a grid, keep its ``selection.json``, write its report;
- :mod:`.results`: the report's rows read from the database (:class:`ResultRow`);
- :mod:`.stats` and :mod:`.report_files`: statistics and the report's files, from the
  rows alone (never a database session).

**Failures.** A long grid should not lose a night's runs to one bad cell, and should
not hide that cell either. So with either runner a step that raises fails its own cell
only (and the later seeds waiting for that cell's tuning choice, which would otherwise
be tuned differently); every other cell runs on. The report is written from the cells
that finished and lists the failed ones with their error under "Failed cells";
``selection.json`` lists them under ``failed``; then :func:`run_experiment` raises
:class:`training.runs.RunError` naming them, so ``experiment run`` exits non-zero.
Re-running the grid once the cause is fixed reuses every finished run.
"""
