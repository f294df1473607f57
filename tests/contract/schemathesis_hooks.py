"""Schemathesis hooks for tests/contract/run.sh (loaded via SCHEMATHESIS_HOOKS).

Fresh Idempotency-Keys
----------------------
Effectful POSTs need an Idempotency-Key per distinct request: the same key
with another body is refused with 409 `idempotency_key_reused` (documented,
and tested in the Rust suite and the walk-throughs). Schemathesis draws keys
from the schema and would reuse a few of them (one per operation while its
coverage phase varies the body, the shortest strings when fuzzing) across
unrelated requests, so that most requests would test the key-reuse refusal
instead of the operation. A valid key is therefore made unique per request;
malformed keys (empty, too long, non-ASCII) are left as generated, so the
refusals of bad keys stay under test.

Schema-valid requests refused
-----------------------------
A request the document calls valid is never refused with 400 or 422; a rule
no JSON schema can state (two account ids that must differ, an amount within
the currency's minor unit, the ledger's state) refuses it with 409 and a code
that names the rule, and funds with 402. `schemathesis.toml` sets those
statuses for `positive_data_acceptance`.
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
