// SPDX-License-Identifier: Apache-2.0
//! The `vmm` command: parses options and runs the VM.

use std::error::Error;
use std::process::ExitCode;

use clap::Parser;
use vmm::config::{Cli, VmConfig};

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_timestamp_millis()
        .init();
}

/// Prints `err` and its causes on one line.
fn report(err: &dyn Error) {
    let mut line = format!("vmm: error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    eprintln!("{line}");
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message spans several lines; keep the part before the usage, on one line.
            let text = e.to_string();
            let message = text.split("\n\n").next().unwrap_or("invalid arguments");
            let message = message.strip_prefix("error: ").unwrap_or(message);
            let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("vmm: error: {message} (see vmm --help)");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.verbose);
    // A closed terminal is the serial console's business (it logs the hang-up and the guest
    // keeps running), not a reason to kill the VM.
    // SAFETY: ignoring a signal installs no handler code.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };

    let config = match VmConfig::try_from(&cli) {
        Ok(config) => config,
        Err(e) => {
            report(&e);
            return ExitCode::from(2);
        }
    };

    match vmm::run(&config) {
        Ok(outcome) => {
            log::info!("guest stopped: {outcome:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}
