//! Webhook receivers for tests: real HTTP servers in the test process, on a
//! port of their own, that record every request the webhooks worker makes
//! (its `webhook-id`, timestamp, signature, body and what they answered) and
//! answer the way a storefront might: healthy, flaky, gone, hanging, or
//! closing the connection unanswered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use awc::http::StatusCode;

use crate::rng::Rng;

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: Vec<u8>,
    /// The status the receiver answered (`None`: it closed the connection).
    /// A hanging receiver answers after the worker has given up: its
    /// status reached no one.
    pub answered: Option<u16>,
}

impl Received {
    /// Whether one of the `webhook-signature` header's signatures is the
    /// one `secret` makes for this request.
    pub fn signed_by(&self, secret: &str) -> bool {
        let expected = service::signing::sign(secret, &self.id, self.timestamp, &self.body).unwrap();
        self.signature.split(' ').any(|s| s == expected)
    }

    /// Whether the body is the envelope of the event the `webhook-id` names.
    pub fn envelope_matches_id(&self) -> bool {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .is_ok_and(|envelope| envelope["message_id"] == self.id.as_str())
    }

    fn delivered(&self) -> bool {
        self.answered.is_some_and(|s| (200..300).contains(&s))
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    Ok,
    /// 500 to the first `n` attempts of each event, then 200.
    FailFirst(usize),
    /// 500 to the first attempts of each event, from none to `most`, as
    /// many as `seed` and the event id draw (the same for a given event on
    /// every run of a seed), then 200: flaky, yet sure to take an event
    /// within `most` + 1 attempts.
    FailFirstSome {
        most: usize,
        seed: u64,
    },
    /// This status, always.
    Always(u16),
    /// Answers only after this long (past the worker's timeout).
    Hang(Duration),
}

impl Behaviour {
    /// The status the `seen`-th attempt (from 0) of event `id` gets.
    fn status(self, id: &str, seen: usize) -> u16 {
        match self {
            Behaviour::Ok | Behaviour::Hang(_) => 200,
            Behaviour::FailFirst(n) if seen < n => 500,
            Behaviour::FailFirst(_) => 200,
            Behaviour::FailFirstSome { most, seed } => {
                let failures = Rng::new(seed ^ fnv1a(id.as_bytes())).below(most as u64 + 1) as usize;
                if seen < failures {
                    500
                } else {
                    200
                }
            }
            Behaviour::Always(status) => status,
        }
    }
}

/// FNV-1a: a hash that stays the same across runs and toolchains, so that
/// a seed replays the same failures.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// What a receiver saw of each event, once the requests are counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// The events it answered 2xx at least once: delivered.
    pub delivered: std::collections::BTreeSet<String>,
    /// Every event it got a request for, delivered or not.
    pub seen: std::collections::BTreeSet<String>,
    /// Requests beyond the first of their event: retries after a failed
    /// attempt, and duplicates (below) alike.
    pub repeats: u64,
    /// Requests of an event it had already answered 2xx: what at least
    /// once costs a receiver (it dedupes on `webhook-id`).
    pub after_delivered: u64,
    /// Requests whose signature does not verify with the secret given to
    /// [`Receiver::tally`], or whose body is not the event's envelope.
    pub bad: Vec<String>,
}

pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    handle: Option<actix_web::dev::ServerHandle>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            // the stop is sent now; its future only reports completion
            drop(handle.stop(false));
        }
    }
}

impl Receiver {
    pub async fn start(behaviour: Behaviour) -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let state = got.clone();
        let server = HttpServer::new(move || {
            let state = state.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let state = state.clone();
                async move {
                    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    let id = header("webhook-id");
                    // recorded before answering, with the answer decided under the
                    // same lock, so that the log's order is the order of the answers
                    let status = {
                        let mut got = state.lock().unwrap();
                        let seen = got.iter().filter(|r| r.id == id).count();
                        let status = behaviour.status(&id, seen);
                        got.push(Received {
                            id,
                            timestamp: header("webhook-timestamp").parse().unwrap_or(0),
                            signature: header("webhook-signature"),
                            body: body.to_vec(),
                            answered: Some(status),
                        });
                        status
                    };
                    match behaviour {
                        Behaviour::Ok => HttpResponse::Ok().body("thanks"),
                        Behaviour::FailFirst(_) | Behaviour::FailFirstSome { .. } if status == 500 => {
                            HttpResponse::InternalServerError().body("later")
                        }
                        Behaviour::FailFirst(_) | Behaviour::FailFirstSome { .. } => HttpResponse::Ok().finish(),
                        Behaviour::Always(status) => {
                            HttpResponse::build(StatusCode::from_u16(status).unwrap()).body("x".repeat(4096))
                        }
                        Behaviour::Hang(d) => {
                            actix_web::rt::time::sleep(d).await;
                            HttpResponse::Ok().finish()
                        }
                    }
                }
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Receiver { url: format!("http://127.0.0.1:{port}/hooks"), got, handle: Some(handle) }
    }

    /// A receiver that takes each connection and closes it at once, before
    /// any answer: what a crashing or misconfigured storefront looks like.
    pub fn closing() -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let counted = got.clone();
        // a thread of its own, which ends with the test process
        std::thread::spawn(move || {
            for socket in listener.incoming().flatten() {
                let closed = Received {
                    id: String::new(),
                    timestamp: 0,
                    signature: String::new(),
                    body: vec![],
                    answered: None,
                };
                counted.lock().unwrap().push(closed);
                drop(socket);
            }
        });
        Receiver { url: format!("http://127.0.0.1:{port}/hooks"), got, handle: None }
    }

    /// Every request so far, in the order they were answered.
    pub fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Requests per event id: a receiver that dedupes on `webhook-id`
    /// applies each key once.
    pub fn applied(&self) -> BTreeMap<String, usize> {
        let mut by_id = BTreeMap::new();
        for r in self.got() {
            *by_id.entry(r.id).or_insert(0) += 1;
        }
        by_id
    }

    /// The events delivered to it (answered 2xx) so far.
    pub fn delivered(&self) -> std::collections::BTreeSet<String> {
        self.got.lock().unwrap().iter().filter(|r| r.delivered()).map(|r| r.id.clone()).collect()
    }

    /// What it saw of each event, every request checked against the
    /// endpoint's signing `secret`.
    pub fn tally(&self, secret: &str) -> Tally {
        let mut tally = Tally::default();
        for r in self.got() {
            if !tally.seen.insert(r.id.clone()) {
                tally.repeats += 1;
            }
            if tally.delivered.contains(&r.id) {
                tally.after_delivered += 1;
            }
            if r.delivered() {
                tally.delivered.insert(r.id.clone());
            }
            if !r.signed_by(secret) || !r.envelope_matches_id() {
                tally.bad.push(r.id.clone());
            }
        }
        tally
    }
}
