//! One run of the benchmark: every HTTP workload at every concurrency, the
//! messaging and growth figures, the duplicate-effect count, the pgbench
//! ceiling and yardstick; then the table, the JSON results and the chart.

use std::cell::Cell;
use std::rc::Rc;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::load::{
    api, check_created, client, closed_loop, git_revision, new_card_charge, new_charge, peak_rss_kib, purchase, round,
    setup, sku_for, start_api, start_provider, Args, Figures, Http, Sent, Wrong,
};
use crate::{batches, chart, growth, messaging, pgbench};

/// The whole benchmark against the database at `db_url`; `Ok(false)` when an
/// answer was wrong or an effect duplicated or missing.
pub(crate) async fn run(args: &Args, db_url: &str) -> Result<bool> {
    api(args, db_url, &["migrate"]);
    let key = api(args, db_url, &["create-tenant", "bench"]);
    let provider = start_provider(args)?;
    let server = start_api(args, db_url, provider.url(), &key, &[]).await?;
    // The same API with every charge alone (no group commit), side by side
    // with the batched one in the new-charge workload.
    let alone = start_api(args, db_url, provider.url(), &key, &[("CHARGE_BATCH_MAX", "1")]).await?;
    let http = Rc::new(Http { client: client(), base: server.base.clone(), auth: format!("Bearer {}", server.key) });
    let http_alone =
        Rc::new(Http { client: client(), base: alone.base.clone(), auth: format!("Bearer {}", alone.key) });
    eprintln!("setting up {} buyers, {} sellers, one platform-fee account", args.buyers, args.sellers);
    let accounts = Rc::new(setup(&http, args).await);

    let mut results: Vec<Figures> = Vec::new();
    let mut wrong_by: Vec<(String, usize, Wrong)> = Vec::new();
    let mut created_total = 0u64;
    let mut rss_peak = 0u64;
    let mut sample_answer = String::new();
    let mut reserved_total = 0u64;
    // (the batches of each new-charge workload, its rate over the same workload alone)
    let mut group_commit: Vec<(batches::Profile, f64)> = Vec::new();
    for &c in &args.concurrency {
        // 1. New charges: a fresh key and order per request, one hot platform-fee account.
        let (http2, acc) = (http.clone(), accounts.clone());
        let one = move |task: usize, seq: u64, _measured: bool| {
            new_charge(http2.clone(), acc.clone(), format!("o{c}-{task}-{seq}"), task, seq)
        };
        eprintln!("new charges, concurrency {c}");
        let scraped = batches::scrape(&http.client, &server.metrics).await?;
        let (f, w, sent) = closed_loop(args, "new charge", c, one).await;
        if sample_answer.is_empty() {
            if let Some(s) = sent.iter().find(|s| s.status == 201) {
                sample_answer = String::from_utf8_lossy(&s.answer).into_owned();
            }
        }
        created_total += sent.iter().filter(|s| s.status == 201).count() as u64;
        rss_peak = rss_peak.max(peak_rss_kib(server.child.id()).unwrap_or(0));
        eprintln!("  {}", f.row());
        let profile = batches::Profile::between(c, &scraped, &batches::scrape(&http.client, &server.metrics).await?);
        eprintln!("  {}", profile.line());
        group_commit.push((profile, f.rps()));
        results.push(f);
        wrong_by.push(("new charge".into(), c, w));

        // 1b. The same, each charge alone in its transaction (CHARGE_BATCH_MAX=1).
        let (http2, acc) = (http_alone.clone(), accounts.clone());
        let one = move |task: usize, seq: u64, _measured: bool| {
            new_charge(http2.clone(), acc.clone(), format!("a{c}-{task}-{seq}"), task, seq)
        };
        eprintln!("new charges, each alone, concurrency {c}");
        let (f, w, sent_alone) = closed_loop(args, "new charge (alone)", c, one).await;
        created_total += sent_alone.iter().filter(|s| s.status == 201).count() as u64;
        eprintln!("  {}", f.row());
        if let Some((_, batched)) = group_commit.last_mut() {
            *batched /= f.rps();
        }
        results.push(f);
        wrong_by.push(("new charge (alone)".into(), c, w));

        // 2. Replays: the created charges again; every answer must be the
        // stored one. (A request that failed is not stored: its retry runs
        // afresh, and it was counted wrong already.)
        let sent: Vec<Sent> = sent.into_iter().filter(|s| s.status == 201).collect();
        if sent.is_empty() {
            return Err(Error::NothingToReplay);
        }
        let sent = Rc::new(sent);
        let next = Rc::new(Cell::new(0usize));
        let http2 = http.clone();
        let replay = move |_task: usize, _seq: u64, _measured: bool| {
            let (http, sent, next) = (http2.clone(), sent.clone(), next.clone());
            async move {
                let i = next.get();
                next.set((i + 1) % sent.len());
                let s = &sent[i];
                let mut w = Wrong::default();
                match http.post("/v1/charges", &s.key, s.body.clone()).await {
                    Ok((status, replayed, answer)) => {
                        if !(200..300).contains(&status) {
                            w.non_2xx += 1;
                        } else if !replayed {
                            w.not_replayed += 1;
                        } else if status != s.status || answer != s.answer {
                            w.replay_differs += 1;
                        }
                    }
                    Err(_) => w.transport += 1,
                }
                (w, None)
            }
        };
        eprintln!("replays, concurrency {c}");
        let (f, w, _) = closed_loop(args, "replay", c, replay).await;
        rss_peak = rss_peak.max(peak_rss_kib(server.child.id()).unwrap_or(0));
        eprintln!("  {}", f.row());
        results.push(f);
        wrong_by.push(("replay".into(), c, w));

        // 2b. Card charges through the fake provider: a figure beside the
        // wallet's (the provider's round trip and two transactions).
        let (http2, acc) = (http.clone(), accounts.clone());
        let card = move |task: usize, seq: u64, _measured: bool| {
            new_card_charge(http2.clone(), acc.clone(), format!("k{c}-{task}-{seq}"), task, seq)
        };
        eprintln!("new card charges, concurrency {c}");
        let (f, w, sent) = closed_loop(args, "new card charge", c, card).await;
        created_total += sent.iter().filter(|s| s.status == 201).count() as u64;
        rss_peak = rss_peak.max(peak_rss_kib(server.child.id()).unwrap_or(0));
        eprintln!("  {}", f.row());
        results.push(f);
        wrong_by.push(("new card charge".into(), c, w));

        // 3. Reservations: many SKUs, every tenth on the hot one.
        let http2 = http.clone();
        let created = Rc::new(Cell::new(0u64));
        let created2 = created.clone();
        let reserve = move |task: usize, seq: u64, _measured: bool| {
            let (http, created) = (http2.clone(), created2.clone());
            async move {
                let order = format!("r{c}-{task}-{seq}");
                let sku = sku_for(task * 7919 + seq as usize * 31);
                let body = json!({"order_id": order, "sku": sku, "quantity": 1}).to_string().into_bytes();
                let mut w = Wrong::default();
                let r = http.post("/v1/reservations", &format!("hold:{order}"), body).await;
                if check_created(&mut w, &r) {
                    created.set(created.get() + 1);
                }
                (w, None)
            }
        };
        eprintln!("reservations, concurrency {c}");
        let (f, w, _) = closed_loop(args, "reservation", c, reserve).await;
        reserved_total += created.get();
        rss_peak = rss_peak.max(peak_rss_kib(server.child.id()).unwrap_or(0));
        eprintln!("  {}", f.row());
        results.push(f);
        wrong_by.push(("reservation".into(), c, w));

        // 4. A purchase: reserve, then charge the same order.
        let (http2, acc) = (http.clone(), accounts.clone());
        let created2 = created.clone();
        created.set(0);
        let charged = Rc::new(Cell::new(0u64));
        let charged2 = charged.clone();
        let purchase = move |task: usize, seq: u64, _measured: bool| {
            let (http, acc, created, charged) = (http2.clone(), acc.clone(), created2.clone(), charged2.clone());
            async move {
                let order = format!("p{c}-{task}-{seq}");
                let (w, reserved, paid) = purchase(&http, &acc, &order, task * 7919 + seq as usize * 104_729).await;
                created.set(created.get() + reserved as u64);
                charged.set(charged.get() + paid as u64);
                (w, None)
            }
        };
        eprintln!("purchases (reserve + charge), concurrency {c}");
        let (f, w, _) = closed_loop(args, "purchase (res+charge)", c, purchase).await;
        reserved_total += created.get();
        created_total += charged.get();
        rss_peak = rss_peak.max(peak_rss_kib(server.child.id()).unwrap_or(0));
        eprintln!("  {}", f.row());
        results.push(f);
        wrong_by.push(("purchase".into(), c, w));
    }
    // The messaging pipeline, on the outbox the workloads above filled (no
    // relay ran during them), then live beside the API.
    let messaging = if args.no_messaging {
        None
    } else {
        let mut m = messaging::run(args, db_url, http.clone(), accounts.clone()).await?;
        results.extend(m.purchases.take());
        reserved_total += m.reserved;
        created_total += m.charged;
        rss_peak = rss_peak.max(peak_rss_kib(server.child.id()).unwrap_or(0));
        wrong_by.push((messaging::PURCHASE_WORKLOAD.into(), messaging::LAG_CONCURRENCY, m.purchase_wrong));
        Some(m)
    };

    // Growth: new charges before and after seeding millions of ledger entries.
    let growth = if args.growth_entries > 0 { Some(growth::run(args, db_url, &http, &accounts).await?) } else { None };
    if let Some(g) = &growth {
        created_total += g.created;
        wrong_by.extend(g.wrong.iter().cloned());
        rss_peak = rss_peak.max(peak_rss_kib(server.child.id()).unwrap_or(0));
    }

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
        "{:<22} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7}",
        "workload", "conc", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "÷yard", "÷pgb"
    );
    for f in results.iter().chain(growth.iter().flat_map(|g| g.rows())) {
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
    }
    let mut ratios = Vec::new();
    for l in &limit {
        if let Some(s) = results.iter().find(|f| f.workload == "new charge" && f.concurrency == l.concurrency) {
            let ratio = s.rps() / l.rps();
            println!("new charge ÷ pgbench at concurrency {}: {:.2}", l.concurrency, ratio);
            let yard = over(s, &yardstick);
            if let Some(y) = yard {
                println!("new charge ÷ yardstick at concurrency {}: {y:.3} (target ≥ 0.5 at 64)", l.concurrency);
            }
            ratios.push(
                json!({"concurrency": l.concurrency, "pgbench": l.workload, "service_over_pgbench": round(ratio),
                               "service_over_yardstick": yard}),
            );
        }
    }
    // Group commit: the batches, where their time goes, and batched ÷ alone.
    println!();
    for (profile, over_alone) in &group_commit {
        println!("{}", profile.line());
        println!("new charge batched ÷ each alone at concurrency {}: {over_alone:.2}", profile.concurrency);
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
    let messaging_wrong = messaging.as_ref().map_or(0, |m| m.wrong_total());
    let ok = wrong_total.total() == 0 && duplicates == 0 && missing == 0 && messaging_wrong == 0;
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
        "group_commit": group_commit.iter().map(|(p, over_alone)| {
            let mut j = p.json();
            j["batched_over_alone"] = json!(round(*over_alone));
            j
        }).collect::<Vec<_>>(),
        "growth": growth.as_ref().map(growth::Growth::json),
        "wrong_answers": wrong_by.iter().map(|(w, c, wr)| json!({"workload": w, "concurrency": c, "counts": wr.json()})).collect::<Vec<_>>(),
        "charges_created": created_total,
        "charges_in_db": charges,
        "reservations_created": reserved_total,
        "reservations_in_db": reservations,
        "duplicate_effects": duplicates,
        "missing_effects": missing,
        "api_peak_rss_mib": round(rss_peak as f64 / 1024.0),
        "messaging": messaging.as_ref().map(messaging::Report::json),
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
