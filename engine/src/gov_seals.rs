//! Seals in governance: when a co-op revokes a member's DID key, removes or
//! suspends the member, each of the co-op's domains seals the member too, so
//! that a thief's votes and closes count nowhere, whatever heads they cite
//! (`docs/governance.md`, "Seals").
//!
//! A domain seal is written by one of the domain's admins
//! ([`icn_schemas::domain::seal_member`]): the command that revokes or
//! removes writes it where its signer is a domain admin, and every node's
//! executor writes those still missing ([`Engine::seal_pending`]), so a
//! revocation by a trusted contact, or on a node holding no domain, is
//! sealed as soon as a domain admin's node hears of it.

use icn_schemas::coop;
use icn_schemas::domain::{self, DomainRole};
use icn_schemas::{Did, DocId, DocKind, Reader};

use crate::Engine;
use crate::identity::Signer;

/// Whether co-op `r` wants `member` sealed in a domain where `key` votes
/// for it, and if so whether removed there too: `Some(true)` once the
/// member is removed or suspended, `Some(false)` once that key is revoked,
/// `None` otherwise.
fn wanted(r: Reader<'_>, member: &Did, key: Option<Did>) -> Option<bool> {
    let standing = coop::Standing::read(r, member)?;
    if !standing.is_active() {
        return Some(true);
    }
    let key = key?;
    let m = coop::Member::read(r, member)?;
    m.devices
        .get(&key.key_string())
        .is_some_and(|d| d.revoked)
        .then_some(false)
}

impl Engine {
    /// The domains held here that belong to co-op `coop`, or that it names
    /// as its treasury domain.
    pub(crate) fn domains_of(&self, coop: &DocId) -> Vec<DocId> {
        let treasury = self.read(coop, coop::treasury_domain).flatten();
        self.doc_ids()
            .into_iter()
            .filter(|d| {
                Some(*d) == treasury
                    || self
                        .read(d, |r| {
                            DocKind::of(r) == Some(DocKind::Domain)
                                && domain::coop_of(r) == Some(*coop)
                        })
                        .unwrap_or(false)
            })
            .collect()
    }

    /// Seals, with `signer`, every member of co-op `coop`'s domains that
    /// the co-op wants sealed and is not yet, in the domains where the
    /// signer's member is an active admin (`members` narrows it to those).
    /// Returns how many seals it wrote; a refused write is logged and left
    /// for another admin.
    pub(crate) fn seal_in_domains(
        &self,
        coop: &DocId,
        signer: &Signer,
        members: Option<&[Did]>,
    ) -> usize {
        let Ok(sealer) = crate::governance::member_of(signer) else {
            return 0;
        };
        let mut written = 0;
        for d in self.domains_of(coop) {
            let admin = self
                .read(&d, |r| {
                    domain::DomainMember::read(r, &sealer)
                        .is_some_and(|m| m.active && m.role == DomainRole::Admin)
                })
                .unwrap_or(false);
            if !admin {
                continue;
            }
            let listed: Vec<Did> = self
                .read(&d, |r| {
                    domain::Domain::read(r)
                        .map(|dom| {
                            dom.members
                                .keys()
                                .filter(|m| domain::seal_of(r, m).is_none())
                                .copied()
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            for member in listed {
                if members.is_some_and(|only| !only.contains(&member)) || member == sealer {
                    continue;
                }
                let key = self.read(&d, |r| domain::key_of(r, &member)).flatten();
                let Some(remove) = self.read(coop, |r| wanted(r, &member, key)).flatten() else {
                    continue;
                };
                let sealed = self.write_with(&d, signer, |_, deps, tx| {
                    let heads: Vec<[u8; 32]> = deps.iter().map(|h| h.0).collect();
                    domain::seal_member(tx, &member, &heads, remove)
                });
                match sealed {
                    Ok(()) => written += 1,
                    Err(e) => {
                        tracing::info!(%coop, domain = %d, %member, error = %e, "member not sealed here")
                    }
                }
            }
        }
        written
    }

    /// Writes, with this node's executor key, the domain seals that co-ops
    /// held here want and no admin has written yet (a revocation or removal
    /// made by a trusted contact, or on another node). Returns how many.
    pub fn seal_pending(&self) -> usize {
        let Some(signer) = self.executor() else {
            return 0;
        };
        self.doc_ids()
            .into_iter()
            .filter(|c| self.kind(c) == Some(DocKind::Coop))
            .map(|c| self.seal_in_domains(&c, &signer, None))
            .sum()
    }
}

#[cfg(test)]
mod tests;
