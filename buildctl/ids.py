"""Identifiers: short random ids that say what they name (finding one from a prefix: buildctl.resolve)."""

from __future__ import annotations

import os


#: Prefixes make an id say what it names: ex_…, ag_…, cp_…, tl_…, wv_…, tk_…
PREFIXES = {"execution": "ex", "agent": "ag", "checkpoint": "cp", "list": "tl", "wave": "wv", "task": "tk"}


def new_id(kind: str) -> str:
    # os.urandom is what secrets.token_hex reads; importing secrets (hmac, hashlib) cost
    # ~4 ms of every command that creates something.
    return f"{PREFIXES[kind]}_{os.urandom(6).hex()}"
