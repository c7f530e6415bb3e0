"""Kept importable for test modules written before the fixtures moved: `migrated` and
`migrated_template` (a session template copied per test) now live in conftest.py."""

from conftest import migrated, migrated_template  # noqa: F401
