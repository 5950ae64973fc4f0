//! `icnctl`: manage a node's identity, and steer a running `icnd`, from the
//! command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use base64::Engine as _;
use clap::{Parser, Subcommand};
use icn_node::control::Request;

/// Manage an ICN node's identity, and steer a running icnd.
///
/// The identity lives in <data-dir>/identity.age, encrypted with a passphrase
/// read from ICN_KEYSTORE_PASSPHRASE or asked for on the terminal. `status`
/// and `network` talk to the icnd running on the same data directory,
/// through its control socket <data-dir>/icnd.sock.
#[derive(Parser, Debug)]
#[command(version)]
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
    /// The running node: its DID, sync addresses, connected peers, counters.
    Status,
    /// The running node's peers.
    #[command(subcommand)]
    Network(NetworkCommand),
}

#[derive(Subcommand, Debug)]
enum NetworkCommand {
    /// Keep a sync session with a peer: dial it now, and again whenever
    /// the session drops. Example:
    /// icnctl network dial did:icn:6Mkq… 192.168.1.100:7777
    Dial {
        /// The peer's DID (what `icnctl id show` prints on its machine).
        did: String,
        /// Its sync address, ip:port (its [network] listen_addr).
        addr: String,
    },
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
        Command::Status => {
            let status = control(&args.data_dir, &Request::Status)?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        Command::Network(NetworkCommand::Dial { did, addr }) => {
            let ok = control(&args.data_dir, &Request::Dial { did, addr })?;
            let new = ok.get("new").and_then(|n| n.as_bool()).unwrap_or(false);
            let (did, addr) = (&ok["did"], &ok["addr"]);
            if new {
                println!(
                    "dialing {} at {}; the node keeps the session up",
                    did.as_str().unwrap_or_default(),
                    addr.as_str().unwrap_or_default()
                );
            } else {
                println!(
                    "already keeping a session with {}",
                    did.as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

#[cfg(unix)]
fn control(data_dir: &std::path::Path, request: &Request) -> Result<serde_json::Value> {
    icn_node::control::request(data_dir, request)
}

#[cfg(not(unix))]
fn control(_: &std::path::Path, _: &Request) -> Result<serde_json::Value> {
    anyhow::bail!("the control socket needs a Unix system")
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
