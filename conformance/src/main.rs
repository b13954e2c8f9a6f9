//! `sascribe-conformance`: read, check and show sa-Scribe conformance traces.

use clap::{Parser, Subcommand};
use sascribe_conformance::{chart, load, trace_files};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sascribe-conformance", about = "sa-Scribe conformance traces")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render a trace as a sequence chart (like the paper's Fig. 4/5).
    Show {
        /// The trace file.
        file: PathBuf,
        /// Print a mermaid sequenceDiagram instead of text.
        #[arg(long)]
        mermaid: bool,
    },
    /// Check that trace files (or every *.json in directories) are well-formed traces.
    Validate {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Show { file, mermaid } => match load(&file) {
            Ok(t) => {
                print!(
                    "{}",
                    if mermaid {
                        chart::mermaid(&t)
                    } else {
                        chart::text(&t)
                    }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Validate { paths } => {
            let (mut ok, mut bad) = (0, 0);
            for p in paths {
                let files = match trace_files(&p) {
                    Ok(f) => f,
                    Err(e) => {
                        eprintln!("error: {e}");
                        bad += 1;
                        continue;
                    }
                };
                for f in files {
                    match load(&f) {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            eprintln!("invalid: {e}");
                            bad += 1;
                        }
                    }
                }
            }
            println!("{ok} valid, {bad} invalid");
            if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
