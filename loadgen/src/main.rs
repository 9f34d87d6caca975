//! `loadgen`: see `loadgen --help`.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use loadgen::cli::Args;
use loadgen::{Options, run_with};

fn main() -> ExitCode {
    let args = Args::parse();
    let scenario = match args.scenario() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            return ExitCode::from(2);
        }
    };
    let options = Options {
        progress: !args.json && std::io::stderr().is_terminal(),
        histogram_log: args.histogram_log.clone(),
    };
    match run_with(&scenario, &options) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("loadgen: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
