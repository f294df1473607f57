//! The long-running roles and how they start.

use deadpool_postgres::Pool;

use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::{checkpointer, completer, email, expirer, inventory, relay, webhooks};

/// The long-running workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Publishes the outbox to RabbitMQ (at least once).
    Relay,
    /// Commits reservations of paid orders (at least once, inbox-deduplicated),
    /// and purges the inbox.
    Inventory,
    /// Sends order confirmation emails (at most once).
    Email,
    /// Finishes card charges left `processing` at the payment provider.
    Completer,
    /// Voids authorizations past their deadline, releases reservations past
    /// theirs, and moves the history horizon (balance checkpoints).
    Expirer,
    /// Delivers events to the tenants' webhook endpoints (at least once).
    Webhooks,
}

/// Starts each role's loops on the runtime; they run until `shutdown`.
pub fn spawn(config: &Config, pool: &Pool, roles: &[Role], shutdown: &Shutdown) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for role in roles {
        let (c, p, s) = (config.clone(), pool.clone(), shutdown.clone());
        match role {
            Role::Relay => tasks.spawn(relay::run(c, p, s)),
            Role::Inventory => {
                let every = std::time::Duration::from_secs(300);
                tasks.spawn(service::purge::run(
                    p.clone(),
                    service::purge::Target::Inbox,
                    c.retention.inbox(),
                    every,
                    s.clone(),
                ));
                tasks.spawn(inventory::run(c, p, s))
            }
            Role::Email => tasks.spawn(email::run(c, p, s)),
            Role::Completer => tasks.spawn(completer::run(c, p, s)),
            Role::Expirer => {
                tasks.spawn(checkpointer::run(p.clone(), s.clone()));
                tasks.spawn(expirer::run(c, p, s))
            }
            Role::Webhooks => {
                let wake = webhooks::Wake::default();
                tasks.spawn(webhooks::deliver(c.clone(), p.clone(), s.clone(), wake.clone()));
                tasks.spawn(webhooks::run(c, p, s, wake))
            }
        };
    }
    tasks
}
