"""Schemathesis hooks for tests/contract/run.sh (loaded via SCHEMATHESIS_HOOKS).

Effectful POSTs need an Idempotency-Key per distinct request: the same key
with another body is refused with 422 `idempotency_key_reused` (documented,
and tested in the Rust suite and the walk-throughs). Schemathesis draws keys
from the schema and would reuse a few of them (the example, boundary
strings) across unrelated requests, so that most requests would test the
key-reuse refusal instead of the operation. A valid key is therefore made
unique per request; malformed keys (empty, too long, non-ASCII) are left as
generated, so the refusals of bad keys stay under test.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import schemathesis

HEADER = "Idempotency-Key"
_run = uuid.uuid4().hex[:12]
_counter = itertools.count()


def _valid(key: object) -> bool:
    return isinstance(key, str) and 1 <= len(key) <= 255 and all(0x20 <= ord(c) <= 0x7E for c in key)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    headers = case.headers
    if headers and _valid(headers.get(HEADER)):
        headers[HEADER] = f"st:{_run}:{next(_counter)}"
