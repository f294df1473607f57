//! Faults: armed per request through the admin API (for the next N matching
//! requests or events), or drawn from a seeded generator at configured rates.
//! Armed faults win over random ones. Faults apply to writes that execute
//! (not to replays of a stored result) and to webhook events as they are made.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::settings::RandomFaults;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// 500 `api_error` before anything is charged; stored for the key.
    ErrorBeforeCharge,
    /// Charge, store, then close the connection with no answer.
    DropAfterCharge,
    /// Charge, store, then send the status, the headers and half the body,
    /// and close the connection: an incomplete response.
    CutAfterCharge,
    /// Charge, store, then hold the connection (past the client's timeout)
    /// and close it with no answer. The key replays at once.
    HangAfterCharge,
    /// Charge, store, answer late; the key stays in flight (409) meanwhile.
    SlowResponse,
    /// Deliver the event's webhooks late.
    WebhookLate,
    /// Deliver the event's webhooks twice (same event id).
    WebhookTwice,
    /// Hold the event's webhooks until a later event has been delivered.
    WebhookOutOfOrder,
    /// Create the refund `pending` instead of `succeeded`, as card refunds
    /// sometimes are; it settles through `/_fake/refunds/{id}/succeed` or
    /// `/fail`. Its amount counts as refunded meanwhile.
    RefundPending,
}

impl FaultKind {
    /// What happens to the request's answer and connection.
    fn is_request(self) -> bool {
        matches!(
            self,
            Self::ErrorBeforeCharge
                | Self::DropAfterCharge
                | Self::CutAfterCharge
                | Self::HangAfterCharge
                | Self::SlowResponse
        )
    }
}

/// `POST /_fake/faults`.
#[derive(Debug, Clone, Deserialize)]
pub struct ArmRequest {
    pub kind: FaultKind,
    /// How many matching requests (or events) it applies to.
    #[serde(default = "one")]
    pub count: u32,
    /// Applies only where the metadata holds all of these pairs (for a refund,
    /// the payment's metadata overlaid with the refund's).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Overrides the configured delay of slow, hang and late faults.
    pub delay_ms: Option<u64>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize)]
pub struct Armed {
    pub id: u64,
    pub kind: FaultKind,
    pub remaining: u32,
    pub metadata: BTreeMap<String, String>,
    pub delay_ms: Option<u64>,
}

/// What happens to one executed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFault {
    ErrorBeforeCharge,
    Drop,
    Cut,
    Hang(Duration),
    Slow(Duration),
}

/// What happens to one event's deliveries.
#[derive(Debug, Clone, Copy, Default)]
pub struct WebhookFaults {
    pub late: Option<Duration>,
    pub twice: bool,
    pub out_of_order: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Delays {
    pub slow: Duration,
    pub hang: Duration,
    pub webhook_late: Duration,
}

pub struct Faults {
    armed: Vec<Armed>,
    next_id: u64,
    random: RandomFaults,
    rng: StdRng,
    delays: Delays,
    applied: BTreeMap<FaultKind, u64>,
}

impl Faults {
    pub fn new(random: RandomFaults, delays: Delays) -> Self {
        let rng = StdRng::seed_from_u64(random.seed);
        Self { armed: Vec::new(), next_id: 1, random, rng, delays, applied: BTreeMap::new() }
    }

    pub fn arm(&mut self, request: ArmRequest) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.armed.push(Armed {
            id,
            kind: request.kind,
            remaining: request.count,
            metadata: request.metadata,
            delay_ms: request.delay_ms,
        });
        id
    }

    /// Disarms everything and sets every random rate to zero.
    pub fn reset(&mut self) -> usize {
        let disarmed = self.armed.len();
        self.armed.clear();
        self.set_random(RandomFaults { seed: self.random.seed, ..RandomFaults::none() });
        disarmed
    }

    pub fn set_random(&mut self, random: RandomFaults) {
        self.rng = StdRng::seed_from_u64(random.seed);
        self.random = random;
    }

    pub fn armed(&self) -> &[Armed] {
        &self.armed
    }

    pub fn random(&self) -> &RandomFaults {
        &self.random
    }

    pub fn applied(&self) -> &BTreeMap<FaultKind, u64> {
        &self.applied
    }

    /// The fault for a write about to execute, if any.
    pub fn for_request(&mut self, metadata: &BTreeMap<String, String>) -> Option<RequestFault> {
        let (kind, delay_ms) = match self.take_armed(metadata, FaultKind::is_request) {
            Some(found) => found,
            None => (self.draw_request_kind()?, None),
        };
        *self.applied.entry(kind).or_default() += 1;
        let delay = |default: Duration| delay_ms.map_or(default, Duration::from_millis);
        Some(match kind {
            FaultKind::ErrorBeforeCharge => RequestFault::ErrorBeforeCharge,
            FaultKind::DropAfterCharge => RequestFault::Drop,
            FaultKind::CutAfterCharge => RequestFault::Cut,
            FaultKind::HangAfterCharge => RequestFault::Hang(delay(self.delays.hang)),
            FaultKind::SlowResponse => RequestFault::Slow(delay(self.delays.slow)),
            _ => unreachable!("only request faults are drawn for requests"),
        })
    }

    /// Whether a refund about to be created is left `pending`.
    pub fn refund_pending(&mut self, metadata: &BTreeMap<String, String>) -> bool {
        let armed = self.take_armed(metadata, |k| k == FaultKind::RefundPending).is_some();
        if armed {
            *self.applied.entry(FaultKind::RefundPending).or_default() += 1;
        }
        armed
    }

    /// The faults for one event's deliveries.
    pub fn for_event(&mut self, metadata: &BTreeMap<String, String>) -> WebhookFaults {
        let mut faults = WebhookFaults::default();
        for kind in [FaultKind::WebhookLate, FaultKind::WebhookTwice, FaultKind::WebhookOutOfOrder] {
            let armed = self.take_armed(metadata, |k| k == kind);
            let rate = match kind {
                FaultKind::WebhookLate => self.random.webhook_late,
                FaultKind::WebhookTwice => self.random.webhook_twice,
                _ => self.random.webhook_out_of_order,
            };
            let delay_ms = match armed {
                Some((_, delay_ms)) => delay_ms,
                None if rate > 0.0 && self.rng.random::<f64>() < rate => None,
                None => continue,
            };
            *self.applied.entry(kind).or_default() += 1;
            match kind {
                FaultKind::WebhookLate => {
                    faults.late = Some(delay_ms.map_or(self.delays.webhook_late, Duration::from_millis))
                }
                FaultKind::WebhookTwice => faults.twice = true,
                _ => faults.out_of_order = true,
            }
        }
        faults
    }

    fn take_armed(
        &mut self,
        metadata: &BTreeMap<String, String>,
        wanted: impl Fn(FaultKind) -> bool,
    ) -> Option<(FaultKind, Option<u64>)> {
        let index = self
            .armed
            .iter()
            .position(|armed| wanted(armed.kind) && armed.metadata.iter().all(|(k, v)| metadata.get(k) == Some(v)))?;
        let armed = &mut self.armed[index];
        let found = (armed.kind, armed.delay_ms);
        armed.remaining -= 1;
        if armed.remaining == 0 {
            self.armed.remove(index);
        }
        Some(found)
    }

    /// One draw per executed write while any request rate is set, so the same
    /// seed and request order give the same faults.
    fn draw_request_kind(&mut self) -> Option<FaultKind> {
        let r = &self.random;
        let rates = [
            (FaultKind::ErrorBeforeCharge, r.error_before_charge),
            (FaultKind::DropAfterCharge, r.drop_after_charge),
            (FaultKind::CutAfterCharge, r.cut_after_charge),
            (FaultKind::HangAfterCharge, r.hang_after_charge),
            (FaultKind::SlowResponse, r.slow_response),
        ];
        if rates.iter().all(|(_, rate)| *rate == 0.0) {
            return None;
        }
        let mut x = self.rng.random::<f64>();
        for (kind, rate) in rates {
            if x < rate {
                return Some(kind);
            }
            x -= rate;
        }
        None
    }
}

impl RandomFaults {
    pub fn none() -> Self {
        Self {
            seed: 0,
            error_before_charge: 0.0,
            drop_after_charge: 0.0,
            cut_after_charge: 0.0,
            hang_after_charge: 0.0,
            slow_response: 0.0,
            webhook_late: 0.0,
            webhook_twice: 0.0,
            webhook_out_of_order: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delays() -> Delays {
        Delays { slow: Duration::from_secs(1), hang: Duration::from_secs(2), webhook_late: Duration::from_secs(3) }
    }

    fn meta(order: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("order_id".to_owned(), order.to_owned()), ("tenant_id".to_owned(), "t".to_owned())])
    }

    #[test]
    fn armed_faults_target_matching_metadata_and_run_out() {
        let mut faults = Faults::new(RandomFaults::none(), delays());
        faults.arm(ArmRequest {
            kind: FaultKind::DropAfterCharge,
            count: 2,
            metadata: BTreeMap::from([("order_id".into(), "o-2".into())]),
            delay_ms: None,
        });
        assert_eq!(faults.for_request(&meta("o-1")), None);
        assert_eq!(faults.for_request(&meta("o-2")), Some(RequestFault::Drop));
        assert_eq!(faults.for_request(&meta("o-2")), Some(RequestFault::Drop));
        assert_eq!(faults.for_request(&meta("o-2")), None);
        assert_eq!(faults.applied()[&FaultKind::DropAfterCharge], 2);
    }

    #[test]
    fn a_pending_refund_fault_is_not_a_request_fault() {
        let mut faults = Faults::new(RandomFaults::none(), delays());
        faults.arm(ArmRequest {
            kind: FaultKind::RefundPending,
            count: 1,
            metadata: BTreeMap::from([("order_id".into(), "o-2".into())]),
            delay_ms: None,
        });
        assert_eq!(faults.for_request(&meta("o-2")), None);
        assert!(!faults.for_event(&meta("o-2")).twice);
        assert!(!faults.refund_pending(&meta("o-1")));
        assert!(faults.refund_pending(&meta("o-2")));
        assert!(!faults.refund_pending(&meta("o-2")), "spent");
        assert_eq!(faults.applied()[&FaultKind::RefundPending], 1);
    }

    #[test]
    fn random_faults_repeat_for_the_same_seed() {
        let random =
            RandomFaults { seed: 42, drop_after_charge: 0.3, error_before_charge: 0.2, ..RandomFaults::none() };
        let run = || {
            let mut faults = Faults::new(random.clone(), delays());
            (0..200).map(|_| faults.for_request(&meta("o"))).collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        let drops = first.iter().filter(|f| **f == Some(RequestFault::Drop)).count();
        let errors = first.iter().filter(|f| **f == Some(RequestFault::ErrorBeforeCharge)).count();
        assert!((30..90).contains(&drops), "{drops} drops in 200 at 0.3");
        assert!((15..65).contains(&errors), "{errors} errors in 200 at 0.2");
    }

    #[test]
    fn reset_disarms_and_stops_random_faults() {
        let mut faults = Faults::new(RandomFaults { seed: 1, slow_response: 1.0, ..RandomFaults::none() }, delays());
        faults.arm(ArmRequest { kind: FaultKind::WebhookTwice, count: 5, metadata: BTreeMap::new(), delay_ms: None });
        assert_eq!(faults.for_request(&meta("o")), Some(RequestFault::Slow(Duration::from_secs(1))));
        assert_eq!(faults.reset(), 1);
        assert_eq!(faults.for_request(&meta("o")), None);
        assert!(!faults.for_event(&meta("o")).twice);
    }
}
