//! Running a check: breadth first (so a counterexample is a shortest one),
//! with how many states it explored, how long it took, and each discovery
//! as a readable trace.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use stateright::{Checker, Expectation, HasDiscoveries, Model, Path};

use crate::bounds::{Bounds, Design};
use crate::describe;
use crate::model::{Action, PaymentModel};
use crate::state::State;

/// What a check found.
pub struct Report {
    pub design: crate::bounds::Design,
    /// Distinct states explored.
    pub states: usize,
    /// States generated, repeats included.
    pub generated: usize,
    pub depth: usize,
    pub elapsed: Duration,
    /// Whether every reachable state was explored.
    pub complete: bool,
    /// Always-properties with a counterexample, each with its trace.
    pub counterexamples: BTreeMap<&'static str, Vec<String>>,
    /// Sometimes-properties with no example found.
    pub missing_examples: Vec<&'static str>,
}

impl Report {
    pub fn summary(&self) -> String {
        format!(
            "{:?}: {} states explored ({} generated, depth {}) in {:.1} s{}",
            self.design,
            self.states,
            self.generated,
            self.depth,
            self.elapsed.as_secs_f64(),
            if self.complete { "" } else { ", stopped at the first counterexample" }
        )
    }

    /// The summary, then each counterexample's trace.
    pub fn render(&self) -> String {
        let mut out = self.summary();
        for (property, trace) in &self.counterexamples {
            out.push_str(&format!("\ncounterexample to \"{property}\":\n"));
            for line in trace {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }
}

/// A path as numbered steps, then the state it ends in.
pub fn trace(model: &PaymentModel, path: Path<State, Action>) -> Vec<String> {
    steps(model, path.into_vec())
}

/// The path up to its first state that breaks the property: the checker
/// keeps the last violation it met before it stopped, which may lie
/// further along the same behaviour.
fn first_violation(
    model: &PaymentModel,
    condition: fn(&PaymentModel, &State) -> bool,
    path: Path<State, Action>,
) -> Vec<(State, Option<Action>)> {
    let mut steps = path.into_vec();
    if let Some(at) = steps.iter().position(|(state, _)| !condition(model, state)) {
        steps.truncate(at + 1);
        steps[at].1 = None;
    }
    steps
}

fn steps(model: &PaymentModel, steps: Vec<(State, Option<Action>)>) -> Vec<String> {
    let mut lines = Vec::with_capacity(steps.len() + 1);
    let start = &steps[0].0;
    let cards: Vec<&str> = start.cards[..model.bounds.attempts as usize]
        .iter()
        .map(|&pays| if pays { "pays" } else { "declines" })
        .collect();
    lines.push(format!("start: the card {} (attempt by attempt)", cards.join(", ")));
    let mut n = 0;
    for (state, action) in &steps {
        if let Some(action) = action {
            n += 1;
            lines.push(format!("{n:2}. {}", describe::step(model, state, action)));
        }
    }
    lines.push(format!("end: {}", describe::outcome(&steps[steps.len() - 1].0)));
    lines
}

/// Explores every reachable state (or, given `until`, stops once that
/// property has a counterexample), on `threads` threads.
pub fn run(model: PaymentModel, threads: usize, until: Option<&'static str>) -> Report {
    let design = model.design;
    let started = Instant::now();
    let mut builder = model.clone().checker().threads(threads);
    if let Some(property) = until {
        builder = builder.finish_when(HasDiscoveries::AnyOf([property].into_iter().collect()));
    }
    let checker = builder.spawn_bfs().join();
    let elapsed = started.elapsed();
    let mut counterexamples = BTreeMap::new();
    let mut missing_examples = Vec::new();
    let discoveries = checker.discoveries();
    for property in model.properties() {
        match (property.expectation, discoveries.get(property.name)) {
            (Expectation::Sometimes, None) => missing_examples.push(property.name),
            (Expectation::Always, Some(path)) => {
                let path = first_violation(&model, property.condition, path.clone());
                counterexamples.insert(property.name, steps(&model, path));
            }
            (Expectation::Eventually, Some(path)) => {
                counterexamples.insert(property.name, trace(&model, path.clone()));
            }
            _ => {}
        }
    }
    Report {
        design,
        states: checker.unique_state_count(),
        generated: checker.state_count(),
        depth: checker.max_depth(),
        elapsed,
        complete: until.is_none() && checker.is_done(),
        counterexamples,
        missing_examples,
    }
}

/// The threads a deep check may use: every core.
pub fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The code's design under `bounds`: every property holds, every example is
/// reached (panics with the report otherwise). One thread: the count and
/// any counterexample are the same every run.
pub fn holds(bounds: Bounds, threads: usize) -> Report {
    let report = run(PaymentModel::new(Design::Current, bounds), threads, None);
    println!("{}", report.render());
    assert!(report.complete, "the check did not explore every state");
    assert!(report.counterexamples.is_empty(), "{}", report.render());
    assert!(report.missing_examples.is_empty(), "never reached: {:?}", report.missing_examples);
    report
}

/// The code's design under `bounds`: `property` (the one a defect broke)
/// holds in every state, and so does every other.
pub fn keeps(bounds: Bounds, property: &'static str) -> Report {
    let report = run(PaymentModel::new(Design::Current, bounds), 1, None);
    println!("{}", report.summary());
    assert!(report.complete, "the check did not explore every state");
    assert!(!report.counterexamples.contains_key(property), "{}", report.render());
    assert!(report.counterexamples.is_empty(), "{}", report.render());
    report
}

/// A known-bad `design` breaks `property` under `bounds`: its shortest
/// counterexample, printed.
pub fn breaks(design: Design, bounds: Bounds, property: &'static str) -> Report {
    let report = run(PaymentModel::new(design, bounds), 1, Some(property));
    println!("{}", report.render());
    assert!(report.counterexamples.contains_key(property), "no counterexample to \"{property}\"");
    report
}
