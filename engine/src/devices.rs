//! A member's devices: revoking one, or all of them at once (the emergency
//! revoke of seed 002). Who may do it is the permission rules' to judge
//! (`docs/permissions.md`); these commands write what they judge.
//!
//! A revocation is two writes: the co-op document marks the device revoked,
//! so it acts at no later heads, and a seal in the co-op's ledger
//! (`docs/ledger.md`, "Seals") makes whatever it signed that the revoker had
//! not seen count for nothing, whatever heads and parents it cites.

use icn_schemas::coop::{self, MemberStatus, Revocation};
use icn_schemas::domain;
use icn_schemas::ledger::{EntryId, Sealed};
use icn_schemas::{Did, DocId, SchemaError};

use crate::Engine;
use crate::engine::WriteError;
use crate::identity::Signer;
use crate::ledger::LedgerError;

/// What a revocation wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The keys revoked.
    pub devices: Vec<Did>,
    /// The seals written in the co-op's ledger, one per key; none when the
    /// signer is a device key other than a DID key, which may not seal.
    pub seals: Vec<EntryId>,
}

/// Why a revocation was not (wholly) written.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// The co-op document refused it; nothing was written.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The document took the revocation, but the ledger refused the seal.
    #[error("the device was revoked, but its seal was refused: {0}")]
    Seal(#[from] LedgerError),
}

/// Whether `signer` writes seals: the key holding its member's DID key
/// powers (the DID key, or the key it rotated to), or a node with a
/// delegation (the ledger checks who signed it).
fn seals(engine: &Engine, coop: &DocId, signer: &Signer) -> bool {
    match signer {
        Signer::Delegated { .. } => true,
        Signer::Device(key) | Signer::Rotated { key, .. } => engine
            .read(coop, |r| {
                let owner = coop::device_owner(r, &key.did())?;
                Some(coop::key_of(r, &owner.did) == Some(key.did()))
            })
            .flatten()
            .unwrap_or(false),
    }
}

impl Engine {
    /// Sets `member`'s status in co-op `coop`. A removal or a suspension
    /// by someone else (an admin) also seals the member in the co-op's
    /// ledger, after the status change so that the seal cites it (when the
    /// signer writes seals: a DID key, or a delegation of one): nothing the
    /// member wrote that the admin had not seen counts, whatever co-op heads
    /// it cites, and what it writes knowing of a later reinstatement counts
    /// again. A member leaving on its own seals nothing. Returns the seal.
    pub fn set_member_status(
        &self,
        coop: &DocId,
        signer: &Signer,
        member: &Did,
        status: MemberStatus,
    ) -> Result<Option<EntryId>, RevokeError> {
        self.write(coop, signer, |tx| coop::set_status(tx, member, status))?;
        let leaving = match signer {
            Signer::Device(k) | Signer::Rotated { key: k, .. } => {
                self.read(coop, |r| coop::device_owner(r, &k.did()).map(|s| s.did))
                    .flatten()
                    == Some(*member)
            }
            Signer::Delegated { delegation, .. } => delegation
                .statement
                .parse::<icn_schemas::Delegation>()
                .is_ok_and(|d| d.member == *member),
        };
        if status != MemberStatus::Active {
            // In the co-op's domains too, where the signer is an admin.
            self.seal_in_domains(coop, signer, Some(&[*member]));
        }
        if status == MemberStatus::Active || leaving || !seals(self, coop, signer) {
            return Ok(None);
        }
        Ok(Some(self.seal(coop, signer, member, Sealed::Member)?.0))
    }

    /// Revokes `device` of `member` in co-op `coop`, recording `revocation`.
    /// Refused when the device is not listed, or is revoked already (the
    /// first revocation's record stands).
    pub fn revoke_device(
        &self,
        coop: &DocId,
        signer: &Signer,
        member: &Did,
        device: &Did,
        revocation: &Revocation,
    ) -> Result<Revoked, RevokeError> {
        let sealing = seals(self, coop, signer);
        self.write_with(coop, signer, |r, _, tx| {
            let listed = coop::Member::read(r, member)
                .and_then(|m| m.devices.get(&device.key_string()).cloned());
            match listed {
                Some(d) if d.revoked => Err(SchemaError::Exists(format!(
                    "device {device} of {member} is already revoked"
                ))),
                _ => coop::revoke_device_for(tx, member, device, revocation),
            }
        })?;
        // A key that votes in the co-op's domains is sealed there
        // (`gov_seals`).
        self.seal_in_domains(coop, signer, Some(&[*member]));
        let mut seals = Vec::new();
        if sealing {
            seals.push(self.seal(coop, signer, member, Sealed::Key(*device))?.0);
        }
        Ok(Revoked {
            devices: vec![*device],
            seals,
        })
    }

    /// Revokes every device of `member` in co-op `coop` that is not revoked
    /// yet, its DID key included, in one change: the member acts nowhere
    /// until a new key is registered for it, and seals each.
    pub fn revoke_all_devices(
        &self,
        coop: &DocId,
        signer: &Signer,
        member: &Did,
        revocation: &Revocation,
    ) -> Result<Revoked, RevokeError> {
        let sealing = seals(self, coop, signer);
        let devices = self.write_with(coop, signer, |r, _, tx| {
            let m = coop::Member::read(r, member)
                .ok_or_else(|| SchemaError::Missing(format!("member {member}")))?;
            let mut revoked = Vec::new();
            for (key, d) in &m.devices {
                if d.revoked {
                    continue;
                }
                let device = Did::from_key_string(key).map_err(|e| SchemaError::BadKey {
                    kind: "device key",
                    value: key.clone(),
                    reason: e.to_string(),
                })?;
                coop::revoke_device_for(tx, member, &device, revocation)?;
                revoked.push(device);
            }
            if revoked.is_empty() {
                return Err(SchemaError::InvalidValue {
                    field: "devices",
                    reason: format!("{member} has no device left to revoke"),
                });
            }
            Ok(revoked)
        })?;
        self.seal_in_domains(coop, signer, Some(&[*member]));
        let mut seals = Vec::new();
        if sealing {
            for device in &devices {
                seals.push(self.seal(coop, signer, member, Sealed::Key(*device))?.0);
            }
        }
        Ok(Revoked { devices, seals })
    }
}

/// What a key rotation wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The member.
    pub member: Did,
    /// The key retired.
    pub old: Did,
    /// The key that now holds the member's DID key powers.
    pub new: Did,
    /// The domains where the new key now votes for the member.
    pub domains: Vec<DocId>,
    /// The old key's seal in the co-op's ledger (none when this run
    /// finished a rotation that had sealed it already).
    pub seal: Option<EntryId>,
}

impl Engine {
    /// Rotates the key holding a member's DID key powers, in co-op `coop`,
    /// to `new`, whose `proof` is its signature of
    /// [`coop::device_proof_message`]. `signer` writes with the key that
    /// holds them now (directly, or through a delegation it signed), in this
    /// order: it seals itself in the co-op's ledger (nothing it signs that
    /// this node has not seen counts, whatever heads it cites); lists `new`
    /// as a device of the member and names it as the member's `key` in the
    /// co-op; in each of the co-op's domains held here where it votes for
    /// the member, names `new` and retires itself at the heads it holds;
    /// and revokes itself (`retired`). Stopped half way, it is run again
    /// with the same keys: once `new` is named, the old key (still a live
    /// device) finishes the domains and its revocation.
    /// Domains not held here keep the old key until this node holds them and
    /// rotates again; the co-op's domain admins seal the member there once
    /// the old key is revoked (`docs/permissions.md`, "Key rotation").
    pub fn rotate_key(
        &self,
        coop: &DocId,
        signer: &Signer,
        new: &Did,
        proof: &[u8; 64],
        now: i64,
    ) -> Result<Rotated, RevokeError> {
        let refuse = |reason: String| {
            RevokeError::Write(WriteError::from(SchemaError::InvalidValue {
                field: "key",
                reason,
            }))
        };
        let old = crate::governance::signing_key(signer).map_err(WriteError::from)?;
        // A device key acts for the member it proved itself to.
        let member = match signer {
            Signer::Device(_) => self
                .read(coop, |r| coop::device_owner(r, &old).map(|s| s.did))
                .flatten(),
            _ => crate::governance::member_of(signer).ok(),
        }
        .ok_or_else(|| refuse(format!("{old} is no live device of a member here")))?;
        if *new == old {
            return Err(refuse("the new key is the key it replaces".into()));
        }
        let holder = self.read(coop, |r| coop::key_of(r, &member)).flatten();
        let resuming = holder == Some(*new)
            && self
                .read(coop, |r| coop::is_live_device(r, &member, &old))
                .unwrap_or(false);
        if holder != Some(old) && !resuming {
            return Err(refuse(format!(
                "{old} does not hold {member}'s DID key powers in this co-op"
            )));
        }
        if crate::identity::verify(new, &coop::device_proof_message(&member), proof).is_err() {
            return Err(refuse(format!(
                "the proof is not {new}'s signature of its consent to act for {member}"
            )));
        }
        let mut seal = None;
        if !resuming {
            seal = Some(self.seal(coop, signer, &member, Sealed::Key(old))?.0);
            self.write_with(coop, signer, |r, _, tx| {
                if !coop::is_live_device(r, &member, new) {
                    coop::add_device(tx, &member, new, Some(proof), Some("rotated key"), now)?;
                }
                Ok(())
            })?;
            self.write(coop, signer, |tx| coop::set_member_key(tx, &member, new))?;
        }
        let mut domains = Vec::new();
        for d in self.domains_of(coop) {
            let votes_here = self
                .read(&d, |r| {
                    domain::DomainMember::read(r, &member).is_some()
                        && domain::key_of(r, &member) == Some(old)
                })
                .unwrap_or(false);
            if !votes_here {
                continue;
            }
            let rotated = self.write_with(&d, signer, |_, deps, tx| {
                let heads: Vec<[u8; 32]> = deps.iter().map(|h| h.0).collect();
                domain::rotate_key(tx, &member, &old, new, proof, &heads)
            });
            match rotated {
                Ok(()) => domains.push(d),
                Err(e) => {
                    tracing::warn!(%coop, domain = %d, %member, error = %e, "key not rotated in a domain")
                }
            }
        }
        let revocation = Revocation {
            reason: "retired".into(),
            at: now,
            by: member,
        };
        self.write(coop, signer, |tx| {
            coop::revoke_device_for(tx, &member, &old, &revocation)
        })?;
        // Where the old key still votes (a domain not held here), its
        // admins seal the member.
        self.seal_in_domains(coop, signer, Some(&[member]));
        Ok(Rotated {
            member,
            old,
            new: *new,
            domains,
            seal,
        })
    }
}
