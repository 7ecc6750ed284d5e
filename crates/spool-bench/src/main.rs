//! The `spool-bench` binary: parses options, runs one benchmark, prints the one-line summary (and the JSON report
//! with `--json`), and exits non-zero if any confirmed job was lost or duplicated, or any command failed.

use clap::Parser;
use spool_bench::{run, Options};

fn main() -> anyhow::Result<()> {
    let opts = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(run(&opts))?;
    println!("{}", report.summary());
    if !report.error_samples.is_empty() {
        eprintln!("errors: {}", report.error_samples.join(" | "));
    }
    if !report.ok {
        std::process::exit(1);
    }
    Ok(())
}
