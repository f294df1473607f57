// The purchase of docs/walkthrough.md, through a TypeScript client: types generated from
// the committed spec by openapi-typescript (ledger.d.ts, next to this file
// when tests/contract/run.sh runs it) and the openapi-fetch client. Compiled
// with tsc --strict first, then run against a live server with LEDGER_URL and
// LEDGER_KEY set. Asserts effects (balances, the replayed response, entries).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

import createClient from "openapi-fetch";

import type { components, paths } from "./ledger.js";

type Schemas = components["schemas"];
type Problem = Schemas["Problem"];
type ProblemCode = Schemas["ProblemCode"];

const baseUrl = process.env.LEDGER_URL;
const key = process.env.LEDGER_KEY;
if (!baseUrl || !key) throw new Error("set LEDGER_URL and LEDGER_KEY");

const client = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${key}` } });

interface Outcome<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** The body of a response that must have `status`. */
function ok<T>(r: Outcome<T>, status: number): T {
  assert.equal(r.response.status, status, `expected ${status}, got ${r.response.status}: ${JSON.stringify(r.error)}`);
  assert.ok(r.data !== undefined);
  return r.data;
}

/** The problem of a response that must have `status` and `code`. */
function problem(r: Outcome<unknown>, status: number, code: ProblemCode): Problem {
  assert.equal(r.response.status, status, `expected ${status}, got ${r.response.status}`);
  assert.equal(r.response.headers.get("content-type"), "application/problem+json");
  const p = r.error as Problem;
  assert.equal(p.code, code, p.detail);
  assert.equal(p.status, status);
  return p;
}

async function balance(id: string): Promise<string> {
  const r = await client.GET("/v1/accounts/{id}", { params: { path: { id } } });
  return ok(r, 200).balance;
}

const run = randomUUID().slice(0, 8);
const order = `order-${run}`;
const sku = `mug-${run}`;

// 1. Accounts. External funds may go negative; the others may not.
async function account(name: string, allowNegative = false): Promise<Schemas["Account"]> {
  const r = await client.POST("/v1/accounts", {
    params: { header: { "Idempotency-Key": `acct:${name}:${run}` } },
    body: { reference: `${name}-${run}`, currency: "USD", allow_negative: allowNegative },
  });
  const acct = ok(r, 201);
  assert.equal(r.response.headers.get("location"), `/v1/accounts/${acct.id}`);
  assert.equal(acct.balance, "0.00");
  return acct;
}
const ext = await account("card-funding", true);
const buyer = await account("buyer");
const seller = await account("seller");
const platform = await account("platform");

// 2. Fund the buyer's wallet.
const fund = await client.POST("/v1/transfers", {
  params: { header: { "Idempotency-Key": `fund:${run}:1` } },
  body: { source_account_id: ext.id, destination_account_id: buyer.id, amount: "100.00", currency: "USD" },
});
assert.equal(ok(fund, 201).amount, "100.00");
assert.equal(await balance(buyer.id), "100.00");
assert.equal(await balance(ext.id), "-100.00");

// 3. Restock, then hold one mug for the order.
const restocked = await client.POST("/v1/skus/{sku}/restocks", {
  params: { path: { sku }, header: { "Idempotency-Key": `restock:${run}` } },
  body: { quantity: 10 },
});
assert.equal(ok(restocked, 201).available, 10);
const reserved = await client.POST("/v1/reservations", {
  params: { header: { "Idempotency-Key": `${order}:${sku}` } },
  body: { order_id: order, sku, quantity: 1 },
});
const hold = ok(reserved, 201);
assert.equal(hold.status, "held");
const stock = ok(await client.GET("/v1/skus/{sku}", { params: { path: { sku } } }), 200);
assert.deepEqual([stock.on_hand, stock.reserved, stock.available], [10, 1, 9]);

// 4. Charge the order, attempt 1: buyer -25.00, seller +22.50, platform +2.50.
const chargeBody: Schemas["CreateCharge"] = {
  order_id: order,
  attempt: 1,
  buyer_account_id: buyer.id,
  seller_account_id: seller.id,
  amount: "25.00",
  currency: "USD",
  platform_fee: { account_id: platform.id, amount: "2.50" },
};
const chargeKey = { header: { "Idempotency-Key": `${order}:1` } };
const first = await client.POST("/v1/charges", { params: chargeKey, body: chargeBody, parseAs: "text" });
assert.equal(first.response.status, 201);
assert.equal(first.response.headers.get("idempotent-replayed"), null);
const firstText = first.data ?? "";
const charge = JSON.parse(firstText) as Schemas["Charge"];
assert.equal(charge.status, "succeeded");
assert.equal(charge.platform_fee?.amount, "2.50");
assert.equal(await balance(buyer.id), "75.00");
assert.equal(await balance(seller.id), "22.50");
assert.equal(await balance(platform.id), "2.50");

// 5. The network failed and the storefront retries: same key, same body.
const retry = await client.POST("/v1/charges", { params: chargeKey, body: chargeBody, parseAs: "text" });
assert.equal(retry.response.status, 201);
assert.equal(retry.response.headers.get("idempotent-replayed"), "true");
assert.equal(retry.data, firstText, "a replay is byte for byte the first answer");
assert.equal(await balance(buyer.id), "75.00");

// The same key with another request is refused and writes nothing.
problem(
  await client.POST("/v1/charges", { params: chargeKey, body: { ...chargeBody, amount: "26.00" } }),
  409,
  "idempotency_key_reused",
);
// A new key for the same order attempt finds the existing charge: no second effect.
const late = await client.POST("/v1/charges", {
  params: { header: { "Idempotency-Key": `${order}:1:late` } },
  body: chargeBody,
});
assert.equal(ok(late, 200).id, charge.id);
assert.equal(late.response.headers.get("natural-key-replayed"), "true");
assert.equal(await balance(buyer.id), "75.00");

// 6. Balances and the buyer's entries.
const entries = ok(await client.GET("/v1/accounts/{id}/entries", { params: { path: { id: buyer.id } } }), 200);
assert.deepEqual(
  entries.data.map((e) => [e.kind, e.amount]),
  [
    ["charge", "-25.00"],
    ["transfer", "100.00"],
  ],
);
// One entry a page, newest first: the pages are the list, no entry missed or repeated.
const page1 = ok(
  await client.GET("/v1/accounts/{id}/entries", { params: { path: { id: buyer.id }, query: { limit: 1 } } }),
  200,
);
assert.ok(page1.has_more);
const newest = page1.data[0]?.id;
assert.ok(newest);
const page2 = ok(
  await client.GET("/v1/accounts/{id}/entries", {
    params: { path: { id: buyer.id }, query: { limit: 1, starting_after: newest } },
  }),
  200,
);
assert.deepEqual(
  [...page1.data, ...page2.data].map((e) => e.id),
  entries.data.map((e) => e.id),
);
const charges = ok(await client.GET("/v1/charges", { params: { query: { order_id: order } } }), 200);
assert.deepEqual(
  charges.data.map((c) => c.id),
  [charge.id],
);

// 7. A partial refund: the buyer gets 10.00 back, seller and platform return their shares.
const refunded = await client.POST("/v1/charges/{id}/refunds", {
  params: { path: { id: charge.id }, header: { "Idempotency-Key": `${order}:refund:1` } },
  body: { reference: `${order}:refund:1`, amount: "10.00" },
});
const refund = ok(refunded, 201);
assert.equal(refund.amount, "10.00");
assert.equal(refund.reference, `${order}:refund:1`);
assert.equal(await balance(buyer.id), "85.00");
assert.equal(await balance(seller.id), "13.50");
assert.equal(await balance(platform.id), "1.50");
const after = ok(await client.GET("/v1/charges/{id}", { params: { path: { id: charge.id } } }), 200);
assert.equal(after.refunded_amount, "10.00");
assert.equal(after.status, "partially_refunded");
// The refund asked again under another key: its reference names the refund already made.
const again = await client.POST("/v1/charges/{id}/refunds", {
  params: { path: { id: charge.id }, header: { "Idempotency-Key": `${order}:refund:1:again` } },
  body: { reference: `${order}:refund:1`, amount: "10.00" },
});
assert.equal(ok(again, 200).id, refund.id);
assert.equal(again.response.headers.get("natural-key-replayed"), "true");
assert.equal(await balance(buyer.id), "85.00");

// 8. The buyer's statement, from before the account existed until now: JSON, and the
// same as CSV. An instant is read once it is settled (a second or so); until then the
// answer is 409 `as_of_too_recent`, to ask again.
const period = {
  from: new Date(Date.parse(buyer.created_at) - 1000).toISOString(),
  to: new Date().toISOString(),
};
const statementOf = () =>
  client.GET("/v1/accounts/{id}/statement", { params: { path: { id: buyer.id }, query: period } });
let read = await statementOf();
for (let i = 0; i < 50 && read.response.status === 409; i++) {
  problem(read, 409, "as_of_too_recent");
  await new Promise((resolve) => setTimeout(resolve, 200));
  read = await statementOf();
}
// the 200 is JSON or CSV by the document; JSON without `format`
const statement = ok(read, 200) as Schemas["Statement"];
assert.deepEqual(
  statement.entries.map((e) => [e.kind, e.amount]),
  [
    ["transfer", "100.00"],
    ["charge", "-25.00"],
    ["refund", "10.00"],
  ],
);
assert.equal(Number(statement.opening.available), 0);
assert.equal(statement.closing.available, "85.00");
assert.equal(statement.entries.at(-1)?.balance, statement.closing.available);
const csv = await client.GET("/v1/accounts/{id}/statement", {
  params: { path: { id: buyer.id }, query: { ...period, format: "csv" } },
  parseAs: "text",
});
assert.equal(csv.response.status, 200);
assert.ok(csv.response.headers.get("content-type")?.startsWith("text/csv"));
const lines = String(csv.data).trim().split("\n").map((line) => line.split(","));
const header = lines[0] ?? [];
const column = (name: string) => header.indexOf(name);
const rows = lines.filter((l) => l[0] === "entry");
assert.deepEqual(
  rows.map((l) => [l[column("entry_id")], l[column("amount")], l[column("available")]]),
  statement.entries.map((e) => [e.id, e.amount, e.balance]),
);
assert.deepEqual(lines.at(-1)?.slice(0, 1), ["closing"]);
assert.equal(lines.at(-1)?.[column("available")], "85.00");

// Declines are typed problems: the buyer cannot pay for a second, larger order.
problem(
  await client.POST("/v1/charges", {
    params: { header: { "Idempotency-Key": `${order}-2:1` } },
    body: { ...chargeBody, order_id: `${order}-2`, amount: "500.00" },
  }),
  402,
  "insufficient_funds",
);
assert.equal(await balance(buyer.id), "85.00");
problem(
  await client.GET("/v1/accounts/{id}", { params: { path: { id: randomUUID() } } }),
  404,
  "account_not_found",
);

// A card charge through the payment provider (the fake one in tests): the money
// comes from the provider clearing account. 202 means `processing`: the
// provider's answer is not known yet; the same request, same key, until final.
const cardOrder = `${order}-card`;
const cardBody = {
  order_id: cardOrder,
  attempt: 1,
  payment_method: "pm_card_visa",
  seller_account_id: seller.id,
  amount: "12.00",
  currency: "USD" as const,
};
let paid = await client.POST("/v1/charges", { params: { header: { "Idempotency-Key": `${cardOrder}:1` } }, body: cardBody });
for (let i = 0; i < 20 && paid.response.status === 202; i++) {
  paid = await client.POST("/v1/charges", { params: { header: { "Idempotency-Key": `${cardOrder}:1` } }, body: cardBody });
}
const card = ok(paid, 201);
assert.equal(card.status, "succeeded");
assert.equal(card.payment_method, "pm_card_visa");
assert.ok(card.provider_payment_id?.startsWith("pi_"));
assert.equal(await balance(seller.id), "25.50");
problem(
  await client.POST("/v1/charges", {
    params: { header: { "Idempotency-Key": `${order}-declined:1` } },
    body: { ...cardBody, order_id: `${order}-declined`, payment_method: "pm_card_chargeDeclined" },
  }),
  402,
  "card_declined",
);

// Authorize at checkout, capture at shipment: the amount is held on the buyer's
// wallet (`pending`, no longer `available`) until the capture takes what
// shipped; the rest goes back. A cancelled order's void gives it all back.
const later = `${order}-later`;
const authorized = ok(
  await client.POST("/v1/charges", {
    params: { header: { "Idempotency-Key": `${later}:1` } },
    body: { ...chargeBody, order_id: later, amount: "20.00", capture: false },
  }),
  201,
);
assert.equal(authorized.status, "authorized");
const wallet = ok(await client.GET("/v1/accounts/{id}", { params: { path: { id: buyer.id } } }), 200);
assert.deepEqual([wallet.available, wallet.pending, wallet.posted], ["65.00", "20.00", "85.00"]);
const captured = ok(
  await client.POST("/v1/charges/{id}/capture", {
    params: { path: { id: authorized.id }, header: { "Idempotency-Key": `${later}:ship` } },
    body: { reference: `${later}:ship`, amount: "15.00" },
  }),
  200,
);
assert.deepEqual([captured.status, captured.amount], ["succeeded", "15.00"]);
assert.equal(await balance(buyer.id), "70.00");
const toVoid = ok(
  await client.POST("/v1/charges", {
    params: { header: { "Idempotency-Key": `${order}-cancelled:1` } },
    body: { ...chargeBody, order_id: `${order}-cancelled`, amount: "5.00", capture: false },
  }),
  201,
);
assert.equal(await balance(buyer.id), "65.00");
const voided = ok(
  await client.POST("/v1/charges/{id}/void", {
    params: { path: { id: toVoid.id }, header: { "Idempotency-Key": `${order}-cancelled:cancel` } },
    body: { reference: `${order}-cancelled:cancel` },
  }),
  200,
);
assert.equal(voided.status, "voided");
assert.equal(await balance(buyer.id), "70.00");

// On a card the issuer holds the amount (a manual capture at the provider);
// the capture takes what shipped from the provider, and only then does the
// ledger book it. 202 (`processing`, `capturing`): the same request again.
const cardLater = `${order}-card-later`;
const cardHold = { ...cardBody, order_id: cardLater, amount: "10.00", capture: false };
let held = await client.POST("/v1/charges", { params: { header: { "Idempotency-Key": `${cardLater}:1` } }, body: cardHold });
for (let i = 0; i < 20 && held.response.status === 202; i++) {
  held = await client.POST("/v1/charges", { params: { header: { "Idempotency-Key": `${cardLater}:1` } }, body: cardHold });
}
const cardAuth = ok(held, 201);
assert.deepEqual([cardAuth.status, cardAuth.transaction_id], ["authorized", null]);
const sellerBefore = await balance(seller.id); // nothing booked for a card hold
const ship = {
  params: { path: { id: cardAuth.id }, header: { "Idempotency-Key": `${cardLater}:ship` } },
  body: { reference: `${cardLater}:ship`, amount: "8.00" },
};
let shipped = await client.POST("/v1/charges/{id}/capture", ship);
for (let i = 0; i < 20 && shipped.response.status === 202; i++) {
  shipped = await client.POST("/v1/charges/{id}/capture", ship);
}
const cardCaptured = ok(shipped, 200);
assert.deepEqual([cardCaptured.status, cardCaptured.amount], ["succeeded", "8.00"]);
assert.equal(await balance(seller.id), (Number(sellerBefore) + 8).toFixed(2));

console.log("typescript walk-through: purchase, replay, entries paged, refund, statement (JSON and CSV), card charge, authorize and capture (wallet and card), void, balances as documented");
