"""Schemathesis hooks for tests/contract/run.sh (loaded via SCHEMATHESIS_HOOKS).

Fresh Idempotency-Keys
----------------------
Effectful POSTs need an Idempotency-Key per distinct request: the same key
with another body is refused with 422 `idempotency_key_reused` (documented,
and tested in the Rust suite and the walk-throughs). Schemathesis draws keys
from the schema and would reuse a few of them (one per operation while its
coverage phase varies the body, the shortest strings when fuzzing) across
unrelated requests, so that most requests would test the key-reuse refusal
instead of the operation. A valid key is therefore made unique per request;
malformed keys (empty, too long, non-ASCII) are left as generated, so the
refusals of bad keys stay under test.

Schema-valid requests refused
-----------------------------
`positive_data_acceptance` runs with 402 and 422 among its expected statuses
(schemathesis.toml): a schema-valid request may still be refused by a rule
no JSON schema can state (two account ids that must differ, an amount within
the currency's minor unit, funds). The check below keeps that allowance
narrow: a schema-valid request refused with 422 must carry one of those
codes. Any other 422 (`invalid_field`, `unknown_currency`, ...) means the
document allows what the server refuses, and fails the run like a 400 does.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import schemathesis

HEADER = "Idempotency-Key"
_run = uuid.uuid4().hex[:12]
_counter = itertools.count()


# The 422 codes of rules beyond a JSON schema: cross-field rules, the
# currency's minor unit and the amount's ceiling, and the state of the ledger.
RULES_BEYOND_THE_SCHEMA = frozenset(
    {
        "amount_not_positive",
        "amount_too_precise",
        "amount_too_large",
        "currency_mismatch",
        "same_account",
        "fee_exceeds_amount",
        "refund_exceeds_charge",
        # exactly one of `buyer_account_id` and `payment_method`
        "invalid_payment_source",
        # `expires_in` only with `"capture": false`, and that only for a wallet
        "invalid_authorization",
        # a capture of more than its authorization holds
        "capture_exceeds_authorization",
        # a webhook URL whose host does not resolve, or resolves inside the service's network
        "invalid_url",
        "private_destination",
        # an instant of history not settled yet, and a period whose ends are out of order
        "as_of_too_recent",
        "invalid_period",
        # a statement too long for one JSON document (CSV streams it)
        "statement_too_large",
        # at most one of a list's `starting_after` and `ending_before`
        "conflicting_cursors",
    }
)


def _valid(key: object) -> bool:
    return isinstance(key, str) and 1 <= len(key) <= 255 and all(0x20 <= ord(c) <= 0x7E for c in key)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    headers = case.headers
    if headers and _valid(headers.get(HEADER)):
        headers[HEADER] = f"st:{_run}:{next(_counter)}"


@schemathesis.check
def schema_valid_refused_only_by_rules_beyond_the_schema(ctx: Any, response: Any, case: Any) -> None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    try:
        code = response.json().get("code")
    except ValueError:
        code = None
    if code not in RULES_BEYOND_THE_SCHEMA:
        raise AssertionError(
            f"a schema-valid request was refused with 422 `{code}`, a rule the document could state but does not"
        )
    return None
