//! `icnctl`: manage a node's identity from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use base64::Engine as _;
use clap::{Parser, Subcommand};

/// Manage an ICN node's identity.
///
/// The identity lives in <data-dir>/identity.age, encrypted with a passphrase
/// read from ICN_KEYSTORE_PASSPHRASE or asked for on the terminal.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The node's data directory.
    #[arg(long, global = true, default_value = icn_node::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Your DID keypair.
    #[command(subcommand)]
    Id(IdCommand),
}

#[derive(Subcommand, Debug)]
enum IdCommand {
    /// Create a new identity (refuses to overwrite one).
    Init,
    /// Print the DID.
    Show,
    /// Sign a message (e.g. an auth challenge); prints the signature.
    Sign {
        /// The exact message to sign.
        message: String,
        /// Print base64 (standard, no padding) instead of hex.
        #[arg(long)]
        base64: bool,
    },
}

fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Id(IdCommand::Init) => {
            let keystore = icn_engine::Keystore::in_dir(&args.data_dir);
            if keystore.exists() {
                anyhow::bail!(
                    "an identity already exists at {}; `icnctl id show` prints it",
                    keystore.path().display()
                );
            }
            let (keypair, _) = icn_node::load_or_create_identity(&args.data_dir)?;
            println!("{}", keypair.did());
        }
        Command::Id(IdCommand::Show) => {
            println!("{}", icn_node::load_identity(&args.data_dir)?.did());
        }
        Command::Id(IdCommand::Sign { message, base64 }) => {
            let signature = icn_node::load_identity(&args.data_dir)?.sign(message.as_bytes());
            if base64 {
                println!(
                    "{}",
                    base64::engine::general_purpose::STANDARD_NO_PAD.encode(signature)
                );
            } else {
                println!("{}", hex::encode(signature));
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
