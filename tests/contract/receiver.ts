// A storefront's webhook receiver: node:http and the `standardwebhooks` package.
//
// Each delivery is verified with the endpoint's signing secret on the raw body
// (re-serialised JSON would not verify); one that does not verify is refused
// with 400. Each event is applied once, deduplicated on `webhook-id`, which is
// the event's id on every retry and redelivery; a duplicate is answered 2xx
// too, or the sender would retry it.
//
//     WEBHOOK_SECRET=whsec_... RECEIVED_FILE=received.jsonl node dist/receiver.js PORT
//
// Each event applied, and each duplicate, is appended to RECEIVED_FILE as a JSON
// line: what the contract stage of tests/contract/run.sh checks. Compiled with
// tsc --strict there, like walkthrough.ts.
import { appendFileSync } from "node:fs";
import { createServer } from "node:http";

import { Webhook } from "standardwebhooks";

const { WEBHOOK_SECRET: secret, RECEIVED_FILE: received } = process.env;
const port = Number(process.argv[2]);
if (!secret || !received || !port) throw new Error("usage: WEBHOOK_SECRET=... RECEIVED_FILE=... node receiver.js PORT");

const webhook = new Webhook(secret);
// The ids applied. In a real storefront: a unique key in the database the
// event is applied to, written in the same transaction as its effect.
const applied = new Set<string>();

const record = (webhookId: string, type: string, outcome: "applied" | "duplicate"): void =>
  appendFileSync(received, JSON.stringify({ webhook_id: webhookId, type, outcome }) + "\n");

createServer(async (req, res) => {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const header = (name: string): string => String(req.headers[name] ?? "");
  const webhookId = header("webhook-id");
  let event: { type: string };
  try {
    event = webhook.verify(Buffer.concat(chunks), {
      "webhook-id": webhookId,
      "webhook-timestamp": header("webhook-timestamp"),
      "webhook-signature": header("webhook-signature"),
    }) as { type: string };
  } catch {
    res.writeHead(400).end();
    return;
  }
  if (applied.has(webhookId)) {
    record(webhookId, event.type, "duplicate");
  } else {
    // The storefront's effect goes here: mark the order paid, ...
    record(webhookId, event.type, "applied");
    applied.add(webhookId);
  }
  res.writeHead(204).end();
}).listen(port, "127.0.0.1"); // one event loop: the check and the add above never interleave
