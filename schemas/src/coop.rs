//! The co-op document: profile, policy, members with their devices, relays.
//!
//! Layout (all maps unless noted):
//!
//! ```text
//! type="coop" schema=1 id creator created_at       written by the genesis only
//! name description                                   strings
//! policy/default_credit_limit                        int
//! policy/units/<unit>/{name, scale, credit_limit}    str, int, int
//! policy/rates/<from unit>/<to unit>/{num, den}      int, int: 1 from = num/den to
//! members/<did>/{role, status, joined_at, display_name, credit_limit}
//! members/<did>/credit_limits/<unit>                 int: its limit in one unit
//! members/<did>/devices/<device key>/{label, added_at, revoked, proof,
//!                                    revoked_at, revoked_reason, revoked_by}
//! policy/trusted_contacts/<did>/added_at
//! relays/<node did>/{addr, added_at}
//! decisions/…, policy/onboarding/…                   see crate::settings
//! ```

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{ObjId, ReadDoc};

use crate::did::Did;
use crate::document::{
    DocKind, GenesisField, Reader, SchemaError, Shape, check_ident, ensure_map, existing_map,
    parse_device_key, parse_did_key, write_genesis,
};

/// A member's role in a co-op.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May change profile, policy, members, roles and relays.
    Admin,
    /// May write its own entries.
    Member,
    /// May read only.
    Observer,
}

impl Role {
    const NAMES: &'static [&'static str] = &["admin", "member", "observer"];

    /// The role's name in the document.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Observer => "observer",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            "observer" => Some(Role::Observer),
            _ => None,
        }
    }
}

/// Whether a member may act.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// May act within its role.
    Active,
    /// Temporarily may not act.
    Suspended,
    /// Left or was removed; may not act.
    Removed,
}

impl MemberStatus {
    const NAMES: &'static [&'static str] = &["active", "suspended", "removed"];

    /// The status's name in the document.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Active => "active",
            MemberStatus::Suspended => "suspended",
            MemberStatus::Removed => "removed",
        }
    }

    /// Parses a status name.
    pub fn parse(s: &str) -> Option<MemberStatus> {
        match s {
            "active" => Some(MemberStatus::Active),
            "suspended" => Some(MemberStatus::Suspended),
            "removed" => Some(MemberStatus::Removed),
            _ => None,
        }
    }
}

/// Every field of the co-op schema, as found at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoopField {
    /// A genesis field at the root.
    Genesis(GenesisField),
    /// `name`.
    Name,
    /// `description`.
    Description,
    /// `policy`.
    Policy,
    /// `policy/default_credit_limit`.
    DefaultCreditLimit,
    /// `policy/treasury_domain`: the governance domain whose accepted
    /// decisions execute (treasury, freezes, membership, settings).
    TreasuryDomain,
    /// `policy/units`.
    Units,
    /// `policy/units/<unit>` and its fields.
    Unit(String),
    /// `policy/rates` and everything below it.
    Rates,
    /// `members`.
    Members,
    /// `members/<did>`.
    Member(Did),
    /// `members/<did>/role`.
    MemberRole(Did),
    /// `members/<did>/status`.
    MemberStatus(Did),
    /// `members/<did>/joined_at`.
    MemberJoinedAt(Did),
    /// `members/<did>/credit_limit`.
    MemberCreditLimit(Did),
    /// `members/<did>/display_name`.
    MemberDisplayName(Did),
    /// `members/<did>/key`: the key that holds the member's DID key powers
    /// since a rotation ([`key_of`]).
    MemberKey(Did),
    /// `members/<did>/devices` and everything below it but the proof.
    MemberDevices(Did),
    /// `members/<did>/devices/<key>/proof`: the device's signature of
    /// [`device_proof_message`], its consent to act for the member.
    DeviceProof {
        /// The member.
        member: Did,
        /// The device key.
        device: Did,
    },
    /// `members/<did>/devices/<key>/{revoked, revoked_at, revoked_reason,
    /// revoked_by}`: a revocation, which never comes undone.
    DeviceRevocation {
        /// The member.
        member: Did,
        /// The device key.
        device: Did,
    },
    /// `policy/trusted_contacts` and everything below it: the members who
    /// may revoke any member's devices in an emergency.
    TrustedContacts,
    /// `relays` and everything below it.
    Relays,
    /// `decisions` and everything below it: the governance decisions
    /// applied to this document ([`crate::settings`]).
    Decisions,
    /// `policy/onboarding` and everything below it: who approves
    /// applications and who invites.
    Onboarding,
}

/// Why a device was revoked.
pub const REVOKE_REASONS: &[&str] = &["lost", "stolen", "retired", "emergency"];

/// Maps a path to its field and the shape it must hold.
pub fn classify(path: &[&str]) -> Result<(CoopField, Shape), SchemaError> {
    use CoopField as F;
    let unknown = || SchemaError::UnknownPath(path.join("/"));
    let did = |s: &str| parse_did_key("member DID", s);
    Ok(match path {
        [key] => match *key {
            "name" => (F::Name, Shape::Str(200)),
            "description" => (F::Description, Shape::Str(4000)),
            "policy" => (F::Policy, Shape::Map),
            "members" => (F::Members, Shape::Map),
            "relays" => (F::Relays, Shape::Map),
            "decisions" => (F::Decisions, Shape::Map),
            other => match GenesisField::classify(other) {
                Some((field, shape)) => (F::Genesis(field), shape),
                None => return Err(unknown()),
            },
        },
        ["policy", "default_credit_limit"] => (F::DefaultCreditLimit, Shape::NonNegative),
        ["policy", "treasury_domain"] => (F::TreasuryDomain, Shape::Str(64)),
        ["policy", "units"] => (F::Units, Shape::Map),
        ["policy", "onboarding"] => (F::Onboarding, Shape::Map),
        ["policy", "onboarding", "approval"] => (
            F::Onboarding,
            Shape::OneOf(crate::settings::Approval::NAMES),
        ),
        ["policy", "onboarding", "member_invites"] => (F::Onboarding, Shape::Bool),
        ["decisions", hash, rest @ ..] => {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(unknown());
            }
            let shape = match rest {
                [] => Shape::Map,
                ["domain"] => Shape::Str(64),
                ["proposal"] => Shape::Str(128),
                ["applied_at"] => Shape::NonNegative,
                _ => return Err(unknown()),
            };
            (F::Decisions, shape)
        }
        ["policy", "trusted_contacts", rest @ ..] => {
            let shape = match rest {
                [] => Shape::Map,
                [contact] => {
                    parse_did_key("trusted contact DID", contact)?;
                    Shape::Map
                }
                [contact, "added_at"] => {
                    parse_did_key("trusted contact DID", contact)?;
                    Shape::NonNegative
                }
                _ => return Err(unknown()),
            };
            (F::TrustedContacts, shape)
        }
        ["policy", "rates", rest @ ..] => {
            let shape = match rest {
                [] => Shape::Map,
                [from] | [from, _] if check_ident("unit", from).is_err() => {
                    return Err(unknown());
                }
                [_] => Shape::Map,
                [_, to] => {
                    check_ident("unit", to)?;
                    Shape::Map
                }
                [_, _, "num"] | [_, _, "den"] => Shape::NonNegative,
                _ => return Err(unknown()),
            };
            (F::Rates, shape)
        }
        ["policy", "units", unit, rest @ ..] => {
            check_ident("unit", unit)?;
            let shape = match rest {
                [] => Shape::Map,
                ["name"] => Shape::Str(64),
                ["scale"] | ["credit_limit"] => Shape::NonNegative,
                _ => return Err(unknown()),
            };
            (F::Unit((*unit).to_owned()), shape)
        }
        ["members", member, rest @ ..] => {
            let member = did(member)?;
            match rest {
                [] => (F::Member(member), Shape::Map),
                ["role"] => (F::MemberRole(member), Shape::OneOf(Role::NAMES)),
                ["status"] => (F::MemberStatus(member), Shape::OneOf(MemberStatus::NAMES)),
                ["joined_at"] => (F::MemberJoinedAt(member), Shape::NonNegative),
                ["credit_limit"] => (F::MemberCreditLimit(member), Shape::NonNegative),
                ["credit_limits"] => (F::MemberCreditLimit(member), Shape::Map),
                ["credit_limits", unit] => {
                    check_ident("unit", unit)?;
                    (F::MemberCreditLimit(member), Shape::NonNegative)
                }
                ["display_name"] => (F::MemberDisplayName(member), Shape::Str(200)),
                ["key"] => (F::MemberKey(member), Shape::Did),
                ["devices"] => (F::MemberDevices(member), Shape::Map),
                ["devices", key, rest @ ..] => {
                    let device = parse_device_key(key)?;
                    let shape = match rest {
                        [] => Shape::Map,
                        ["label"] => Shape::Str(200),
                        ["added_at"] => Shape::NonNegative,
                        ["revoked" | "revoked_at" | "revoked_reason" | "revoked_by"] => {
                            let shape = match rest[0] {
                                "revoked" => Shape::Bool,
                                "revoked_at" => Shape::NonNegative,
                                "revoked_reason" => Shape::OneOf(REVOKE_REASONS),
                                _ => Shape::Did,
                            };
                            return Ok((F::DeviceRevocation { member, device }, shape));
                        }
                        ["proof"] => {
                            return Ok((F::DeviceProof { member, device }, Shape::Str(128)));
                        }
                        _ => return Err(unknown()),
                    };
                    (F::MemberDevices(member), shape)
                }
                _ => return Err(unknown()),
            }
        }
        ["relays", relay, rest @ ..] => {
            parse_did_key("relay DID", relay)?;
            let shape = match rest {
                [] => Shape::Map,
                ["addr"] => Shape::Str(200),
                ["added_at"] => Shape::NonNegative,
                _ => return Err(unknown()),
            };
            (F::Relays, shape)
        }
        _ => return Err(unknown()),
    })
}

/// Whether an operation may delete the value at this path. Only relays and
/// trusted contacts can be removed outright; members and devices change
/// status instead, so the record of who could act when is never lost.
pub fn deletable(field: &CoopField, path: &[&str]) -> bool {
    match field {
        CoopField::Relays => path.len() == 2,
        CoopField::TrustedContacts => path.len() == 3,
        _ => false,
    }
}

/// A device of a member.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Device {
    /// A name the member chose.
    pub label: Option<String>,
    /// Unix seconds.
    pub added_at: Option<i64>,
    /// Whether the device was revoked. A revoked device never acts again.
    pub revoked: bool,
    /// When, unix seconds, if the revocation says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    /// Why: one of [`REVOKE_REASONS`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<String>,
    /// Who revoked it: the member, an admin, or a trusted contact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<Did>,
    /// Whether the device signed its consent to act for the member (see
    /// [`device_proof_message`]). Validation checks the signature when the
    /// proof is written, so a proof in the document is a valid one. Whether a
    /// key may act is [`is_live_device`]'s to say.
    pub proven: bool,
}

/// What a device signs to consent to act for `member`: without it, anyone
/// could list someone else's device key as their own.
pub fn device_proof_message(member: &Did) -> Vec<u8> {
    format!("icn-device/v1\n{member}").into_bytes()
}

/// A member of a co-op.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// The member's DID.
    pub did: Did,
    /// Role.
    pub role: Role,
    /// Status.
    pub status: MemberStatus,
    /// Unix seconds.
    pub joined_at: Option<i64>,
    /// A name to show.
    pub display_name: Option<String>,
    /// Override of the co-op's default credit limit, in every unit.
    pub credit_limit: Option<i64>,
    /// Overrides in one unit each, over `credit_limit`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub credit_limits: BTreeMap<String, i64>,
    /// Devices by base58 key.
    pub devices: BTreeMap<String, Device>,
    /// The key holding the member's DID key powers, when a rotation moved
    /// them off the DID key ([`key_of`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Did>,
}

impl Member {
    /// Whether the member may act at all.
    pub fn is_active(&self) -> bool {
        self.status == MemberStatus::Active
    }

    /// Reads one member; `None` when absent or malformed.
    pub fn read(r: Reader<'_>, did: &Did) -> Option<Member> {
        let obj = r.map_path(&["members", &did.to_string()])?;
        Self::read_at(r, &obj, *did)
    }

    fn read_at(r: Reader<'_>, obj: &ObjId, did: Did) -> Option<Member> {
        let mut devices = BTreeMap::new();
        if let Some(devs) = r.map(obj, "devices") {
            for key in r.keys(&devs) {
                if let Some(dev) = r.map(&devs, &key) {
                    devices.insert(
                        key,
                        Device {
                            label: r.str(&dev, "label"),
                            added_at: r.int(&dev, "added_at"),
                            revoked: is_revoked(r, &dev),
                            revoked_at: r.int(&dev, "revoked_at"),
                            revoked_reason: r.str(&dev, "revoked_reason"),
                            revoked_by: r.str(&dev, "revoked_by").and_then(|s| s.parse().ok()),
                            proven: r.str(&dev, "proof").is_some(),
                        },
                    );
                }
            }
        }
        Some(Member {
            did,
            role: Role::parse(&r.str(obj, "role")?)?,
            status: MemberStatus::parse(&r.str(obj, "status")?)?,
            joined_at: r.int(obj, "joined_at"),
            display_name: r.str(obj, "display_name"),
            credit_limit: r.int(obj, "credit_limit"),
            credit_limits: r
                .map(obj, "credit_limits")
                .map(|l| {
                    r.keys(&l)
                        .into_iter()
                        .filter_map(|unit| Some((unit.clone(), r.int(&l, &unit)?)))
                        .collect()
                })
                .unwrap_or_default(),
            devices,
            key: named_key(r.strs_all(obj, "key"), &did).filter(|k| *k != did),
        })
    }
}

/// What authorisation needs to know of a member, and nothing more: reading
/// a member's other fields as of past heads costs a scan of their history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The member.
    pub did: Did,
    /// Role.
    pub role: Role,
    /// Status.
    pub status: MemberStatus,
}

impl Standing {
    /// Reads a member's role and status; `None` when not a member.
    pub fn read(r: Reader<'_>, did: &Did) -> Option<Standing> {
        let obj = r.map_path(&["members", &did.to_string()])?;
        Some(Standing {
            did: *did,
            role: Role::parse(&r.str(&obj, "role")?)?,
            status: MemberStatus::parse(&r.str(&obj, "status")?)?,
        })
    }

    /// Whether the member may act at all.
    pub fn is_active(&self) -> bool {
        self.status == MemberStatus::Active
    }

    /// Whether the member is an active admin.
    pub fn is_admin(&self) -> bool {
        self.is_active() && self.role == Role::Admin
    }
}

/// Whether some member is an active admin: the co-op can still add members
/// and change its policy.
pub fn has_active_admin(r: Reader<'_>) -> bool {
    r.map_path(&["members"]).is_some_and(|members| {
        r.did_keys(&members)
            .iter()
            .any(|did| Standing::read(r, did).is_some_and(|s| s.is_admin()))
    })
}

/// Whether `device` is listed among `member`'s devices and was revoked:
/// one device's flag, without reading the rest of the member.
pub fn is_revoked_device(r: Reader<'_>, member: &Did, device: &Did) -> bool {
    r.map_path(&[
        "members",
        &member.to_string(),
        "devices",
        &device.key_string(),
    ])
    .is_some_and(|d| is_revoked(r, &d))
}

/// Whether `node` is registered as one of the co-op's relays.
pub fn is_relay(r: Reader<'_>, node: &Did) -> bool {
    r.map_path(&["relays", &node.to_string()]).is_some()
}

/// Whether `device` is a live device of `member`: listed, not revoked, and
/// either the member's own DID key or proven by the device.
pub fn is_live_device(r: Reader<'_>, member: &Did, device: &Did) -> bool {
    let Some(d) = r.map_path(&[
        "members",
        &member.to_string(),
        "devices",
        &device.key_string(),
    ]) else {
        return false;
    };
    !is_revoked(r, &d) && (device == member || r.str(&d, "proof").is_some())
}

/// The key that holds `member`'s DID key powers (voting, seals, granting
/// allowances, spending general credit beside them): `members/<did>/key`
/// once the member has rotated its key, else the DID key itself. `None`
/// while two concurrent rotations name different keys: the member acts as
/// neither until it names one again, having seen both.
pub fn key_of(r: Reader<'_>, member: &Did) -> Option<Did> {
    let Some(m) = r.map_path(&["members", &member.to_string()]) else {
        return Some(*member);
    };
    named_key(r.strs_all(&m, "key"), member)
}

/// The key a member record names in `key` (its conflicting values, as
/// written): none names the DID key; one names itself; several name none.
pub(crate) fn named_key(values: Vec<String>, member: &Did) -> Option<Did> {
    match values.as_slice() {
        [] => Some(*member),
        [one] => one.parse().ok(),
        _ => None,
    }
}

/// Names `key` as the key holding `member`'s DID key powers: a rotation.
/// `key` must be a live device of the member (the permission rules check
/// it), and the change is signed by the key it replaces.
pub fn set_member_key(
    tx: &mut impl Transactable,
    member: &Did,
    key: &Did,
) -> Result<(), SchemaError> {
    let m = member_obj(tx, member)?;
    tx.put(&m, "key", key.to_string())?;
    Ok(())
}

/// A device is revoked once any revocation field is written: `revoked_at`
/// is never deleted, so a concurrent `revoked: false` (re-adding the key)
/// cannot win over a revocation.
fn is_revoked(r: Reader<'_>, d: &ObjId) -> bool {
    r.bool(d, "revoked").unwrap_or(false) || r.int(d, "revoked_at").is_some()
}

/// Whether `did` is one of the co-op's trusted contacts, who may revoke any
/// member's devices in an emergency.
pub fn is_trusted_contact(r: Reader<'_>, did: &Did) -> bool {
    r.map_path(&["policy", "trusted_contacts", &did.to_string()])
        .is_some()
}

/// Whether `device` is listed under `member`, revoked or not.
pub fn has_device(r: Reader<'_>, member: &Did, device: &Did) -> bool {
    r.map_path(&[
        "members",
        &member.to_string(),
        "devices",
        &device.key_string(),
    ])
    .is_some()
}

/// Finds the member for whom `device` is a live device. A member's own DID
/// key belongs to that member first, which is also the common case and costs
/// one lookup. Another key belongs to the one member it proved itself to; a
/// key proven to several members belongs to none.
pub fn device_owner(r: Reader<'_>, device: &Did) -> Option<Standing> {
    if is_live_device(r, device, device) {
        return Standing::read(r, device);
    }
    let members = r.map_path(&["members"])?;
    let mut owners = r
        .did_keys(&members)
        .into_iter()
        .filter(|did| is_live_device(r, did, device));
    let owner = owners.next()?;
    if owners.next().is_some() {
        return None;
    }
    Standing::read(r, &owner)
}

/// The credit limit of `member`: its own override, else the policy default.
/// A member may go this far below zero in each unit.
pub fn credit_limit(r: Reader<'_>, member: &Did) -> i64 {
    let own = r
        .map_path(&["members", &member.to_string()])
        .and_then(|m| r.int(&m, "credit_limit"));
    own.or_else(|| {
        r.map_path(&["policy"])
            .and_then(|p| r.int(&p, "default_credit_limit"))
    })
    .unwrap_or(0)
    .max(0)
}

/// How far below zero `member` may go in `unit`, first found of: the
/// member's limit for that unit (`members/<did>/credit_limits/<unit>`), the
/// member's limit (`members/<did>/credit_limit`, every unit), the unit's
/// (`policy/units/<unit>/credit_limit`), the policy's default.
pub fn credit_limit_in(r: Reader<'_>, member: &Did, unit: &str) -> i64 {
    let m = r.map_path(&["members", &member.to_string()]);
    let own_in_unit = m
        .as_ref()
        .and_then(|m| r.map(m, "credit_limits"))
        .and_then(|l| r.int(&l, unit));
    let own = || m.as_ref().and_then(|m| r.int(m, "credit_limit"));
    let unit_default = || {
        r.map_path(&["policy", "units", unit])
            .and_then(|u| r.int(&u, "credit_limit"))
    };
    let default = || {
        r.map_path(&["policy"])
            .and_then(|p| r.int(&p, "default_credit_limit"))
    };
    own_in_unit
        .or_else(own)
        .or_else(unit_default)
        .or_else(default)
        .unwrap_or(0)
        .max(0)
}

/// The conversion rate from one unit to another: one smallest step of `from`
/// is worth `num / den` smallest steps of `to`. `None` unless both are
/// positive.
pub fn rate(r: Reader<'_>, from: &str, to: &str) -> Option<(i64, i64)> {
    let obj = r.map_path(&["policy", "rates", from, to])?;
    let (num, den) = (r.int(&obj, "num")?, r.int(&obj, "den")?);
    (num > 0 && den > 0).then_some((num, den))
}

/// Every exchange rate of the policy: (from, to, num, den), 1 `from` =
/// num/den `to`.
pub fn rates(r: Reader<'_>) -> Vec<(String, String, i64, i64)> {
    let Some(rates) = r.map_path(&["policy", "rates"]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for from in r.keys(&rates) {
        let Some(tos) = r.map(&rates, &from) else {
            continue;
        };
        for to in r.keys(&tos) {
            if let Some((num, den)) = rate(r, &from, &to) {
                out.push((from.clone(), to, num, den));
            }
        }
    }
    out
}

/// The governance domain whose accepted decisions execute (they move the
/// treasury, freeze accounts, admit members, change settings), if the
/// policy names one.
pub fn treasury_domain(r: Reader<'_>) -> Option<crate::DocId> {
    r.map_path(&["policy"])
        .and_then(|p| r.str(&p, "treasury_domain"))
        .and_then(|s| s.parse().ok())
}

/// Names the governance domain whose accepted decisions move the treasury.
pub fn set_treasury_domain(
    tx: &mut impl Transactable,
    domain: &crate::DocId,
) -> Result<(), SchemaError> {
    let policy = ensure_map(tx, &ObjId::Root, "policy")?;
    tx.put(&policy, "treasury_domain", domain.to_string())?;
    Ok(())
}

/// Sets the conversion rate from `from` to `to` (both units must exist).
pub fn set_rate(
    tx: &mut impl Transactable,
    from: &str,
    to: &str,
    num: i64,
    den: i64,
) -> Result<(), SchemaError> {
    check_ident("unit", from)?;
    check_ident("unit", to)?;
    if num <= 0 || den <= 0 || from == to {
        return Err(SchemaError::InvalidValue {
            field: "rate",
            reason:
                "a rate is between two different units, with a positive numerator and denominator"
                    .into(),
        });
    }
    let policy = ensure_map(tx, &ObjId::Root, "policy")?;
    let rates = ensure_map(tx, &policy, "rates")?;
    let from_obj = ensure_map(tx, &rates, from)?;
    let rate = ensure_map(tx, &from_obj, to)?;
    tx.put(&rate, "num", num)?;
    tx.put(&rate, "den", den)?;
    Ok(())
}

/// Whether the policy defines `unit`.
pub fn has_unit(r: Reader<'_>, unit: &str) -> bool {
    r.map_path(&["policy", "units", unit]).is_some()
}

/// A unit of account.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unit {
    /// A name to show, e.g. "hours".
    pub name: Option<String>,
    /// Decimal places of the smallest step.
    pub scale: i64,
    /// Members' credit limit in this unit, over the policy's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credit_limit: Option<i64>,
}

/// The co-op's policy.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Policy {
    /// Credit limit of a member without an override.
    pub default_credit_limit: i64,
    /// Units of account by id.
    pub units: BTreeMap<String, Unit>,
    /// Members who may revoke any member's devices in an emergency.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_contacts: Vec<Did>,
    /// Who approves applications and who invites.
    pub onboarding: crate::settings::Onboarding,
}

/// A relay registered with the co-op.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Relay {
    /// Where to dial it, `ip:port`.
    pub addr: Option<String>,
}

/// The whole co-op, as typed data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Coop {
    /// Slug, e.g. "food-coop".
    pub id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Creator's DID.
    pub creator: Did,
    /// Unix seconds.
    pub created_at: i64,
    /// Policy.
    pub policy: Policy,
    /// Members by DID.
    pub members: BTreeMap<Did, Member>,
    /// Relays by node DID.
    pub relays: BTreeMap<Did, Relay>,
}

impl Coop {
    /// Reads the co-op document.
    pub fn read(r: Reader<'_>) -> Result<Coop, SchemaError> {
        let genesis = crate::document::Genesis::read(r)
            .filter(|g| g.kind == DocKind::Coop)
            .ok_or_else(|| SchemaError::Missing("co-op genesis".into()))?;
        let root = ObjId::Root;
        let mut policy = Policy::default();
        if let Some(p) = r.map(&root, "policy") {
            policy.default_credit_limit = r.int(&p, "default_credit_limit").unwrap_or(0);
            if let Some(units) = r.map(&p, "units") {
                for unit in r.keys(&units) {
                    if let Some(u) = r.map(&units, &unit) {
                        let scale = r.int(&u, "scale").unwrap_or(0);
                        let name = r.str(&u, "name");
                        let credit_limit = r.int(&u, "credit_limit");
                        policy.units.insert(
                            unit,
                            Unit {
                                name,
                                scale,
                                credit_limit,
                            },
                        );
                    }
                }
            }
            if let Some(contacts) = r.map(&p, "trusted_contacts") {
                policy.trusted_contacts = r.did_keys(&contacts);
            }
            policy.onboarding = crate::settings::Onboarding::read(r);
        }
        let mut members = BTreeMap::new();
        if let Some(m) = r.map(&root, "members") {
            for did in r.did_keys(&m) {
                if let Some(obj) = r.map(&m, &did.to_string())
                    && let Some(member) = Member::read_at(r, &obj, did)
                {
                    members.insert(did, member);
                }
            }
        }
        let mut relays = BTreeMap::new();
        if let Some(rs) = r.map(&root, "relays") {
            for did in r.did_keys(&rs) {
                if let Some(obj) = r.map(&rs, &did.to_string()) {
                    relays.insert(
                        did,
                        Relay {
                            addr: r.str(&obj, "addr"),
                        },
                    );
                }
            }
        }
        Ok(Coop {
            id: genesis.slug,
            name: r.str(&root, "name").unwrap_or_default(),
            description: r.str(&root, "description").unwrap_or_default(),
            creator: genesis.creator,
            created_at: genesis.created_at,
            policy,
            members,
            relays,
        })
    }
}

/// What a new co-op starts with.
#[derive(Debug, Clone)]
pub struct NewCoop {
    /// Slug, e.g. "food-coop".
    pub id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The creator, who becomes the first admin.
    pub creator: Did,
    /// The device key that writes the genesis (often the creator's DID key).
    pub device: Did,
    /// Unix seconds.
    pub created_at: i64,
    /// Policy default credit limit.
    pub default_credit_limit: i64,
    /// Units of account: id → scale.
    pub units: Vec<(String, i64)>,
}

/// Writes the genesis of a co-op: its fields and its creator as first admin,
/// with the creator's DID key and the writing device as live devices.
pub fn create(tx: &mut impl Transactable, new: &NewCoop) -> Result<(), SchemaError> {
    write_genesis(tx, DocKind::Coop, &new.id, &new.creator, new.created_at)?;
    let root = ObjId::Root;
    tx.put(&root, "name", new.name.as_str())?;
    tx.put(&root, "description", new.description.as_str())?;
    let policy = ensure_map(tx, &root, "policy")?;
    tx.put(
        &policy,
        "default_credit_limit",
        non_negative("default_credit_limit", new.default_credit_limit)?,
    )?;
    let units = ensure_map(tx, &policy, "units")?;
    for (unit, scale) in &new.units {
        check_ident("unit", unit)?;
        let u = ensure_map(tx, &units, unit)?;
        tx.put(&u, "scale", non_negative("scale", *scale)?)?;
    }
    ensure_map(tx, &root, "members")?;
    ensure_map(tx, &root, "relays")?;
    add_member(tx, &new.creator, Role::Admin, new.created_at)?;
    if new.device != new.creator {
        return Err(SchemaError::InvalidValue {
            field: "device",
            reason: "a co-op's genesis is written with the creator's DID key; add devices after"
                .into(),
        });
    }
    Ok(())
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn non_negative(field: &'static str, value: i64) -> Result<i64, SchemaError> {
    if value < 0 {
        return Err(SchemaError::InvalidValue {
            field,
            reason: "must not be negative".into(),
        });
    }
    Ok(value)
}

fn member_obj(tx: &impl ReadDoc, did: &Did) -> Result<ObjId, SchemaError> {
    existing_map(tx, &["members", &did.to_string()], &format!("member {did}"))
}

/// Adds a member with `role`, active, whose DID key is its first device.
/// Re-adding a removed member makes it active again with the new role.
pub fn add_member(
    tx: &mut impl Transactable,
    did: &Did,
    role: Role,
    joined_at: i64,
) -> Result<(), SchemaError> {
    let members = existing_map(tx, &["members"], "members")?;
    let m = ensure_map(tx, &members, &did.to_string())?;
    tx.put(&m, "role", role.as_str())?;
    tx.put(&m, "status", MemberStatus::Active.as_str())?;
    tx.put(&m, "joined_at", non_negative("joined_at", joined_at)?)?;
    add_device(tx, did, did, None, None, joined_at)
}

/// Changes a member's role.
pub fn set_role(tx: &mut impl Transactable, did: &Did, role: Role) -> Result<(), SchemaError> {
    let m = member_obj(tx, did)?;
    tx.put(&m, "role", role.as_str())?;
    Ok(())
}

/// Changes a member's status (suspend, remove, reinstate).
pub fn set_status(
    tx: &mut impl Transactable,
    did: &Did,
    status: MemberStatus,
) -> Result<(), SchemaError> {
    let m = member_obj(tx, did)?;
    tx.put(&m, "status", status.as_str())?;
    Ok(())
}

/// Sets the name a member shows.
pub fn set_display_name(
    tx: &mut impl Transactable,
    did: &Did,
    name: &str,
) -> Result<(), SchemaError> {
    let m = member_obj(tx, did)?;
    tx.put(&m, "display_name", name)?;
    Ok(())
}

/// Overrides a member's credit limit.
pub fn set_credit_limit(
    tx: &mut impl Transactable,
    did: &Did,
    limit: i64,
) -> Result<(), SchemaError> {
    let m = member_obj(tx, did)?;
    tx.put(&m, "credit_limit", non_negative("credit_limit", limit)?)?;
    Ok(())
}

/// Sets `did`'s credit limit in `unit` alone, over its limit for every
/// unit.
pub fn set_credit_limit_in(
    tx: &mut impl Transactable,
    did: &Did,
    unit: &str,
    limit: i64,
) -> Result<(), SchemaError> {
    check_ident("unit", unit)?;
    let m = member_obj(tx, did)?;
    let limits = ensure_map(tx, &m, "credit_limits")?;
    tx.put(&limits, unit, non_negative("credit_limit", limit)?)?;
    Ok(())
}

/// Sets the credit limit of every member in `unit` who has none of their
/// own, over the policy's default.
pub fn set_unit_credit_limit(
    tx: &mut impl Transactable,
    unit: &str,
    limit: i64,
) -> Result<(), SchemaError> {
    let u = existing_map(tx, &["policy", "units", unit], &format!("unit {unit}"))?;
    tx.put(&u, "credit_limit", non_negative("credit_limit", limit)?)?;
    Ok(())
}

/// Adds a device key to a member. Any key but the member's own DID key needs
/// `proof`: the device's signature of [`device_proof_message`].
pub fn add_device(
    tx: &mut impl Transactable,
    did: &Did,
    device: &Did,
    proof: Option<&[u8; 64]>,
    label: Option<&str>,
    added_at: i64,
) -> Result<(), SchemaError> {
    let m = member_obj(tx, did)?;
    let devices = ensure_map(tx, &m, "devices")?;
    let key = device.key_string();
    let existing = tx.get(&devices, key.as_str())?.map(|(_, obj)| obj);
    if let Some(obj) = &existing {
        let revoked = tx
            .get(obj, "revoked")?
            .is_some_and(|(v, _)| v.as_bool() == Some(true))
            || tx.get(obj, "revoked_at")?.is_some();
        if revoked {
            return Err(SchemaError::Exists(format!(
                "device {device} was revoked: a revoked key is never added again"
            )));
        }
    }
    let new = existing.is_none();
    let d = ensure_map(tx, &devices, &key)?;
    tx.put(&d, "added_at", non_negative("added_at", added_at)?)?;
    if new {
        tx.put(&d, "revoked", false)?;
    }
    if let Some(proof) = proof {
        tx.put(&d, "proof", hex_encode(proof))?;
    }
    if let Some(label) = label {
        tx.put(&d, "label", label)?;
    }
    Ok(())
}

/// Revokes a device: it never acts for the member again.
pub fn revoke_device(
    tx: &mut impl Transactable,
    did: &Did,
    device: &Did,
) -> Result<(), SchemaError> {
    let d = existing_map(
        tx,
        &["members", &did.to_string(), "devices", &device.key_string()],
        "device",
    )?;
    tx.put(&d, "revoked", true)?;
    Ok(())
}

/// Why, when and by whom a device is revoked.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// One of [`REVOKE_REASONS`].
    pub reason: String,
    /// Unix seconds.
    pub at: i64,
    /// Who revokes it.
    pub by: Did,
}

/// Revokes a device, recording why, when and by whom.
pub fn revoke_device_for(
    tx: &mut impl Transactable,
    did: &Did,
    device: &Did,
    revocation: &Revocation,
) -> Result<(), SchemaError> {
    if !REVOKE_REASONS.contains(&revocation.reason.as_str()) {
        return Err(SchemaError::InvalidValue {
            field: "reason",
            reason: format!(
                "{:?} is not a reason: one of {}",
                revocation.reason,
                REVOKE_REASONS.join(", ")
            ),
        });
    }
    revoke_device(tx, did, device)?;
    let d = existing_map(
        tx,
        &["members", &did.to_string(), "devices", &device.key_string()],
        "device",
    )?;
    tx.put(&d, "revoked_at", non_negative("revoked_at", revocation.at)?)?;
    tx.put(&d, "revoked_reason", revocation.reason.as_str())?;
    tx.put(&d, "revoked_by", revocation.by.to_string())?;
    Ok(())
}

/// Names `contact` a trusted contact: a member who may revoke any member's
/// devices in an emergency.
pub fn add_trusted_contact(
    tx: &mut impl Transactable,
    contact: &Did,
    added_at: i64,
) -> Result<(), SchemaError> {
    let policy = ensure_map(tx, &ObjId::Root, "policy")?;
    let contacts = ensure_map(tx, &policy, "trusted_contacts")?;
    let c = ensure_map(tx, &contacts, &contact.to_string())?;
    tx.put(&c, "added_at", non_negative("added_at", added_at)?)?;
    Ok(())
}

/// Removes a trusted contact.
pub fn remove_trusted_contact(
    tx: &mut impl Transactable,
    contact: &Did,
) -> Result<(), SchemaError> {
    let contacts = existing_map(tx, &["policy", "trusted_contacts"], "trusted contacts")?;
    if tx.get(&contacts, contact.to_string())?.is_none() {
        return Err(SchemaError::Missing(format!("trusted contact {contact}")));
    }
    tx.delete(&contacts, contact.to_string())?;
    Ok(())
}

/// Changes the co-op's name and description.
pub fn set_profile(
    tx: &mut impl Transactable,
    name: Option<&str>,
    description: Option<&str>,
) -> Result<(), SchemaError> {
    if let Some(name) = name {
        tx.put(ObjId::Root, "name", name)?;
    }
    if let Some(description) = description {
        tx.put(ObjId::Root, "description", description)?;
    }
    Ok(())
}

/// Sets the default credit limit.
pub fn set_default_credit_limit(tx: &mut impl Transactable, limit: i64) -> Result<(), SchemaError> {
    let policy = ensure_map(tx, &ObjId::Root, "policy")?;
    tx.put(
        &policy,
        "default_credit_limit",
        non_negative("default_credit_limit", limit)?,
    )?;
    Ok(())
}

/// Adds or updates a unit of account.
pub fn put_unit(
    tx: &mut impl Transactable,
    unit: &str,
    name: Option<&str>,
    scale: i64,
) -> Result<(), SchemaError> {
    check_ident("unit", unit)?;
    let policy = ensure_map(tx, &ObjId::Root, "policy")?;
    let units = ensure_map(tx, &policy, "units")?;
    let u = ensure_map(tx, &units, unit)?;
    tx.put(&u, "scale", non_negative("scale", scale)?)?;
    if let Some(name) = name {
        tx.put(&u, "name", name)?;
    }
    Ok(())
}

/// Registers a relay node.
pub fn add_relay(
    tx: &mut impl Transactable,
    node: &Did,
    addr: &str,
    added_at: i64,
) -> Result<(), SchemaError> {
    let relays = ensure_map(tx, &ObjId::Root, "relays")?;
    let r = ensure_map(tx, &relays, &node.to_string())?;
    tx.put(&r, "addr", addr)?;
    tx.put(&r, "added_at", non_negative("added_at", added_at)?)?;
    Ok(())
}

/// Removes a relay.
pub fn remove_relay(tx: &mut impl Transactable, node: &Did) -> Result<(), SchemaError> {
    let relays = existing_map(tx, &["relays"], "relays")?;
    tx.delete(&relays, node.to_string())?;
    Ok(())
}
