//! A member's devices: revoking one, or all of them at once (the emergency
//! revoke of seed 002). Who may do it is the permission rules' to judge
//! (`docs/permissions.md`); these commands write what they judge.

use icn_schemas::coop::{self, Revocation};
use icn_schemas::{Did, DocId, SchemaError};

use crate::Engine;
use crate::engine::WriteError;
use crate::identity::Signer;

impl Engine {
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
    ) -> Result<(), WriteError> {
        self.write_with(coop, signer, |r, _, tx| {
            let listed = coop::Member::read(r, member)
                .and_then(|m| m.devices.get(&device.key_string()).cloned());
            match listed {
                Some(d) if d.revoked => Err(SchemaError::Exists(format!(
                    "device {device} of {member} is already revoked"
                ))),
                _ => coop::revoke_device_for(tx, member, device, revocation),
            }
        })
    }

    /// Revokes every device of `member` in co-op `coop` that is not revoked
    /// yet, its DID key included, in one change: the member acts nowhere
    /// until a new key is registered for it. Returns the keys revoked.
    pub fn revoke_all_devices(
        &self,
        coop: &DocId,
        signer: &Signer,
        member: &Did,
        revocation: &Revocation,
    ) -> Result<Vec<Did>, WriteError> {
        self.write_with(coop, signer, |r, _, tx| {
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
        })
    }
}
