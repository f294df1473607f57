//! One run of the benchmark: every HTTP workload of the table at every
//! concurrency, the messaging and growth figures, the duplicate-effect
//! count, the pgbench ceiling and yardstick; then the table, the JSON
//! results and the chart. Each workload is a module of its own (below); what
//! they share, and what they leave for the checks, is in `context`.

mod authorize_capture;
mod bad_keys;
mod card_charge;
mod card_latency;
mod context;
mod fairness;
mod locked_buyer;
mod new_charge;
mod purchase;
mod replay;
mod reservation;

use std::rc::Rc;

use serde_json::{json, Value};

use self::context::{At, Ctx, Workload};
use crate::error::Result;
use crate::load::{api, client, git_revision, round, setup, start_api, start_provider, Args, Figures, Http, Wrong};
use crate::{chart, growth, messaging, pgbench, webhooks};

/// The HTTP workloads, run in this order at each concurrency. The order
/// matters: the replays are the charges the new-charge workload just
/// created, the charges alone divide the batched rate, and the fairness
/// workloads compare with the new-charge figures at the same concurrency.
const WORKLOADS: &[Workload] = &[
    new_charge::BATCHED,
    new_charge::ALONE,
    replay::WORKLOAD,
    authorize_capture::WORKLOAD,
    card_charge::WORKLOAD,
    card_latency::WORKLOAD,
    reservation::WORKLOAD,
    purchase::WORKLOAD,
    locked_buyer::WORKLOAD,
    bad_keys::WORKLOAD,
];

/// Statistics for the planner before each step, as autovacuum keeps them
/// on a deployment (`docs/operations.md`: keep it on). Without them the
/// service's generic plans pick indexes by guesses as its tables grow: on a
/// server without autovacuum, the inventory worker's lookup of an order's
/// held reservations once walked every held reservation of the tenant for
/// each message (a step of minutes instead of seconds). (The yardstick's
/// statements read by primary key only: no plan of theirs needs them.)
async fn analyze(db_url: &str) -> Result<()> {
    let (db, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls).await?;
    actix_web::rt::spawn(conn);
    db.batch_execute("ANALYZE").await?;
    Ok(())
}

/// The whole benchmark against the database at `db_url`; `Ok(false)` when an
/// answer was wrong or an effect duplicated or missing.
pub(crate) async fn run(args: &Args, db_url: &str) -> Result<bool> {
    api(args, db_url, &["migrate"]);
    let key = api(args, db_url, &["create-tenant", "bench"]);
    let provider = start_provider(args)?;
    // The webhook step registers an endpoint on 127.0.0.1 (its receiver)
    // with this API; the setting touches nothing else a request does.
    let server = start_api(args, db_url, provider.url(), &key, &[("WEBHOOK_ALLOW_PRIVATE", "true")]).await?;
    // The same API with every charge alone (no group commit), side by side
    // with the batched one in the new-charge workload.
    let alone = start_api(args, db_url, provider.url(), &key, &[("CHARGE_BATCH_MAX", "1")]).await?;
    let http = Rc::new(Http { client: client(), base: server.base.clone(), auth: format!("Bearer {}", server.key) });
    let http_alone =
        Rc::new(Http { client: client(), base: alone.base.clone(), auth: format!("Bearer {}", alone.key) });
    eprintln!("setting up {} buyers, {} sellers, one platform-fee account", args.buyers, args.sellers);
    let accounts = Rc::new(setup(&http, args).await);
    crate::cpu::watch(vec![server.child.id(), alone.child.id()], Some(provider.pid()));

    let mut ctx = Ctx {
        args: args.clone(),
        db_url: db_url.to_owned(),
        provider_url: provider.url().to_owned(),
        http: http.clone(),
        http_alone,
        accounts: accounts.clone(),
        api_pid: server.child.id(),
        metrics: server.metrics.clone(),
        results: Vec::new(),
        fairness: Vec::new(),
        wrong_by: Vec::new(),
        created_total: 0,
        reserved_total: 0,
        rss_peak: 0,
        sample_answer: String::new(),
        group_commit: Vec::new(),
        replayable: Vec::new(),
    };
    for (n, &c) in args.concurrency.iter().enumerate() {
        for w in WORKLOADS {
            if matches!(w.at, At::First) && n > 0 {
                continue;
            }
            if !args.only.is_empty() && !args.only.iter().any(|o| w.name.starts_with(o.as_str())) {
                continue;
            }
            eprintln!("{}, concurrency {c}", w.name);
            analyze(db_url).await?;
            (w.run)(&mut ctx, c).await?;
        }
    }
    // The messaging pipeline, on the outbox the workloads above filled (no
    // relay ran during them), then live beside the API.
    let messaging = if args.no_messaging {
        None
    } else {
        analyze(db_url).await?;
        let mut m = messaging::run(args, db_url, http.clone(), accounts.clone()).await?;
        ctx.results.extend(m.purchases.take());
        ctx.reserved_total += m.reserved;
        ctx.created_total += m.charged;
        ctx.note_rss();
        ctx.wrong_by.push((messaging::PURCHASE_WORKLOAD.into(), messaging::LAG_CONCURRENCY, m.purchase_wrong));
        Some(m)
    };
    // Webhooks, alone: after the messaging step (its relay leaves the
    // outbox published), its workers stopped before the growth step.
    let webhooks = if args.no_messaging || args.no_webhooks {
        None
    } else {
        let clients = args.concurrency.iter().copied().max().unwrap_or(16);
        analyze(db_url).await?;
        let w = webhooks::run(args, db_url, http.clone(), accounts.clone(), clients).await?;
        ctx.results.push(w.figures());
        ctx.created_total += w.created;
        ctx.note_rss();
        ctx.wrong_by.push((webhooks::NAME.into(), clients, w.wrong));
        Some(w)
    };

    // Growth: new charges before and after seeding millions of ledger entries.
    let growth = if args.growth_entries > 0 { Some(growth::run(args, db_url, &http, &accounts).await?) } else { None };
    if let Some(g) = &growth {
        ctx.created_total += g.created;
        ctx.wrong_by.extend(g.wrong.iter().cloned());
        ctx.note_rss();
    }

    // What the workloads left for the checks and the report.
    let Ctx {
        results, fairness, wrong_by, created_total, reserved_total, rss_peak, sample_answer, group_commit, ..
    } = ctx;

    let server_key = server.key.clone();
    drop(server);
    drop(alone);
    drop(provider);

    // Duplicate effects: every 201 is one charge and one ledger transaction, no more.
    let (db, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls).await?;
    actix_web::rt::spawn(conn);
    let count = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.map(|r| r.get::<_, i64>(0)).unwrap_or(-1) }
    };
    let charges = count("SELECT count(*) FROM charges").await;
    let charge_txs = count("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await;
    let reservations = count("SELECT count(*) FROM reservations").await;
    let duplicates = (charges - created_total as i64).max(0)
        + (charge_txs - charges).max(0)
        + (reservations - reserved_total as i64).max(0);
    let missing = (created_total as i64 - charges).max(0) + (reserved_total as i64 - reservations).max(0);

    let mut limit: Vec<Figures> = Vec::new();
    let mut yardstick: Vec<Figures> = Vec::new();
    let mut profiles: Vec<(String, usize, Vec<pgbench::Statement>)> = Vec::new();
    if !args.no_pgbench {
        db.batch_execute(&pgbench::yardstick_setup_sql()).await?;
        // pgbench picks buyers and sellers by number, as the generator does.
        db.batch_execute("CREATE TABLE bench_pick (n int PRIMARY KEY, buyer uuid NOT NULL, seller uuid NOT NULL)")
            .await?;
        for (n, buyer) in accounts.buyers.iter().enumerate() {
            let seller = &accounts.sellers[n % accounts.sellers.len()];
            db.execute(
                "INSERT INTO bench_pick VALUES ($1, $2::text::uuid, $3::text::uuid)",
                &[&(n as i32), buyer, seller],
            )
            .await?;
        }
        let tenant: uuid::Uuid = db.query_one("SELECT id FROM tenants LIMIT 1", &[]).await?.get(0);
        let keyhash: String = ledger::tenants::hash_key(&server_key).iter().map(|b| format!("{b:02x}")).collect();
        let payload = json!({"message_id": uuid::Uuid::now_v7(), "type": "charge.succeeded", "version": 1,
            "tenant_id": tenant, "order_id": "o16-0-0", "occurred_at": "2026-11-23T00:00:00Z",
            "data": serde_json::from_str::<Value>(&sample_answer).unwrap_or(Value::Null)});
        let fixed = [
            ("tenant", tenant.to_string()),
            ("platform", accounts.platform.clone()),
            ("keyhash", format!("\\x{keyhash}")),
            ("retention", "86400".into()),
            ("attempt", "1".into()),
            ("kind", "charge".into()),
            ("currency", "USD".into()),
            ("legs", "{0,1,2}".into()),
            ("legamounts", "{-1.00,0.90,0.10}".into()),
            ("debits", "{-1.00}".into()),
            ("credits", "{0.90,0.10}".into()),
            ("amount", "1.00".into()),
            ("fee", "0.10".into()),
            ("email", "buyer@example.com".into()),
            ("event", "charge.succeeded".into()),
            ("payload", payload.to_string()),
            ("status", "201".into()),
            ("contenttype", "application/json".into()),
            ("headers", json!([["location", "/v1/charges/00000000-0000-0000-0000-000000000000"]]).to_string()),
            ("answer", sample_answer.clone()),
        ];
        for &c in &args.concurrency {
            // The server's free connection slots bound the clients (other
            // databases on a shared server hold some); the table says so.
            let free: i64 = db
                .query_one(
                    "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int \
                            - (SELECT count(*) FROM pg_stat_activity)::int - 2",
                    &[],
                )
                .await
                ?
                .get::<_, i32>(0)
                .into();
            let clients = c.min(free.max(1) as usize);
            eprintln!("pgbench, one charge's SQL, concurrency {c} ({clients} connections)");
            match pgbench::run(args.duration, args.warmup, c, clients, db_url, accounts.buyers.len(), &fixed).await {
                Ok((f, st)) => {
                    eprintln!("  {}", f.row());
                    profiles.push((f.workload.clone(), c, st));
                    limit.push(f);
                }
                Err(e) => eprintln!("  pgbench failed: {e}"),
            }
            eprintln!(
                "yardstick: a row-locked transfer over {} accounts, concurrency {c} ({clients} connections)",
                pgbench::YARDSTICK_ACCOUNTS
            );
            match pgbench::run_yardstick(args.duration, args.warmup, c, clients, db_url).await {
                Ok((f, st)) => {
                    eprintln!("  {}", f.row());
                    profiles.push((f.workload.clone(), c, st));
                    yardstick.push(f);
                }
                Err(e) => eprintln!("  yardstick failed: {e}"),
            }
        }
    }
    // Every HTTP workload over the yardstick and over pgbench running the
    // service's own statements, at the same concurrency.
    let over = |f: &Figures, base: &[Figures]| {
        base.iter().find(|b| b.concurrency == f.concurrency).map(|b| round(f.rps() / b.rps()))
    };
    let ratio_cell = |r: Option<f64>| r.map_or_else(|| format!("{:>7}", "-"), |r| format!("{r:>7.3}"));

    // The table.
    println!();
    println!(
        "{:<29} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7}",
        "workload", "conc", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "÷yard", "÷pgb"
    );
    let fair = fairness.iter().map(|f| &f.figures);
    for f in results.iter().chain(fair).chain(growth.iter().flat_map(|g| g.rows())) {
        println!("{} {} {}", f.row(), ratio_cell(over(f, &yardstick)), ratio_cell(over(f, &limit)));
    }
    for f in limit.iter().chain(yardstick.iter()) {
        println!("{} {}", f.row(), ratio_cell(over(f, &yardstick)));
    }
    if let Some(g) = &growth {
        for (c, ratio) in g.ratios() {
            println!(
                "new charge p99, {} entries ÷ before seeding, at concurrency {c}: {ratio:.2} (target ≤ 1.20)",
                g.seeded
            );
        }
        println!(
            "growth seeding: {} entries in {:.1} s, VACUUM ANALYZE {:.1} s, CHECKPOINT {:.1} s",
            g.seeded, g.seed_secs, g.vacuum_secs, g.checkpoint_secs
        );
        for (read, c, ratio) in g.history_ratios() {
            println!(
                "{read} p99, an account of {} entries among {} ÷ of {} among {}, at concurrency {c}: {ratio:.2} \
                 (target ≤ 1.20)",
                g.history_entries.1, g.entries_after, g.history_entries.0, g.entries_before
            );
        }
        println!("balance checkpoints over {} entries: {:.1} s", g.entries_after, g.checkpoints_secs);
        for (migration, secs) in &g.migrations {
            println!("migration {migration} on {} entries: {secs:.1} s", g.entries_after);
        }
    }
    // Fairness: each beside the plain new charges at its concurrency.
    for f in &fairness {
        for line in f.lines() {
            println!("{line}");
        }
    }
    let mut ratios = Vec::new();
    for l in &limit {
        if let Some(s) = results.iter().find(|f| f.workload == "new charge" && f.concurrency == l.concurrency) {
            let ratio = s.rps() / l.rps();
            println!("new charge ÷ pgbench at concurrency {}: {:.2}", l.concurrency, ratio);
            let yard = over(s, &yardstick);
            if let Some(y) = yard {
                println!("new charge ÷ yardstick at concurrency {}: {y:.3}", l.concurrency);
            }
            ratios.push(
                json!({"concurrency": l.concurrency, "pgbench": l.workload, "service_over_pgbench": round(ratio),
                               "service_over_yardstick": yard}),
            );
        }
    }
    // Best against best: each side at the concurrency it does best at (a
    // ratio at one concurrency can flatter either side).
    let mut best_ratios = Vec::new();
    if let Some(yard) = yardstick.iter().max_by(|a, b| a.rps().total_cmp(&b.rps())) {
        // each one's target, best against the yardstick's best
        for (name, target) in [("new charge", 0.6), ("purchase (res+charge)", 0.3)] {
            if let Some(b) = results.iter().filter(|f| f.workload == name).max_by(|a, b| a.rps().total_cmp(&b.rps())) {
                let ratio = b.rps() / yard.rps();
                println!(
                    "{name}, best ÷ yardstick best: {:.0}/s at {} ÷ {:.0}/s at {} = {ratio:.2} (target ≥ {target}: {})",
                    b.rps(),
                    b.concurrency,
                    yard.rps(),
                    yard.concurrency,
                    if ratio >= target { "met" } else { "not met" }
                );
                best_ratios.push(json!({"workload": name, "best": round(b.rps()), "at": b.concurrency,
                                        "yardstick_best": round(yard.rps()), "yardstick_at": yard.concurrency,
                                        "ratio": round(ratio)}));
            }
        }
    }
    // Group commit: the batches, where their time goes, and batched ÷ alone.
    println!();
    for (profile, over_alone) in &group_commit {
        println!("{}", profile.line());
        println!("new charge batched ÷ each alone at concurrency {}: {over_alone:.2}", profile.concurrency);
    }
    // Where the CPU goes: per request, in each workload's measured window.
    println!();
    println!("CPU per request (ms, user + system, from /proc), in each workload's measured window:");
    for f in results.iter().chain(fairness.iter().map(|f| &f.figures)) {
        if let Some(cpu) = &f.cpu {
            println!("  {:<29} {:>5}  {}", f.workload, f.concurrency, cpu.line(f.requests));
        }
    }
    // Where the time goes: pgbench's mean latency per statement.
    for (workload, c, statements) in &profiles {
        println!();
        println!("{workload} at {c}, mean ms per statement (pgbench -r):");
        for st in statements {
            println!("  {:>9.3}  {}", st.ms, st.sql);
        }
    }
    let mut wrong_total = Wrong::default();
    println!();
    for (w, c, wr) in &wrong_by {
        wrong_total.add(wr);
        println!(
            "wrong answers, {w} at {c}: {} (non-2xx {}, new not created {}, not replayed {}, replay differs {}, transport {})",
            wr.total(),
            wr.non_2xx,
            wr.not_created,
            wr.not_replayed,
            wr.replay_differs,
            wr.transport
        );
    }
    println!(
        "charges created (201): {created_total}; charges in the database: {charges}; charge transactions: {charge_txs}"
    );
    println!("reservations created (201): {reserved_total}; in the database: {reservations}");
    println!("duplicate effects: {duplicates}; missing effects: {missing}");
    println!("API peak RSS (VmHWM): {:.1} MiB", rss_peak as f64 / 1024.0);
    if let Some(m) = &messaging {
        println!();
        m.print();
    }
    // The webhook row is in the table; its other figures here.
    let webhooks_yard = results.iter().find(|f| f.workload == webhooks::NAME).and_then(|f| over(f, &yardstick));
    if let Some(w) = &webhooks {
        println!();
        w.print(webhooks_yard);
    }
    let messaging_wrong = messaging.as_ref().map_or(0, |m| m.wrong_total());
    let webhooks_wrong = webhooks.as_ref().map_or(0, |w| w.wrong_total());
    let ok = wrong_total.total() == 0 && duplicates == 0 && missing == 0 && messaging_wrong == 0 && webhooks_wrong == 0;
    println!("result: {}", if ok { "PASS" } else { "FAILED" });

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mut report = json!({
        "git_revision": git_revision(),
        "cores": cores,
        "concurrency": args.concurrency,
        "duration_secs": args.duration,
        "warmup_secs": args.warmup,
        "buyers": args.buyers,
        "sellers": args.sellers,
        "service": results.iter().map(|f| {
            let mut j = f.json();
            j["over_yardstick"] = json!(over(f, &yardstick));
            j["over_pgbench"] = json!(over(f, &limit));
            j
        }).collect::<Vec<_>>(),
        "pgbench": limit.iter().map(|f| {
            let mut j = f.json();
            j["over_yardstick"] = json!(over(f, &yardstick));
            j
        }).collect::<Vec<_>>(),
        "yardstick": yardstick.iter().map(Figures::json).collect::<Vec<_>>(),
        "pgbench_statement_ms": profiles.iter().map(|(w, c, st)| json!({"workload": w, "concurrency": c,
            "statements": st.iter().map(|s| json!({"ms": s.ms, "statement": s.sql})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "yardstick_accounts": pgbench::YARDSTICK_ACCOUNTS,
        "ratios": ratios,
        "best_over_yardstick_best": best_ratios,
        "group_commit": group_commit.iter().map(|(p, over_alone)| {
            let mut j = p.json();
            j["batched_over_alone"] = json!(round(*over_alone));
            j
        }).collect::<Vec<_>>(),
        "growth": growth.as_ref().map(growth::Growth::json),
        "fairness": fairness.iter().map(|f| {
            let mut j = f.json();
            j["figures"]["over_yardstick"] = json!(over(&f.figures, &yardstick));
            j["figures"]["over_pgbench"] = json!(over(&f.figures, &limit));
            j
        }).collect::<Vec<_>>(),
        "wrong_answers": wrong_by.iter().map(|(w, c, wr)| json!({"workload": w, "concurrency": c, "counts": wr.json()})).collect::<Vec<_>>(),
        "charges_created": created_total,
        "charges_in_db": charges,
        "reservations_created": reserved_total,
        "reservations_in_db": reservations,
        "duplicate_effects": duplicates,
        "missing_effects": missing,
        "api_peak_rss_mib": round(rss_peak as f64 / 1024.0),
        "messaging": messaging.as_ref().map(messaging::Report::json),
        "webhooks": webhooks.as_ref().map(|w| {
            let mut j = w.json();
            j["over_yardstick"] = json!(webhooks_yard);
            j
        }),
        "passed": ok,
    });
    // The growth step's charges are HTTP workloads too.
    if let (Some(g), Some(pairs)) = (&growth, report["growth"]["by_concurrency"].as_array_mut()) {
        for ((empty, grown), pair) in g.pairs.iter().zip(pairs.iter_mut()) {
            pair["empty"]["over_yardstick"] = json!(over(empty, &yardstick));
            pair["grown"]["over_yardstick"] = json!(over(grown, &yardstick));
        }
    }
    if let Some(dir) = std::path::Path::new(&args.out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report).unwrap())?;
    println!("written: {}", args.out);
    let svg = std::path::Path::new(&args.out).with_extension("svg");
    let svg = svg.to_string_lossy();
    chart::write(&report, &svg)?;
    println!("written: {svg}");
    Ok(ok)
}
