//! `icn-cluster`: runs seeded fault runs against a cluster of real `icnd`
//! processes in network namespaces and prints a summary table (the soak of
//! `docs/reliability.md`). Needs root.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use icn_cluster::{Options, Report, run, schedule};

/// Run N seeded fault runs (or for T minutes) and print what they found.
/// A failing run prints its seed and schedule; `--seed S --runs 1`
/// replays it.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Runs to make (unless --minutes is given).
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// Run for this many minutes instead of a number of runs.
    #[arg(long)]
    minutes: Option<u64>,
    /// The first run's seed; run k uses seed + k [default: from the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes per run (3 to 5).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=5))]
    nodes: u64,
    /// Steps per run.
    #[arg(long, default_value_t = 60)]
    steps: usize,
    /// The icnd binary [default: target/release/icnd].
    #[arg(long, default_value = "target/release/icnd")]
    icnd: PathBuf,
    /// Where the nodes' data go.
    #[arg(long, default_value = "target/cluster")]
    workdir: PathBuf,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let first = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let deadline = args
        .minutes
        .map(|m| Instant::now() + Duration::from_secs(m * 60));
    let mut reports: Vec<Report> = Vec::new();
    let mut failed = 0;
    for k in 0.. {
        let done = match deadline {
            Some(end) => Instant::now() >= end,
            None => k >= args.runs,
        };
        if done {
            break;
        }
        let seed = first.wrapping_add(k);
        let opts = Options {
            nodes: args.nodes as usize,
            seed,
            steps: args.steps,
            icnd: args.icnd.clone(),
            workdir: args.workdir.join(format!("run-{seed}")),
            tag: format!("{:05}", std::process::id() % 100_000),
            // The suite's cluster test uses 200..250.
            subnet: (std::process::id() % 200) as u8,
            mdns: false,
        };
        // A run the harness could not play (a node that never answered,
        // say) counts as failed, with its seed; the soak goes on.
        let report = match run(&opts).await {
            Ok(report) => report,
            Err(e) => Report {
                seed,
                failure: Some(format!("the run could not be played: {e:#}")),
                ..Report::default()
            },
        };
        println!(
            "seed {seed}: {} payments and {} votes acknowledged, {} lost, {} conflicted, {} backdated after removal, {} from an allowance, {} by a revoked phone, {} refused for a full disk, {} stores reopened, converged in {:.2} s{}",
            report.acknowledged,
            report.votes,
            report.lost.len(),
            report.conflicted,
            report.backdated,
            report.allowance_payments,
            report.after_revocation,
            report.disk_refusals,
            report.reopened,
            report.converge.as_secs_f64(),
            report
                .failure
                .as_deref()
                .map(|f| format!(" FAILED: {f}"))
                .unwrap_or_default()
        );
        if report.failure.is_some() {
            failed += 1;
            println!("schedule of seed {seed}:");
            for step in schedule(seed, opts.nodes, opts.steps) {
                println!("  {step:?}");
            }
        } else {
            let _ = std::fs::remove_dir_all(&opts.workdir);
        }
        reports.push(report);
    }
    let mut faults = std::collections::BTreeMap::new();
    for r in &reports {
        for (kind, n) in &r.faults {
            *faults.entry(*kind).or_insert(0) += n;
        }
    }
    let mut times: Vec<Duration> = reports.iter().map(|r| r.converge).collect();
    times.sort();
    println!();
    println!(
        "| runs | failed | payments acknowledged | votes acknowledged | lost | conflicted | backdated after removal (applied: 0) | paid from an allowance (all applied) | paid by a revoked phone (applied: 0) | refused for a full disk (503) | stores reopened after a full disk | converge median | converge p99 | converge max |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {failed} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} s | {:.2} s | {:.2} s |",
        reports.len(),
        reports.iter().map(|r| r.acknowledged).sum::<usize>(),
        reports.iter().map(|r| r.votes).sum::<usize>(),
        reports.iter().map(|r| r.lost.len()).sum::<usize>(),
        reports.iter().map(|r| r.conflicted).sum::<usize>(),
        reports.iter().map(|r| r.backdated).sum::<usize>(),
        reports.iter().map(|r| r.allowance_payments).sum::<usize>(),
        reports.iter().map(|r| r.after_revocation).sum::<usize>(),
        reports.iter().map(|r| r.disk_refusals).sum::<usize>(),
        reports.iter().map(|r| r.reopened).sum::<usize>(),
        percentile(&times, 0.5).as_secs_f64(),
        percentile(&times, 0.99).as_secs_f64(),
        times.last().copied().unwrap_or_default().as_secs_f64(),
    );
    println!();
    println!("| fault | injected |");
    println!("|---|---|");
    for (kind, n) in &faults {
        println!("| {kind} | {n} |");
    }
    if failed > 0 {
        bail!("{failed} runs failed");
    }
    Ok(())
}
