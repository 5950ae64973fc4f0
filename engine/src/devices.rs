//! A member's devices: revoking one, or all of them at once (the emergency
//! revoke of seed 002). Who may do it is the permission rules' to judge
//! (`docs/permissions.md`); these commands write what they judge.
//!
//! A revocation is two writes: the co-op document marks the device revoked,
//! so it acts at no later heads, and a seal in the co-op's ledger
//! (`docs/ledger.md`, "Seals") makes whatever it signed that the revoker had
//! not seen count for nothing, whatever heads and parents it cites.

use icn_schemas::coop::{self, MemberStatus, Revocation};
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

/// Whether `signer` writes seals: a DID key, or a node with a delegation
/// (signed by the member's DID key).
fn seals(engine: &Engine, coop: &DocId, signer: &Signer) -> bool {
    match signer {
        Signer::Delegated { .. } => true,
        Signer::Device(key) => engine
            .read(coop, |r| coop::device_owner(r, &key.did()))
            .flatten()
            .is_some_and(|owner| owner.did == key.did()),
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
            Signer::Device(k) => {
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
        if device == member {
            // The DID key votes: its domains seal the member.
            self.seal_in_domains(coop, signer, Some(&[*member]));
        }
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
        if devices.contains(member) {
            self.seal_in_domains(coop, signer, Some(&[*member]));
        }
        let mut seals = Vec::new();
        if sealing {
            for device in &devices {
                seals.push(self.seal(coop, signer, member, Sealed::Key(*device))?.0);
            }
        }
        Ok(Revoked { devices, seals })
    }
}
