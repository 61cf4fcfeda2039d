//! `secureflows`: the server and its operator commands.
//!
//! Every command takes `--data-dir` and `--database-url` (or `SECUREFLOWS_DATA_DIR`,
//! `SECUREFLOWS_DATABASE_URL`), reads the master key from `SECUREFLOWS_MASTER_KEY` or the key file, and
//! with `--json` prints exactly one JSON object on standard output.

mod cli;
mod duration;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = args.global.json;
    match runtime.block_on(cli::run(args)) {
        // Output already written (an export to standard output).
        Ok(serde_json::Value::Null) => ExitCode::SUCCESS,
        Ok(output) => {
            // A check that found problems (`audit verify`) prints its report and fails.
            let failed = output.get("ok").and_then(|v| v.as_bool()) == Some(false);
            if json {
                println!("{output}");
            } else if let Some(text) = output.get("message").and_then(|m| m.as_str()) {
                println!("{text}");
            } else {
                println!("{}", serde_json::to_string_pretty(&output).unwrap_or_default());
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            let message = format!("{e:#}");
            if json {
                println!("{}", serde_json::json!({ "error": message }));
            }
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
