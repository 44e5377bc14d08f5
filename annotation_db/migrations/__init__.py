"""Alembic migrations for the annotation database (run them with `rationale-audit db upgrade`)."""
