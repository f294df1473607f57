"""A storefront's webhook receiver: the standard library's http.server and the
`standardwebhooks` package.

Each delivery is verified with the endpoint's signing secret on the raw body
(re-serialised JSON would not verify); one that does not verify is refused
with 400. Each event is applied once, deduplicated on `webhook-id`, which is
the event's id on every retry and redelivery; a duplicate is answered 2xx
too, or the sender would retry it.

    WEBHOOK_SECRET=whsec_... RECEIVED_FILE=received.jsonl python receiver.py PORT

Each event applied, and each duplicate, is appended to RECEIVED_FILE as a JSON
line: what the contract stage of tests/contract/run.sh checks.
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["WEBHOOK_SECRET"])
received = os.environ["RECEIVED_FILE"]
# The ids applied. In a real storefront: a unique key in the database the
# event is applied to, written in the same transaction as its effect.
applied: set[str] = set()


def record(webhook_id: str, event_type: str, outcome: str) -> None:
    with open(received, "a") as f:
        f.write(json.dumps({"webhook_id": webhook_id, "type": event_type, "outcome": outcome}) + "\n")


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            event = webhook.verify(body, dict(self.headers.items()))
        except (WebhookVerificationError, ValueError):  # ValueError: malformed headers
            self.send_response(400)
            self.end_headers()
            return
        webhook_id = self.headers["webhook-id"]
        if webhook_id in applied:
            record(webhook_id, event["type"], "duplicate")
        else:
            # The storefront's effect goes here: mark the order paid, ...
            record(webhook_id, event["type"], "applied")
            applied.add(webhook_id)
        self.send_response(204)
        self.end_headers()


if __name__ == "__main__":
    # One request at a time: the check and the add above never interleave.
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver).serve_forever()
