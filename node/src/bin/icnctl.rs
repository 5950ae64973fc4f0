//! `icnctl`: manage a node's identity, and steer a running `icnd`, from the
//! command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use base64::Engine as _;
use clap::{Parser, Subcommand};
use icn_node::client::Client;
use icn_node::control::Request;

/// Manage an ICN node's identity, steer a running icnd, and use a gateway.
///
/// The identity lives in <data-dir>/identity.age, encrypted with a passphrase
/// read from ICN_KEYSTORE_PASSPHRASE or asked for on the terminal. `status`
/// and `network` talk to the icnd running on the same data directory,
/// through its control socket <data-dir>/icnd.sock. `auth`, `ledger`,
/// `gov`, `device`, `coop`, `relay`, `member` and `invite` talk to a gateway (--gateway, or ICN_GATEWAY; default
/// http://127.0.0.1:8080) with a token from --token or ICN_TOKEN, or log in
/// with your identity first.
///
/// Exit status: 0 done, 1 failed, 2 bad command line, 3 refused by the
/// gateway (the message says why).
#[derive(Parser, Debug)]
#[command(name = "icnctl", version)]
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
    /// Get a gateway token (challenge, sign with your key, verify).
    #[command(subcommand)]
    Auth(AuthCommand),
    /// The running node: its DID, sync addresses, connected peers, counters.
    Status,
    /// The running node's peers.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Write a backup of everything the running icnd holds (documents,
    /// ledgers, modules, tokens' delegations, event logs) to a file, while
    /// it runs. The identity is not in it: back it up with `id export`.
    Backup {
        /// Where (written by icnd, which must be able to write there).
        file: PathBuf,
    },
    /// Restore a backup into --data-dir, whose store must be empty, with
    /// icnd stopped. Everything is validated again as it is restored.
    Restore {
        /// The backup file.
        file: PathBuf,
    },
    /// The ledger, through a gateway.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Governance, through a gateway: domains, proposals, votes.
    #[command(subcommand)]
    Gov(GovCommand),
    /// A member's devices, through a gateway: list, add, revoke, and the
    /// emergency revoke of a member whose unlocked phone was stolen.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// A co-op's settings, through a gateway (admins): profile, credit
    /// limit, treasury domain, units, exchange rates.
    #[command(subcommand)]
    Coop(CoopCommand),
    /// A co-op's relays, through a gateway: the always-on nodes that hold
    /// the co-op without being members.
    #[command(subcommand)]
    Relay(RelayCommand),
    /// A co-op's members, through a gateway (admins): add, change the role
    /// or the credit limit, remove (which seals what the member wrote that this node had not seen).
    #[command(subcommand)]
    Member(MemberCommand),
    /// Onboarding, through a gateway: an admin (or a member, if the policy
    /// allows) creates a one-time code, a newcomer applies with it, an admin
    /// approves it, or a membership proposal does (`coop set --approval`).
    #[command(subcommand)]
    Invite(InviteCommand),
}

#[derive(Subcommand, Debug)]
enum InviteCommand {
    /// Create a one-time invite code (admins; members when the policy has
    /// member_invites). Example:
    /// icnctl invite create food-coop --credit-limit 20 --expires-in 86400
    Create {
        /// The co-op's id (or document id).
        coop: String,
        /// `member` (default), `admin` or `observer`.
        #[arg(long, default_value = "member")]
        role: String,
        /// The newcomer's credit limit (the policy's default when absent).
        #[arg(long)]
        credit_limit: Option<i64>,
        /// Seconds the code lives (default 7 days, at most 30).
        #[arg(long)]
        expires_in: Option<u64>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Apply to a co-op with a code, as the identity in --data-dir (no
    /// membership needed).
    Accept {
        /// The co-op's id (or document id).
        coop: String,
        /// The invite code.
        code: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// An application's state (yours by default).
    Status {
        /// The co-op's id (or document id).
        coop: String,
        /// The applicant (admins may look at anyone's).
        #[arg(long)]
        did: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Approve an application (admins): the applicant becomes a member.
    Approve {
        /// The co-op's id (or document id).
        coop: String,
        /// The applicant's DID.
        did: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Propose admitting an applicant, where the co-op admits by proposal:
    /// prints the draft proposal; then `icnctl gov open | vote | close` it.
    Propose {
        /// The co-op's id (or document id).
        coop: String,
        /// The applicant's DID.
        did: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

#[derive(Subcommand, Debug)]
enum MemberCommand {
    /// List a co-op's members.
    List {
        /// The co-op's id (or document id).
        coop: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Add a member (its DID key becomes its first device).
    Add {
        /// The co-op's id (or document id).
        coop: String,
        /// The new member's DID (`icnctl id show` on its machine).
        did: String,
        /// `member` (default), `admin` or `observer`.
        #[arg(long, default_value = "member")]
        role: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Change a member's role.
    Role {
        /// The co-op's id (or document id).
        coop: String,
        /// The member's DID.
        did: String,
        /// `member`, `admin` or `observer`.
        role: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Set a member's credit limit: in every unit, or with --unit in one
    /// (which wins over the other). Example:
    /// icnctl member limit food-coop did:icn:… 5000 --unit eur
    Limit {
        /// The co-op's id (or document id).
        coop: String,
        /// The member's DID.
        did: String,
        /// How far below zero, in the unit's smallest step.
        limit: i64,
        /// Only in this unit.
        #[arg(long)]
        unit: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Remove a member (you may remove yourself: leave).
    Remove {
        /// The co-op's id (or document id).
        coop: String,
        /// The member's DID.
        did: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

#[derive(Subcommand, Debug)]
enum CoopCommand {
    /// Create a co-op; you become its first admin. Example:
    /// icnctl coop create food-coop --name "Food Co-op" --default-credit-limit 50 --unit hours
    Create {
        /// Its id: a-z, 0-9, '-', '_', '.', ':'.
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
        /// How far below zero a member may go, in each unit's smallest step.
        #[arg(long)]
        default_credit_limit: Option<i64>,
        /// Units of account, `id` or `id:scale`, repeatable [default: hours].
        #[arg(long = "unit")]
        units: Vec<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Show a co-op: profile, policy (units, rates, credit limit, treasury
    /// domain), members count, relays.
    Show {
        /// The co-op's id (or document id).
        coop: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Change a co-op's settings. Example:
    /// icnctl coop set food-coop --default-credit-limit 20 --treasury-domain food-board
    Set {
        /// The co-op's id (or document id).
        coop: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// How far below zero a member may go, in each unit's smallest step.
        #[arg(long)]
        default_credit_limit: Option<i64>,
        /// The governance domain (attached to this co-op) whose accepted
        /// decisions execute: budgets and freezes in the ledger, membership
        /// and config changes in the co-op.
        #[arg(long)]
        treasury_domain: Option<String>,
        /// Who approves applications to join: `admin`, or `proposal` (an
        /// accepted membership proposal of the treasury domain).
        #[arg(long, value_parser = ["admin", "proposal"])]
        approval: Option<String>,
        /// Whether members who are not admins create invites.
        #[arg(long)]
        member_invites: Option<bool>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Add or update a unit of account. Example: icnctl coop unit food-coop eur --scale 2
    Unit {
        /// The co-op's id (or document id).
        coop: String,
        /// The unit's id: a-z, 0-9, '-', '_', '.', ':'.
        unit: String,
        /// A display name.
        #[arg(long)]
        name: Option<String>,
        /// Decimal places of its smallest step (2 for cents).
        #[arg(long, default_value_t = 0)]
        scale: i64,
        /// Members' credit limit in this unit, over the default (a
        /// member's own limit still wins).
        #[arg(long)]
        credit_limit: Option<i64>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Set an exchange rate: 1 FROM = NUM/DEN TO. Example:
    /// icnctl coop rate food-coop hours eur 2500 1
    Rate {
        /// The co-op's id (or document id).
        coop: String,
        /// The unit paid.
        from: String,
        /// The unit received.
        to: String,
        /// Numerator.
        num: i64,
        /// Denominator.
        den: i64,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// The members who may revoke any member's devices in an emergency
    /// (`device emergency-revoke`): list them, or, as an admin, name or
    /// unname one. Example: icnctl coop trusted food-coop --add did:icn:…
    Trusted {
        /// The co-op's id (or document id).
        coop: String,
        /// Name this member a trusted contact.
        #[arg(long, conflicts_with = "remove")]
        add: Option<String>,
        /// Unname this trusted contact.
        #[arg(long)]
        remove: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

#[derive(Subcommand, Debug)]
enum RelayCommand {
    /// List a co-op's relays.
    List {
        /// The co-op's id (or document id).
        coop: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Register a node as a relay of a co-op (its DID is what `icnctl status`
    /// prints on it; ADDR is its sync listener, host:port). Example:
    /// icnctl relay add food-coop did:icn:6Mkq… relay.example.org:7777
    Add {
        /// The co-op's id (or document id).
        coop: String,
        /// The relay node's DID.
        did: String,
        /// Where to dial it: host:port.
        addr: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Unregister a relay.
    Remove {
        /// The co-op's id (or document id).
        coop: String,
        /// The relay node's DID.
        did: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

#[derive(Subcommand, Debug)]
enum DeviceCommand {
    /// List a member's devices (yours by default) in every co-op you share
    /// with it on the gateway's node.
    List {
        /// The member (default: the identity in --data-dir).
        #[arg(long)]
        member: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// On the new device: sign its consent to act for a member, with the
    /// identity in --data-dir. Prints {"device", "proof"} for `device add`.
    Proof {
        /// The member the device will act for.
        #[arg(long)]
        member: String,
    },
    /// Register a new device for a member (yours by default), with the
    /// proof `device proof` printed on that device.
    Add {
        /// The new device's DID.
        #[arg(long)]
        device: String,
        /// Its proof (hex or base64).
        #[arg(long)]
        proof: String,
        /// A name for it.
        #[arg(long)]
        label: Option<String>,
        /// The member (default: the identity in --data-dir).
        #[arg(long)]
        member: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Revoke a device for good: it never acts for the member again.
    Revoke {
        /// The device's DID.
        device: String,
        /// Why: lost, stolen, retired or emergency.
        #[arg(long, value_parser = ["lost", "stolen", "retired", "emergency"])]
        reason: String,
        /// The member (default: the identity in --data-dir).
        #[arg(long)]
        member: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// As an admin or a trusted contact: revoke every device of a member at
    /// once, its DID key included, until an admin registers a new key.
    EmergencyRevoke {
        /// The member whose devices are revoked.
        member: String,
        /// Why: lost, stolen, retired or emergency.
        #[arg(long, default_value = "emergency", value_parser = ["lost", "stolen", "retired", "emergency"])]
        reason: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

/// Where the gateway is, and how to authenticate to it.
#[derive(clap::Args, Debug, Clone)]
struct GatewayArgs {
    /// The gateway's base URL.
    #[arg(long, env = "ICN_GATEWAY", default_value = icn_node::client::DEFAULT_GATEWAY)]
    gateway: String,
    /// A token from `icnctl auth login`; without one, icnctl logs in with
    /// the identity in --data-dir.
    #[arg(long, env = "ICN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand, Debug)]
enum AuthCommand {
    /// Log in to a gateway with your DID and print the token. Example:
    /// TOKEN=$(icnctl auth login --gateway http://127.0.0.1:8080 --output token)
    Login {
        /// The gateway's base URL.
        #[arg(long, env = "ICN_GATEWAY", default_value = icn_node::client::DEFAULT_GATEWAY)]
        gateway: String,
        /// `token`: the token only; `json`: the whole answer (token,
        /// expires_at, did, device, scopes).
        #[arg(long, default_value = "token", value_parser = ["token", "json"])]
        output: String,
        /// Log in for this member, with the identity in --data-dir as one
        /// of its registered devices (`icnctl device add`). The token has
        /// no gov:write.
        #[arg(long)]
        member: Option<String>,
    },
    /// Log in and print the token, after checking it reads the co-op
    /// (the API directory's form). Example:
    /// export TOKEN=$(icnctl auth token --coop my-coop)
    Token {
        /// The co-op the token is for: refused (exit 3) if you cannot read it.
        #[arg(long)]
        coop: Option<String>,
        /// The gateway's base URL.
        #[arg(long, env = "ICN_GATEWAY", default_value = icn_node::client::DEFAULT_GATEWAY)]
        gateway: String,
    },
}

#[derive(Subcommand, Debug)]
enum LedgerCommand {
    /// A member's net position in every unit: balance, credit limit,
    /// available. Example: icnctl ledger position food-coop did:icn:…
    Position {
        /// The co-op's id (or document id).
        coop: String,
        /// The member's DID.
        did: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Pay a member: AMOUNT of UNIT from you to DID. Example:
    /// icnctl ledger settle food-coop did:icn:… 2 hours --memo "Garden help"
    Settle {
        /// The co-op's id (or document id).
        coop: String,
        /// Who is paid.
        to: String,
        /// How much, in the unit's smallest step.
        amount: i64,
        /// The unit.
        unit: String,
        #[arg(long, default_value = "")]
        memo: String,
        /// Retry-safe: the same key sent again pays once.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// The entries touching an account (yours by default; a DID or
    /// `treasury`), a page at a time.
    History {
        /// The co-op's id (or document id).
        coop: String,
        #[arg(long)]
        account: Option<String>,
        /// The `next_cursor` of the page before.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// One entry and its status.
    Entry {
        /// The co-op's id (or document id).
        coop: String,
        /// The entry's id.
        id: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Every non-zero balance, each unit's total (always 0), conflicted entries.
    TrialBalance {
        /// The co-op's id (or document id).
        coop: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Freeze a member's account (admins): from the freeze's place on,
    /// entries touching it are conflicted. Example:
    /// icnctl ledger freeze food-coop did:icn:… (--unfreeze to lift it)
    Freeze {
        /// The co-op's id (or document id).
        coop: String,
        /// The member's DID.
        did: String,
        /// Lift the freeze instead.
        #[arg(long)]
        unfreeze: bool,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Set AMOUNT of UNIT of your credit aside for one of your devices,
    /// which then spends it, offline too, without ever being conflicted by
    /// what your other keys do. Signed here with your DID key (the identity
    /// in --data-dir) and submitted as is. Example:
    /// icnctl ledger grant food-coop did:icn:<phone key> 20 hours
    Grant {
        /// The co-op's id (or document id).
        coop: String,
        /// The device key the allowance is for.
        device: String,
        /// In the unit's smallest step.
        amount: i64,
        /// The unit.
        unit: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Give AMOUNT of UNIT of this device's unspent allowance back to your
    /// general credit. Signed here with the device's key (the identity in
    /// --data-dir), for the member --member names. Example:
    /// icnctl --data-dir ./phone ledger release food-coop 5 hours --member did:icn:…
    Release {
        /// The co-op's id (or document id).
        coop: String,
        /// In the unit's smallest step.
        amount: i64,
        /// The unit.
        unit: String,
        /// The member whose device this is.
        #[arg(long)]
        member: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

#[derive(Subcommand, Debug)]
enum GovCommand {
    /// List the governance domains you belong to.
    Domains {
        /// Only the domains attached to this co-op.
        #[arg(long)]
        coop: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Create a governance domain; you become its first admin.
    #[command(alias = "domain")]
    CreateDomain {
        /// Its id: a-z, 0-9, '-', '_', '.', ':'.
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Rules preset: cooperative_default, working_group,
        /// supermajority, consensus, unanimous.
        #[arg(long, default_value = "cooperative_default")]
        profile: String,
        /// Members besides you (DIDs), repeatable.
        #[arg(long = "member")]
        members: Vec<String>,
        /// The co-op it belongs to (its members may join it; it may be the
        /// co-op's treasury domain).
        #[arg(long)]
        coop: Option<String>,
        /// Share of members who must vote, overriding the profile.
        #[arg(long)]
        quorum_percent: Option<i64>,
        /// Share of votes cast that must be for, overriding the profile.
        #[arg(long)]
        approval_percent: Option<i64>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// List proposals (all domains you belong to, or one).
    Proposals {
        /// Only this domain's.
        #[arg(long)]
        domain: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Submit a text proposal (a draft until you open it).
    Propose {
        /// The domain's id.
        domain: String,
        /// Title.
        title: String,
        /// Description (also the text's body).
        #[arg(long, default_value = "")]
        description: String,
        /// What it does if accepted, as JSON (default: text). Examples:
        /// '{"type":"budget","amount":10,"recipient":"did:icn:…","unit":"hours","purpose":"seeds"}',
        /// '{"type":"membership","action":"add","did":"did:icn:…","role":"member"}',
        /// '{"type":"config_change","key":"default_credit_limit","value":"50"}'.
        #[arg(long)]
        payload: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Open your draft proposal for voting.
    Open {
        /// The proposal's id.
        proposal: String,
        /// How long voting lasts [default: the domain's voting period].
        #[arg(long)]
        period_seconds: Option<i64>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Vote on an open proposal: for, against, abstain (or block).
    Vote {
        /// The proposal's id.
        proposal: String,
        /// for, against, abstain or block.
        choice: String,
        /// A comment kept with the vote.
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Cancel your own proposal while it is a draft or open.
    Cancel {
        /// The proposal's id.
        proposal: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Close an open proposal and record its tally.
    Close {
        /// The proposal's id.
        proposal: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Show a proposal, its votes and outcome.
    Show {
        /// The proposal's id.
        proposal: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// A co-op's decisions (closed proposals of its domains), newest first.
    Decisions {
        /// The co-op's id (or document id).
        coop: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Upload a WebAssembly tally module (at most 1 MiB); prints its hash,
    /// which a domain's rules name: {"method": {"kind": "wasm", "module":
    /// "<hash>"}}. Example: icnctl gov module quadratic.wasm
    Module {
        /// The module's file.
        file: PathBuf,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Follow a decision: its receipt, whether it executed (and why not),
    /// and the ledger entries citing it. Example: icnctl gov trace <decision_receipt_id>
    Trace {
        /// The decision receipt's id (64 hex digits), as `gov close` prints.
        receipt: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

#[derive(Subcommand, Debug)]
enum NetworkCommand {
    /// Keep a sync session with a peer: dial it now, and again whenever
    /// the session drops. Example:
    /// icnctl network dial did:icn:6Mkq… 192.168.1.100:7777
    /// Without the address, the node finds it by mDNS ([network]
    /// mdns_enabled on both nodes, on one local network).
    Dial {
        /// The peer's DID (what `icnctl id show` prints on its machine).
        did: String,
        /// Its sync address, ip:port (its [network] listen_addr); leave it
        /// out to find it by mDNS.
        addr: Option<String>,
        /// Keep the peer across restarts: the node saves it in
        /// <data-dir>/peers.json and dials it at every start (needs the
        /// address).
        #[arg(long, requires = "addr")]
        save: bool,
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
    /// Copy the encrypted identity to a file (a backup; it stays
    /// encrypted with your passphrase, which is checked first).
    Export {
        /// Where to write it.
        file: PathBuf,
    },
    /// Install an identity exported with `id export` into --data-dir
    /// (refuses to replace an existing one).
    Import {
        /// The exported file.
        file: PathBuf,
    },
    /// Rotate the identity's key: a new key takes over your DID key's
    /// powers (voting, seals, allowances) in every co-op on the gateway's
    /// node where the current key holds them, and the current key is
    /// retired (revoked, sealed). Your DID, memberships and balances stay.
    /// The keystore then holds the new key (with the same passphrase), and
    /// an icnd running on --data-dir restarts itself on it. The new key is
    /// kept in `identity.next.age` until the rotation is done: run the
    /// command again to finish one that was interrupted.
    Rotate {
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

/// A client of the gateway, with a token: the one given, or a fresh login
/// with the identity in `data_dir`.
async fn client(data_dir: &std::path::Path, g: GatewayArgs) -> Result<Client> {
    let client = Client::new(&g.gateway)?;
    match g.token {
        Some(token) => Ok(client.with_token(token)),
        None => {
            let (key, member) = icn_node::load_member_identity(data_dir)?;
            let mut client = client;
            login_as(&mut client, &key, &member).await?;
            Ok(client)
        }
    }
}

/// Logs in as `member` with `key`: its DID key, or the key it rotated to.
async fn login_as(
    client: &mut Client,
    key: &icn_engine::Keypair,
    member: &icn_schemas::Did,
) -> Result<serde_json::Value> {
    let member = (*member != key.did()).then(|| member.to_string());
    client.login_for(key, member.as_deref()).await
}

/// Where `icnctl id rotate` keeps the new key until the rotation is done.
const NEXT_KEYSTORE: &str = "identity.next.age";

/// `icnctl id rotate`: see [`IdCommand::Rotate`].
async fn rotate(data_dir: &std::path::Path, g: GatewayArgs) -> Result<()> {
    let passphrase = icn_engine::Passphrase::from_env_or_prompt("Keystore passphrase: ")?;
    let keystore = icn_engine::Keystore::in_dir(data_dir);
    let (old, member) = keystore.load_member(&passphrase)?;
    // The new key is on disk before anything names it.
    let next = icn_engine::Keystore::at(&data_dir.join(NEXT_KEYSTORE));
    let new = if next.exists() {
        let (new, for_member) = next.load_member(&passphrase)?;
        anyhow::ensure!(
            for_member == member,
            "{} holds a key for {for_member}, not {member}; move it away",
            next.path().display()
        );
        new
    } else {
        let new = icn_engine::Keypair::generate()?;
        next.write_member(&new, &member, &passphrase)?;
        new
    };
    let mut client = Client::new(&g.gateway)?;
    match &g.token {
        Some(token) => client = client.with_token(token.clone()),
        None => {
            if let Err(e) = login_as(&mut client, &old, &member).await {
                // Interrupted after the gateway rotated: the old key is
                // revoked, and the new one logs in.
                let mut retry = Client::new(&g.gateway)?;
                if login_as(&mut retry, &new, &member).await.is_err() {
                    return Err(e);
                }
                keystore.write_member(&new, &member, &passphrase)?;
                std::fs::remove_file(next.path())?;
                println!(
                    "the rotation to {} was done already; the keystore now holds it",
                    new.did()
                );
                return reload(data_dir);
            }
        }
    }
    let answer = client
        .call(
            "POST",
            "/v1/identity/rotate",
            Some(serde_json::json!({
                "key": new.did(),
                "proof": hex::encode(new.device_proof(&member)),
            })),
        )
        .await?;
    let partial = answer["outcomes"]
        .as_array()
        .is_some_and(|o| o.iter().any(|o| o["done"] != serde_json::json!(true)));
    if partial {
        // The old key still holds the powers where the rotation failed.
        let kept = data_dir.join(OLD_KEYSTORE);
        std::fs::copy(keystore.path(), &kept)?;
        eprintln!(
            "not rotated in every co-op (see outcomes): the old key is kept in {}",
            kept.display()
        );
    }
    keystore.write_member(&new, &member, &passphrase)?;
    std::fs::remove_file(next.path())?;
    print(&answer)?;
    reload(data_dir)
}

/// Where `icnctl id rotate` keeps the old key when some co-op refused.
const OLD_KEYSTORE: &str = "identity.old.age";

/// Tells an icnd running on `data_dir` that its identity changed.
fn reload(data_dir: &std::path::Path) -> Result<()> {
    if icn_node::control::socket_path(data_dir).exists() {
        control(data_dir, &Request::Reload)?;
        eprintln!("icnd on {} restarts on the new key", data_dir.display());
    }
    Ok(())
}

/// Builds an entry with `body` by `member` (the identity's own DID when
/// `None`), citing the heads the gateway names, signs it with the identity
/// in `data_dir`, and submits its canonical bytes
/// (`POST /v1/ledger/{coop}/entries`).
async fn sign_and_submit(
    data_dir: &std::path::Path,
    g: GatewayArgs,
    coop: &str,
    member: Option<icn_schemas::Did>,
    body: icn_schemas::ledger::Body,
    memo: &str,
) -> Result<serde_json::Value> {
    use icn_schemas::ledger::{Entry, SignedEntry};
    let (key, me) = icn_node::load_member_identity(data_dir)?;
    let member = member.or((me != key.did()).then_some(me));
    let client = match g.token {
        Some(token) => Client::new(&g.gateway)?.with_token(token),
        None => {
            let mut client = Client::new(&g.gateway)?;
            let member = member.map(|m| m.to_string());
            client.login_for(&key, member.as_deref()).await?;
            client
        }
    };
    let heads = client.ledger_heads(coop).await?;
    let entry = Entry {
        coop: heads.coop,
        parents: heads.ledger_heads,
        author: member.unwrap_or_else(|| key.did()),
        signer: key.did(),
        timestamp: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        coop_heads: heads.coop_heads,
        body,
        memo: memo.to_owned(),
        decision: None,
        delegation: None,
    };
    let signature = key.sign(&entry.signing_message()?);
    let bytes = SignedEntry { entry, signature }.encode()?;
    client
        .call(
            "POST",
            &format!("/v1/ledger/{coop}/entries"),
            Some(serde_json::json!({ "bytes": hex::encode(bytes) })),
        )
        .await
}

/// One request to the gateway, with [`client`]'s token.
async fn request(
    data_dir: &std::path::Path,
    gateway: GatewayArgs,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let client = client(data_dir, gateway).await?;
    if method == "GET" {
        // A list is printed whole: every page, followed.
        client.list(path).await
    } else {
        client.call(method, path, body).await
    }
}

fn print(value: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn gateway_command(data_dir: &std::path::Path, command: Command) -> Result<()> {
    match command {
        Command::Auth(AuthCommand::Login {
            gateway,
            output,
            member,
        }) => {
            let (key, me) = icn_node::load_member_identity(data_dir)?;
            let member = member.or((me != key.did()).then(|| me.to_string()));
            let mut client = Client::new(&gateway)?;
            let answer = client.login_for(&key, member.as_deref()).await?;
            if output == "json" {
                print(&answer)?;
            } else {
                println!("{}", answer["token"].as_str().unwrap_or_default());
            }
        }
        Command::Auth(AuthCommand::Token { coop, gateway }) => {
            let (key, member) = icn_node::load_member_identity(data_dir)?;
            let mut client = Client::new(&gateway)?;
            let answer = login_as(&mut client, &key, &member).await?;
            if let Some(coop) = coop {
                client
                    .call("GET", &format!("/v1/coops/{coop}"), None)
                    .await?;
            }
            println!("{}", answer["token"].as_str().unwrap_or_default());
        }
        Command::Ledger(LedgerCommand::Position { coop, did, gateway }) => {
            let c = client(data_dir, gateway).await?;
            print(
                &c.call("GET", &format!("/v1/ledger/{coop}/position/{did}"), None)
                    .await?,
            )?;
        }
        Command::Ledger(LedgerCommand::Freeze {
            coop,
            did,
            unfreeze,
            gateway,
        }) => {
            let c = client(data_dir, gateway).await?;
            print(
                &c.call(
                    "POST",
                    &format!("/v1/ledger/{coop}/freeze"),
                    Some(serde_json::json!({"did": did, "frozen": !unfreeze})),
                )
                .await?,
            )?;
        }
        Command::Ledger(LedgerCommand::Grant {
            coop,
            device,
            amount,
            unit,
            gateway,
        }) => {
            let device = icn_schemas::Did::parse_valid(&device)
                .map_err(|e| anyhow::anyhow!("{device:?}: {e}"))?;
            let body = icn_schemas::ledger::Body::Grant {
                device,
                unit,
                amount,
            };
            print(&sign_and_submit(data_dir, gateway, &coop, None, body, "allowance").await?)?;
        }
        Command::Ledger(LedgerCommand::Release {
            coop,
            amount,
            unit,
            member,
            gateway,
        }) => {
            let member = icn_schemas::Did::parse_valid(&member)
                .map_err(|e| anyhow::anyhow!("{member:?}: {e}"))?;
            let body = icn_schemas::ledger::Body::Release { unit, amount };
            print(
                &sign_and_submit(data_dir, gateway, &coop, Some(member), body, "release").await?,
            )?;
        }
        Command::Ledger(LedgerCommand::Settle {
            coop,
            to,
            amount,
            unit,
            memo,
            idempotency_key,
            gateway,
        }) => {
            let c = client(data_dir, gateway).await?;
            let body = serde_json::json!({"to": to, "amount": amount, "unit": unit, "memo": memo});
            let path = format!("/v1/ledger/{coop}/settle");
            let answer = match idempotency_key {
                Some(key) => c.call_with_key("POST", &path, Some(body), &key).await?,
                None => c.call("POST", &path, Some(body)).await?,
            };
            print(&answer)?;
        }
        Command::Ledger(LedgerCommand::History {
            coop,
            account,
            cursor,
            limit,
            gateway,
        }) => {
            let c = client(data_dir, gateway).await?;
            let mut path = format!("/v1/ledger/{coop}/history?limit={limit}");
            if let Some(a) = account {
                path.push_str(&format!("&account={a}"));
            }
            if let Some(cur) = cursor {
                path.push_str(&format!("&cursor={cur}"));
            }
            print(&c.call("GET", &path, None).await?)?;
        }
        Command::Ledger(LedgerCommand::Entry { coop, id, gateway }) => {
            let c = client(data_dir, gateway).await?;
            print(
                &c.call("GET", &format!("/v1/ledger/{coop}/entries/{id}"), None)
                    .await?,
            )?;
        }
        Command::Ledger(LedgerCommand::TrialBalance { coop, gateway }) => {
            let c = client(data_dir, gateway).await?;
            print(
                &c.call("GET", &format!("/v1/ledger/{coop}/trial-balance"), None)
                    .await?,
            )?;
        }
        Command::Gov(gov) => gov_command(data_dir, gov).await?,
        Command::Device(device) => device_command(data_dir, device).await?,
        Command::Coop(coop) => coop_command(data_dir, coop).await?,
        Command::Relay(relay) => relay_command(data_dir, relay).await?,
        Command::Member(member) => member_command(data_dir, member).await?,
        Command::Invite(invite) => invite_command(data_dir, invite).await?,
        _ => unreachable!("only gateway commands come here"),
    }
    Ok(())
}

async fn gov_command(data_dir: &std::path::Path, command: GovCommand) -> Result<()> {
    use serde_json::json;
    let answer = match command {
        GovCommand::Domains { coop, gateway } => {
            let path = match coop {
                Some(c) => format!("/v1/gov/domains?coop_id={c}"),
                None => "/v1/gov/domains".into(),
            };
            request(data_dir, gateway, "GET", &path, None).await?
        }
        GovCommand::Cancel { proposal, gateway } => {
            request(
                data_dir,
                gateway,
                "POST",
                &format!("/v1/gov/proposals/{proposal}/cancel"),
                Some(json!({})),
            )
            .await?
        }
        GovCommand::CreateDomain {
            id,
            name,
            profile,
            members,
            coop,
            quorum_percent,
            approval_percent,
            gateway,
        } => {
            let mut body = json!({"id": id, "name": name, "profile": profile, "members": members});
            for (key, value) in [
                ("coop_id", coop.map(|v| json!(v))),
                ("quorum_percent", quorum_percent.map(|v| json!(v))),
                ("approval_percent", approval_percent.map(|v| json!(v))),
            ] {
                if let Some(v) = value {
                    body[key] = v;
                }
            }
            request(data_dir, gateway, "POST", "/v1/gov/domains", Some(body)).await?
        }
        GovCommand::Proposals { domain, gateway } => {
            let path = match domain {
                Some(d) => format!("/v1/gov/domains/{d}/proposals"),
                None => "/v1/gov/proposals".into(),
            };
            request(data_dir, gateway, "GET", &path, None).await?
        }
        GovCommand::Propose {
            domain,
            title,
            description,
            payload,
            gateway,
        } => {
            let payload: serde_json::Value = match payload {
                Some(p) => serde_json::from_str(&p)
                    .map_err(|e| anyhow::anyhow!("--payload is not JSON: {e}"))?,
                None => json!({"type": "text", "body": description}),
            };
            let body = json!({"domain_id": domain, "title": title, "description": description,
                              "payload": payload});
            request(data_dir, gateway, "POST", "/v1/gov/proposals", Some(body)).await?
        }
        GovCommand::Open {
            proposal,
            period_seconds,
            gateway,
        } => {
            let body = json!({"voting_period_seconds": period_seconds});
            request(
                data_dir,
                gateway,
                "POST",
                &format!("/v1/gov/proposals/{proposal}/open"),
                Some(body),
            )
            .await?
        }
        GovCommand::Vote {
            proposal,
            choice,
            comment,
            gateway,
        } => {
            let body = json!({"choice": choice, "comment": comment});
            request(
                data_dir,
                gateway,
                "POST",
                &format!("/v1/gov/proposals/{proposal}/vote"),
                Some(body),
            )
            .await?
        }
        GovCommand::Close { proposal, gateway } => {
            request(
                data_dir,
                gateway,
                "POST",
                &format!("/v1/gov/proposals/{proposal}/close"),
                Some(json!({})),
            )
            .await?
        }
        GovCommand::Show { proposal, gateway } => {
            request(
                data_dir,
                gateway,
                "GET",
                &format!("/v1/gov/proposals/{proposal}"),
                None,
            )
            .await?
        }
        GovCommand::Module { file, gateway } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            client(data_dir, gateway)
                .await?
                .upload("/v1/modules", "application/wasm", bytes)
                .await?
        }
        GovCommand::Decisions { coop, gateway } => {
            request(
                data_dir,
                gateway,
                "GET",
                &format!("/v1/registry/decisions?coop_id={coop}"),
                None,
            )
            .await?
        }
        GovCommand::Trace { receipt, gateway } => {
            request(
                data_dir,
                gateway,
                "GET",
                &format!("/v1/registry/decisions/{receipt}/trace"),
                None,
            )
            .await?
        }
    };
    print(&answer)
}

async fn coop_command(data_dir: &std::path::Path, command: CoopCommand) -> Result<()> {
    use serde_json::json;
    let answer = match command {
        CoopCommand::Show { coop, gateway } => {
            request(data_dir, gateway, "GET", &format!("/v1/coops/{coop}"), None).await?
        }
        CoopCommand::Create {
            id,
            name,
            description,
            default_credit_limit,
            units,
            gateway,
        } => {
            let mut body = json!({ "id": id });
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            if let Some(l) = default_credit_limit {
                body["default_credit_limit"] = json!(l);
            }
            if !units.is_empty() {
                let mut list = Vec::new();
                for u in units {
                    list.push(match u.split_once(':') {
                        None => json!({ "id": u }),
                        Some((id, scale)) => {
                            let scale: i64 = scale.parse().map_err(|_| {
                                anyhow::anyhow!("--unit {u}: the scale is a number")
                            })?;
                            json!({ "id": id, "scale": scale })
                        }
                    });
                }
                body["units"] = json!(list);
            }
            request(data_dir, gateway, "POST", "/v1/coops", Some(body)).await?
        }
        CoopCommand::Set {
            coop,
            name,
            description,
            default_credit_limit,
            treasury_domain,
            approval,
            member_invites,
            gateway,
        } => {
            let mut body = serde_json::Map::new();
            if approval.is_some() || member_invites.is_some() {
                let mut onboarding = serde_json::Map::new();
                if let Some(a) = approval {
                    onboarding.insert("approval".into(), json!(a));
                }
                if let Some(m) = member_invites {
                    onboarding.insert("member_invites".into(), json!(m));
                }
                body.insert("onboarding".into(), onboarding.into());
            }
            for (key, value) in [
                ("name", name.map(|v| json!(v))),
                ("description", description.map(|v| json!(v))),
                (
                    "default_credit_limit",
                    default_credit_limit.map(|v| json!(v)),
                ),
                ("treasury_domain", treasury_domain.map(|v| json!(v))),
            ] {
                if let Some(v) = value {
                    body.insert(key.into(), v);
                }
            }
            if body.is_empty() {
                anyhow::bail!("nothing to set: see icnctl coop set --help");
            }
            request(
                data_dir,
                gateway,
                "PUT",
                &format!("/v1/coops/{coop}"),
                Some(body.into()),
            )
            .await?
        }
        CoopCommand::Unit {
            coop,
            unit,
            name,
            scale,
            credit_limit,
            gateway,
        } => {
            let mut body = json!({"name": name, "scale": scale});
            if let Some(limit) = credit_limit {
                body["credit_limit"] = json!(limit);
            }
            request(
                data_dir,
                gateway,
                "PUT",
                &format!("/v1/coops/{coop}/units/{unit}"),
                Some(body),
            )
            .await?
        }
        CoopCommand::Trusted {
            coop,
            add,
            remove,
            gateway,
        } => {
            let path = format!("/v1/coops/{coop}/trusted-contacts");
            match (add, remove) {
                (Some(did), _) => {
                    request(
                        data_dir,
                        gateway,
                        "POST",
                        &path,
                        Some(json!({ "did": did })),
                    )
                    .await?
                }
                (None, Some(did)) => {
                    request(data_dir, gateway, "DELETE", &format!("{path}/{did}"), None).await?
                }
                (None, None) => request(data_dir, gateway, "GET", &path, None).await?,
            }
        }
        CoopCommand::Rate {
            coop,
            from,
            to,
            num,
            den,
            gateway,
        } => {
            request(
                data_dir,
                gateway,
                "PUT",
                &format!("/v1/coops/{coop}/rates/{from}/{to}"),
                Some(json!({"num": num, "den": den})),
            )
            .await?
        }
    };
    print(&answer)
}

async fn invite_command(data_dir: &std::path::Path, command: InviteCommand) -> Result<()> {
    use serde_json::json;
    let answer = match command {
        InviteCommand::Create {
            coop,
            role,
            credit_limit,
            expires_in,
            gateway,
        } => {
            let mut body = json!({ "role": role });
            if let Some(l) = credit_limit {
                body["credit_limit"] = json!(l);
            }
            if let Some(e) = expires_in {
                body["expires_in_seconds"] = json!(e);
            }
            request(
                data_dir,
                gateway,
                "POST",
                &format!("/v1/coops/{coop}/invites"),
                Some(body),
            )
            .await?
        }
        InviteCommand::Accept {
            coop,
            code,
            gateway,
        } => {
            request(
                data_dir,
                gateway,
                "POST",
                &format!("/v1/coops/{coop}/applications"),
                Some(json!({ "code": code })),
            )
            .await?
        }
        InviteCommand::Status { coop, did, gateway } => {
            let did = member_or_me(data_dir, did)?;
            request(
                data_dir,
                gateway,
                "GET",
                &format!("/v1/coops/{coop}/applications/{did}"),
                None,
            )
            .await?
        }
        InviteCommand::Approve { coop, did, gateway } => {
            request(
                data_dir,
                gateway,
                "POST",
                &format!("/v1/coops/{coop}/applications/{did}/approve"),
                Some(json!({})),
            )
            .await?
        }
        InviteCommand::Propose { coop, did, gateway } => {
            request(
                data_dir,
                gateway,
                "POST",
                &format!("/v1/coops/{coop}/applications/{did}/propose"),
                Some(json!({})),
            )
            .await?
        }
    };
    print(&answer)
}

async fn member_command(data_dir: &std::path::Path, command: MemberCommand) -> Result<()> {
    use serde_json::json;
    let answer = match command {
        MemberCommand::List { coop, gateway } => {
            request(
                data_dir,
                gateway,
                "GET",
                &format!("/v1/coops/{coop}/members"),
                None,
            )
            .await?
        }
        MemberCommand::Add {
            coop,
            did,
            role,
            gateway,
        } => {
            request(
                data_dir,
                gateway,
                "POST",
                &format!("/v1/coops/{coop}/members"),
                Some(json!({"did": did, "role": role})),
            )
            .await?
        }
        MemberCommand::Role {
            coop,
            did,
            role,
            gateway,
        } => {
            request(
                data_dir,
                gateway,
                "PUT",
                &format!("/v1/coops/{coop}/members/{did}"),
                Some(json!({ "role": role })),
            )
            .await?
        }
        MemberCommand::Limit {
            coop,
            did,
            limit,
            unit,
            gateway,
        } => {
            let body = match unit {
                Some(unit) => json!({ "credit_limits": { unit: limit } }),
                None => json!({ "credit_limit": limit }),
            };
            request(
                data_dir,
                gateway,
                "PUT",
                &format!("/v1/coops/{coop}/members/{did}"),
                Some(body),
            )
            .await?
        }
        MemberCommand::Remove { coop, did, gateway } => {
            request(
                data_dir,
                gateway,
                "DELETE",
                &format!("/v1/coops/{coop}/members/{did}"),
                None,
            )
            .await?
        }
    };
    print(&answer)
}

async fn relay_command(data_dir: &std::path::Path, command: RelayCommand) -> Result<()> {
    use serde_json::json;
    let answer = match command {
        RelayCommand::List { coop, gateway } => {
            request(
                data_dir,
                gateway,
                "GET",
                &format!("/v1/coops/{coop}/relays"),
                None,
            )
            .await?
        }
        RelayCommand::Add {
            coop,
            did,
            addr,
            gateway,
        } => {
            request(
                data_dir,
                gateway,
                "POST",
                &format!("/v1/coops/{coop}/relays"),
                Some(json!({"did": did, "addr": addr})),
            )
            .await?
        }
        RelayCommand::Remove { coop, did, gateway } => {
            request(
                data_dir,
                gateway,
                "DELETE",
                &format!("/v1/coops/{coop}/relays/{did}"),
                None,
            )
            .await?
        }
    };
    print(&answer)
}

/// `member`, or the DID of the identity in `data_dir`.
fn member_or_me(data_dir: &std::path::Path, member: Option<String>) -> Result<String> {
    match member {
        Some(m) => Ok(m),
        None => Ok(icn_node::load_member_identity(data_dir)
            .context("no --member given, and no identity to default to")?
            .1
            .to_string()),
    }
}

async fn device_command(data_dir: &std::path::Path, command: DeviceCommand) -> Result<()> {
    use serde_json::json;
    let answer = match command {
        DeviceCommand::List { member, gateway } => {
            let member = member_or_me(data_dir, member)?;
            request(
                data_dir,
                gateway,
                "GET",
                &format!("/v1/devices/{member}"),
                None,
            )
            .await?
        }
        DeviceCommand::Proof { member } => {
            let did: icn_schemas::Did = member.parse().context("--member is not a DID")?;
            let key = icn_node::load_identity(data_dir)?;
            json!({"device": key.did(), "member": did, "proof": hex::encode(key.device_proof(&did))})
        }
        DeviceCommand::Add {
            device,
            proof,
            label,
            member,
            gateway,
        } => {
            let member = member_or_me(data_dir, member)?;
            let body = json!({"device": device, "proof": proof, "label": label});
            request(
                data_dir,
                gateway,
                "POST",
                &format!("/v1/devices/{member}"),
                Some(body),
            )
            .await?
        }
        DeviceCommand::Revoke {
            device,
            reason,
            member,
            gateway,
        } => {
            let member = member_or_me(data_dir, member)?;
            request(
                data_dir,
                gateway,
                "DELETE",
                &format!("/v1/devices/{member}/{device}"),
                Some(json!({ "reason": reason })),
            )
            .await?
        }
        DeviceCommand::EmergencyRevoke {
            member,
            reason,
            gateway,
        } => {
            let body = json!({"target_did": member, "reason": reason});
            request(
                data_dir,
                gateway,
                "POST",
                "/v1/identity/emergency-revoke",
                Some(body),
            )
            .await?
        }
    };
    print(&answer)
}

fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Id(IdCommand::Rotate { gateway }) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(rotate(&args.data_dir, gateway))?;
        }
        command @ (Command::Auth(_)
        | Command::Ledger(_)
        | Command::Gov(_)
        | Command::Device(_)
        | Command::Coop(_)
        | Command::Relay(_)
        | Command::Member(_)
        | Command::Invite(_)) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(gateway_command(&args.data_dir, command))?;
        }
        Command::Backup { file } => {
            let path = std::path::absolute(&file)?;
            let ok = control(
                &args.data_dir,
                &Request::Backup {
                    path: path.display().to_string(),
                },
            )?;
            println!("backup written to {}: {}", path.display(), ok["counts"]);
        }
        Command::Restore { file } => {
            let mut input = std::io::BufReader::new(
                std::fs::File::open(&file)
                    .with_context(|| format!("opening {}", file.display()))?,
            );
            let store = icn_engine::Store::open(&args.data_dir).with_context(|| {
                format!(
                    "opening the store in {} (stop icnd first)",
                    args.data_dir.display()
                )
            })?;
            let engine = icn_engine::Engine::open(store)?;
            let counts = engine.restore(&mut input)?;
            println!(
                "restored into {}: {} documents ({} changes), {} ledger entries, {} modules, {} gateway records",
                args.data_dir.display(),
                counts.docs,
                counts.changes,
                counts.entries,
                counts.blobs,
                counts.gateway
            );
        }
        Command::Id(IdCommand::Export { file }) => {
            let keystore = icn_engine::Keystore::in_dir(&args.data_dir);
            // Check the passphrase opens it before handing out a copy.
            let did = icn_node::load_identity(&args.data_dir)?.did();
            if file.exists() {
                anyhow::bail!("{} exists; choose another file", file.display());
            }
            let bytes = std::fs::read(keystore.path())?;
            icn_engine::keystore::write_atomically(&file, &bytes)?;
            println!(
                "exported {did} to {} (encrypted with your passphrase)",
                file.display()
            );
        }
        Command::Id(IdCommand::Import { file }) => {
            let keystore = icn_engine::Keystore::in_dir(&args.data_dir);
            if keystore.exists() {
                anyhow::bail!(
                    "{} already holds an identity; move it away first (it is the node's key)",
                    keystore.path().display()
                );
            }
            let passphrase = icn_engine::Passphrase::from_env_or_prompt(
                "Passphrase of the exported identity: ",
            )?;
            let key = icn_engine::Keystore::at(&file).load(&passphrase)?;
            let bytes = std::fs::read(&file)?;
            icn_engine::keystore::write_atomically(keystore.path(), &bytes)?;
            println!("imported {} into {}", key.did(), keystore.path().display());
        }
        Command::Id(IdCommand::Init) => {
            let keystore = icn_engine::Keystore::in_dir(&args.data_dir);
            if keystore.exists() {
                anyhow::bail!(
                    "an identity already exists at {}; `icnctl id show` prints it",
                    keystore.path().display()
                );
            }
            let (keypair, _, _) = icn_node::load_or_create_identity(&args.data_dir)?;
            println!("{}", keypair.did());
        }
        Command::Id(IdCommand::Show) => {
            let (key, member) = icn_node::load_member_identity(&args.data_dir)?;
            println!("{member}");
            if key.did() != member {
                eprintln!("signing with {}, the key {member} rotated to", key.did());
            }
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
        Command::Network(NetworkCommand::Dial { did, addr, save }) => {
            let ok = control(&args.data_dir, &Request::Dial { did, addr, save })?;
            if ok.get("saved").and_then(|s| s.as_bool()) == Some(true) {
                println!(
                    "saved in {}",
                    icn_node::peers::path(&args.data_dir).display()
                );
            }
            let new = ok.get("new").and_then(|n| n.as_bool()).unwrap_or(false);
            let (did, addr) = (&ok["did"], &ok["addr"]);
            if new {
                println!(
                    "dialing {} at {}; the node keeps the session up",
                    did.as_str().unwrap_or_default(),
                    addr.as_str().unwrap_or("the address mDNS finds")
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
            // 3: the gateway refused the request; 1: anything else (clap
            // uses 2 for a bad command line).
            if e.downcast_ref::<icn_node::client::ApiError>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
