"""The purchase of docs/walkthrough.md, through the Python client generated from the
committed spec by openapi-python-client, against a live server.

Run by tests/contract/run.sh with LEDGER_URL and LEDGER_KEY set and the
generated package `ledger_client` on PYTHONPATH; type-checked with
`mypy --strict` first. Asserts effects (balances, the replayed response,
entries), not only status codes.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http import HTTPStatus
from typing import Any, TypeVar

from ledger_client import AuthenticatedClient
from ledger_client.api.accounts import create_account, get_account, get_account_statement, list_account_entries
from ledger_client.api.charges import capture_charge, create_charge, create_refund, get_charge, list_charges, void_charge
from ledger_client.api.inventory import get_sku, restock_sku
from ledger_client.api.reservations import create_reservation, get_reservation, release_reservation
from ledger_client.api.transfers import create_transfer, get_transfer
from ledger_client.models import (
    Account,
    CaptureCharge,
    Charge,
    ChargeList,
    ChargeStatus,
    CreateAccount,
    CreateCharge,
    CreatePlatformFee,
    CreateRefund,
    CreateReservation,
    CreateRestock,
    CreateTransfer,
    Currency,
    EntryKind,
    EntryList,
    Problem,
    ProblemCode,
    Refund,
    Reservation,
    ReservationStatus,
    Sku,
    Statement,
    Transfer,
    VoidCharge,
)
from ledger_client.types import Response

T = TypeVar("T")


def expect(resp: Response[T | Problem], status: HTTPStatus, kind: type[T]) -> T:
    """The parsed body of a response that must have `status` and be a `kind`."""
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.content!r}"
    assert isinstance(resp.parsed, kind), f"expected a {kind.__name__}, got {resp.parsed!r}"
    return resp.parsed


def problem(resp: Response[Any], status: HTTPStatus, code: ProblemCode) -> Problem:
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.content!r}"
    p = resp.parsed
    assert isinstance(p, Problem), f"expected a Problem, got {p!r}"
    assert p.code == code, f"expected problem {code}, got {p.code}: {p.detail}"
    assert resp.headers["content-type"] == "application/problem+json"
    return p


def balance(client: AuthenticatedClient, account_id: uuid.UUID) -> Decimal:
    return Decimal(expect(get_account.sync_detailed(account_id, client=client), HTTPStatus.OK, Account).balance)


def main() -> None:
    client = AuthenticatedClient(base_url=os.environ["LEDGER_URL"], token=os.environ["LEDGER_KEY"])
    run = uuid.uuid4().hex[:8]  # a fresh run never collides with an earlier one's natural keys
    order = f"order-{run}"
    sku = f"mug-{run}"

    # 1. Accounts. External funds may go negative; the others may not.
    def account(name: str, allow_negative: bool = False) -> Account:
        body = CreateAccount(reference=f"{name}-{run}", currency=Currency.USD, allow_negative=allow_negative)
        resp = create_account.sync_detailed(client=client, body=body, idempotency_key=f"acct:{name}:{run}")
        acct = expect(resp, HTTPStatus.CREATED, Account)
        assert resp.headers["location"] == f"/v1/accounts/{acct.id}"
        assert acct.balance == "0.00" and acct.currency == Currency.USD
        return acct

    ext = account("card-funding", allow_negative=True)
    buyer = account("buyer")
    seller = account("seller")
    platform = account("platform")

    # The same reference again under a new key: the same account, no second one.
    again = create_account.sync_detailed(
        client=client,
        body=CreateAccount(reference=f"buyer-{run}", currency=Currency.USD),
        idempotency_key=f"acct:buyer:{run}:again",
    )
    assert expect(again, HTTPStatus.OK, Account).id == buyer.id
    assert again.headers["natural-key-replayed"] == "true"

    # 2. Fund the buyer's wallet.
    fund = create_transfer.sync_detailed(
        client=client,
        body=CreateTransfer(
            source_account_id=ext.id,
            destination_account_id=buyer.id,
            amount="100.00",
            currency=Currency.USD,
            description="wallet top-up",
        ),
        idempotency_key=f"fund:{run}:1",
    )
    transfer = expect(fund, HTTPStatus.CREATED, Transfer)
    assert transfer.amount == "100.00"
    assert expect(get_transfer.sync_detailed(transfer.id, client=client), HTTPStatus.OK, Transfer).id == transfer.id
    assert balance(client, buyer.id) == Decimal("100.00")
    assert balance(client, ext.id) == Decimal("-100.00")

    # 3. Restock, then hold one mug for the order.
    stock = expect(
        restock_sku.sync_detailed(sku, client=client, body=CreateRestock(quantity=10), idempotency_key=f"restock:{run}"),
        HTTPStatus.CREATED,
        Sku,
    )
    assert (stock.on_hand, stock.reserved, stock.available) == (10, 0, 10)
    held = expect(
        create_reservation.sync_detailed(
            client=client,
            body=CreateReservation(order_id=order, sku=sku, quantity=1),
            idempotency_key=f"{order}:{sku}",
        ),
        HTTPStatus.CREATED,
        Reservation,
    )
    assert held.status == ReservationStatus.HELD
    stock = expect(get_sku.sync_detailed(sku, client=client), HTTPStatus.OK, Sku)
    assert (stock.on_hand, stock.reserved, stock.available) == (10, 1, 9)
    assert expect(get_reservation.sync_detailed(held.id, client=client), HTTPStatus.OK, Reservation).id == held.id

    # More than is left is a stored decline.
    problem(
        create_reservation.sync_detailed(
            client=client,
            body=CreateReservation(order_id=f"{order}-big", sku=sku, quantity=50),
            idempotency_key=f"{order}-big:{sku}",
        ),
        HTTPStatus.CONFLICT,
        ProblemCode.OUT_OF_STOCK,
    )

    # 4. Charge the order, attempt 1: buyer -25.00, seller +22.50, platform +2.50.
    charge_body = CreateCharge(
        order_id=order,
        attempt=1,
        buyer_account_id=buyer.id,
        seller_account_id=seller.id,
        amount="25.00",
        currency=Currency.USD,
        platform_fee=CreatePlatformFee(account_id=platform.id, amount="2.50"),
    )
    first = create_charge.sync_detailed(client=client, body=charge_body, idempotency_key=f"{order}:1")
    charge = expect(first, HTTPStatus.CREATED, Charge)
    assert "idempotent-replayed" not in first.headers
    assert charge.status == ChargeStatus.SUCCEEDED, charge.status
    assert charge.amount == "25.00" and charge.refunded_amount == "0.00"
    assert balance(client, buyer.id) == Decimal("75.00")
    assert balance(client, seller.id) == Decimal("22.50")
    assert balance(client, platform.id) == Decimal("2.50")

    # 5. The retry with the same key: the same status and body, replayed, no second charge.
    retry = create_charge.sync_detailed(client=client, body=charge_body, idempotency_key=f"{order}:1")
    assert retry.status_code == HTTPStatus.CREATED
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content, "a replay is byte for byte the first answer"
    assert expect(retry, HTTPStatus.CREATED, Charge).id == charge.id
    assert balance(client, buyer.id) == Decimal("75.00")

    # The same key with another request is refused and writes nothing.
    charge_body.amount = "26.00"
    problem(
        create_charge.sync_detailed(client=client, body=charge_body, idempotency_key=f"{order}:1"),
        HTTPStatus.CONFLICT,
        ProblemCode.IDEMPOTENCY_KEY_REUSED,
    )
    charge_body.amount = "25.00"

    # 6. Balances and the buyer's entries.
    page = expect(list_account_entries.sync_detailed(buyer.id, client=client), HTTPStatus.OK, EntryList)
    amounts = [(e.kind, e.amount) for e in page.data]
    assert amounts == [(EntryKind.CHARGE, "-25.00"), (EntryKind.TRANSFER, "100.00")], amounts
    assert all(e.currency == Currency.USD for e in page.data)
    first_page = expect(list_account_entries.sync_detailed(buyer.id, client=client, limit=1), HTTPStatus.OK, EntryList)
    assert len(first_page.data) == 1 and first_page.has_more
    second_page = expect(
        list_account_entries.sync_detailed(buyer.id, client=client, limit=1, starting_after=first_page.data[0].id),
        HTTPStatus.OK,
        EntryList,
    )
    assert [e.id for e in first_page.data + second_page.data] == [e.id for e in page.data]
    assert not second_page.has_more
    back = expect(
        list_account_entries.sync_detailed(buyer.id, client=client, limit=1, ending_before=second_page.data[0].id),
        HTTPStatus.OK,
        EntryList,
    )
    assert [e.id for e in back.data] == [e.id for e in first_page.data] and not back.has_more
    listed = expect(list_charges.sync_detailed(client=client, order_id=order), HTTPStatus.OK, ChargeList)
    assert [c.id for c in listed.data] == [charge.id]

    # 7. A partial refund: the buyer gets 10.00 back, seller and platform return their shares.
    refunded = create_refund.sync_detailed(
        charge.id, client=client, body=CreateRefund(reference=f"{order}:refund:1", amount="10.00"),
        idempotency_key=f"{order}:refund:1",
    )
    refund = expect(refunded, HTTPStatus.CREATED, Refund)
    assert refund.amount == "10.00" and refund.charge_id == charge.id
    assert balance(client, buyer.id) == Decimal("85.00")
    assert balance(client, seller.id) == Decimal("13.50")
    assert balance(client, platform.id) == Decimal("1.50")
    after = expect(get_charge.sync_detailed(charge.id, client=client), HTTPStatus.OK, Charge)
    assert after.refunded_amount == "10.00"

    # The refund asked again under another key (the first one lost, or expired): its reference
    # names the refund already made, returned as it is; the buyer is not paid twice.
    refund_again = create_refund.sync_detailed(
        charge.id, client=client, body=CreateRefund(reference=f"{order}:refund:1", amount="10.00"),
        idempotency_key=f"{order}:refund:1:again",
    )
    assert expect(refund_again, HTTPStatus.OK, Refund).id == refund.id
    assert refund_again.headers["natural-key-replayed"] == "true"
    assert balance(client, buyer.id) == Decimal("85.00")

    # More than what remains is a stored decline, replayed as such.
    key = f"{order}:refund:2"
    too_much = CreateRefund(reference=key, amount="20.00")
    declined = create_refund.sync_detailed(charge.id, client=client, body=too_much, idempotency_key=key)
    problem(declined, HTTPStatus.CONFLICT, ProblemCode.REFUND_EXCEEDS_CHARGE)
    replayed = create_refund.sync_detailed(charge.id, client=client, body=too_much, idempotency_key=key)
    assert replayed.headers["idempotent-replayed"] == "true" and replayed.content == declined.content

    # 8. The buyer's statement, from before the account existed until now: JSON, and the same
    # as CSV. An instant is read once it is settled (a second or so); until then the answer is
    # 409 `as_of_too_recent`, to ask again.
    start, end = buyer.created_at - timedelta(seconds=1), datetime.now(timezone.utc)
    for _ in range(50):
        time.sleep(0.2)
        read = get_account_statement.sync_detailed(buyer.id, client=client, from_=start, to=end)
        if read.status_code != HTTPStatus.CONFLICT:
            break
        problem(read, HTTPStatus.CONFLICT, ProblemCode.AS_OF_TOO_RECENT)
    statement = expect(read, HTTPStatus.OK, Statement)
    kinds = [(e.kind, e.amount) for e in statement.entries]
    assert kinds == [(EntryKind.TRANSFER, "100.00"), (EntryKind.CHARGE, "-25.00"), (EntryKind.REFUND, "10.00")], kinds
    opening, closing = Decimal(statement.opening.available), Decimal(statement.closing.available)
    assert (opening, closing) == (Decimal(0), Decimal("85.00"))
    assert opening + sum(Decimal(e.amount) for e in statement.entries) == closing
    assert Decimal(statement.entries[-1].balance) == closing
    as_csv = client.get_httpx_client().get(
        f"/v1/accounts/{buyer.id}/statement",
        params={"from": start.isoformat(), "to": end.isoformat(), "format": "csv"},
    )
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [ln["line"] for ln in lines][0] == "opening" and lines[-1]["line"] == "closing"
    rows = [(ln["entry_id"], ln["amount"], ln["available"]) for ln in lines if ln["line"] == "entry"]
    assert rows == [(e.id, e.amount, e.balance) for e in statement.entries], rows
    assert Decimal(lines[-1]["available"]) == closing

    # A card charge, through the payment provider (the fake one in tests): the
    # money comes from the provider clearing account, not a wallet. 202 would
    # mean `processing` (the provider's answer is not known yet): the same
    # request again, with the same key, until it is final.
    card_order = f"{order}-card"
    card_body = CreateCharge(
        order_id=card_order,
        attempt=1,
        payment_method="pm_card_visa",
        seller_account_id=seller.id,
        amount="12.00",
        currency=Currency.USD,
    )
    for _ in range(20):
        paid = create_charge.sync_detailed(client=client, body=card_body, idempotency_key=f"{card_order}:1")
        if paid.status_code != HTTPStatus.ACCEPTED:
            break
    card = expect(paid, HTTPStatus.CREATED, Charge)
    assert card.status == ChargeStatus.SUCCEEDED and card.payment_method == "pm_card_visa"
    assert isinstance(card.provider_payment_id, str) and card.provider_payment_id.startswith("pi_")
    assert balance(client, seller.id) == Decimal("25.50")
    declined_card = CreateCharge(
        order_id=f"{order}-declined",
        attempt=1,
        payment_method="pm_card_chargeDeclined",
        seller_account_id=seller.id,
        amount="12.00",
        currency=Currency.USD,
    )
    problem(
        create_charge.sync_detailed(client=client, body=declined_card, idempotency_key=f"{order}-declined:1"),
        HTTPStatus.PAYMENT_REQUIRED,
        ProblemCode.CARD_DECLINED,
    )

    # Authorize at checkout, capture at shipment: the amount is held on the buyer's wallet
    # (`pending`, no longer `available`) until the capture takes what shipped; the rest goes back.
    later = f"{order}-later"
    authorized = expect(
        create_charge.sync_detailed(
            client=client,
            body=CreateCharge(order_id=later, attempt=1, buyer_account_id=buyer.id, seller_account_id=seller.id,
                              amount="20.00", currency=Currency.USD, capture=False),
            idempotency_key=f"{later}:1",
        ),
        HTTPStatus.CREATED,
        Charge,
    )
    assert authorized.status == ChargeStatus.AUTHORIZED and authorized.transaction_id is None
    wallet = expect(get_account.sync_detailed(buyer.id, client=client), HTTPStatus.OK, Account)
    assert (wallet.available, wallet.pending, wallet.posted) == ("65.00", "20.00", "85.00"), wallet
    shipped = capture_charge.sync_detailed(
        authorized.id, client=client, body=CaptureCharge(reference=f"{later}:ship", amount="15.00"),
        idempotency_key=f"{later}:ship",
    )
    captured = expect(shipped, HTTPStatus.OK, Charge)
    assert captured.status == ChargeStatus.SUCCEEDED and captured.amount == "15.00"
    assert balance(client, buyer.id) == Decimal("70.00")
    assert balance(client, seller.id) == Decimal("40.50")
    # Cancelled before shipment: the void gives everything held back.
    cancelled = f"{order}-cancelled"
    to_void = expect(
        create_charge.sync_detailed(
            client=client,
            body=CreateCharge(order_id=cancelled, attempt=1, buyer_account_id=buyer.id, seller_account_id=seller.id,
                              amount="5.00", currency=Currency.USD, capture=False),
            idempotency_key=f"{cancelled}:1",
        ),
        HTTPStatus.CREATED,
        Charge,
    )
    assert balance(client, buyer.id) == Decimal("65.00")
    voided = void_charge.sync_detailed(
        to_void.id, client=client, body=VoidCharge(reference=f"{cancelled}:cancel"), idempotency_key=f"{cancelled}:cancel"
    )
    assert expect(voided, HTTPStatus.OK, Charge).status == ChargeStatus.VOIDED
    assert balance(client, buyer.id) == Decimal("70.00")
    problem(
        capture_charge.sync_detailed(
            to_void.id, client=client, body=CaptureCharge(reference=f"{cancelled}:ship"), idempotency_key=f"{cancelled}:ship"
        ),
        HTTPStatus.CONFLICT,
        ProblemCode.CHARGE_NOT_AUTHORIZED,
    )

    # On a card the issuer holds the amount (a manual capture at the provider); the capture
    # takes what shipped from the provider, and only then does the ledger book it.
    card_later = f"{order}-card-later"
    card_body = CreateCharge(order_id=card_later, attempt=1, payment_method="pm_card_visa",
                             seller_account_id=seller.id, amount="10.00", currency=Currency.USD, capture=False)
    for _ in range(20):
        held_card = create_charge.sync_detailed(client=client, body=card_body, idempotency_key=f"{card_later}:1")
        if held_card.status_code != HTTPStatus.ACCEPTED:
            break
    card_auth = expect(held_card, HTTPStatus.CREATED, Charge)
    assert card_auth.status == ChargeStatus.AUTHORIZED and card_auth.transaction_id is None
    assert balance(client, seller.id) == Decimal("40.50")
    for _ in range(20):
        card_shipped = capture_charge.sync_detailed(
            card_auth.id, client=client, body=CaptureCharge(reference=f"{card_later}:ship", amount="8.00"),
            idempotency_key=f"{card_later}:ship",
        )
        if card_shipped.status_code != HTTPStatus.ACCEPTED:
            break
    card_captured = expect(card_shipped, HTTPStatus.OK, Charge)
    assert card_captured.status == ChargeStatus.SUCCEEDED and card_captured.amount == "8.00"
    assert balance(client, seller.id) == Decimal("48.50")

    # Release the hold: the stock is available again.
    released = release_reservation.sync_detailed(held.id, client=client, idempotency_key=f"{order}:{sku}:release")
    assert expect(released, HTTPStatus.OK, Reservation).status == ReservationStatus.RELEASED
    stock = expect(get_sku.sync_detailed(sku, client=client), HTTPStatus.OK, Sku)
    assert (stock.on_hand, stock.reserved, stock.available) == (10, 0, 10)

    # Errors are typed problems.
    problem(get_account.sync_detailed(uuid.uuid4(), client=client), HTTPStatus.NOT_FOUND, ProblemCode.ACCOUNT_NOT_FOUND)
    anonymous = AuthenticatedClient(base_url=os.environ["LEDGER_URL"], token="lk_not_a_key")
    problem(get_account.sync_detailed(buyer.id, client=anonymous), HTTPStatus.UNAUTHORIZED, ProblemCode.UNAUTHORIZED)

    print("python walk-through: purchase, replay, entries paged, refund, statement (JSON and CSV), card charge, authorize and capture (wallet and card), void, balances as documented")


if __name__ == "__main__":
    main()
    sys.exit(0)
