//! Who may receive a document's data: the rule sync applies before it
//! sends a peer anything, and before it takes a document it did not hold.

use icn_schemas::{Did, DocId, DocKind, Reader, coop, domain};

use crate::Engine;

impl Engine {
    /// Whether `peer` may receive `doc` (its changes, and for a co-op its
    /// ledger): a live device of an active member, or a relay registered in
    /// the co-op document. For a governance domain: one of its active
    /// members, or, when the domain belongs to a co-op this node holds, a
    /// live device of such a member or a relay of that co-op; the co-op's
    /// treasury domain also goes to a live device of any active member of
    /// the co-op, whose node must check the decisions that move the books.
    /// `false` for a document this node does not hold.
    pub fn may_receive(&self, doc: &DocId, peer: &Did) -> bool {
        self.may_hold(doc, peer, coop::device_owner)
    }

    /// [`Engine::may_receive`] for a member by its DID rather than a key
    /// (the gateway's caller, whose token's key the gateway checks): an
    /// active member reads whatever its live devices would, even once its
    /// DID key is revoked or rotated away.
    pub fn member_may_read(&self, doc: &DocId, member: &Did) -> bool {
        self.may_hold(doc, member, coop::Standing::read)
    }

    /// [`Engine::may_receive`], with `owner` finding the member `peer` is.
    fn may_hold(&self, doc: &DocId, peer: &Did, owner: Owner) -> bool {
        // Documents are read one at a time: the ledger holds a co-op's lock
        // while it reads domains, so never the other way round.
        let Some((kind, coop_id)) = self.read(doc, |r| (DocKind::of(r), coop_of(r))) else {
            return false;
        };
        match kind {
            Some(DocKind::Coop) => self
                .read(doc, |r| {
                    is_relay(r, peer) || owner(r, peer).is_some_and(|m| m.is_active())
                })
                .unwrap_or(false),
            Some(DocKind::Domain) => self.domain_reader(doc, coop_id, peer, owner),
            None => false,
        }
    }

    /// [`Engine::may_receive`] for document `doc` as `r` shows it, which
    /// this node may not hold yet: whether to take a document a peer offers.
    pub fn may_read(&self, doc: &DocId, r: Reader<'_>, peer: &Did) -> bool {
        match DocKind::of(r) {
            Some(DocKind::Coop) => coop_reader(r, peer),
            Some(DocKind::Domain) => {
                domain_member(r, peer)
                    || coop_of(r).is_some_and(|c| {
                        self.read(&c, |c| {
                            is_relay(c, peer)
                                || coop::device_owner(c, peer).is_some_and(|owner| {
                                    owner.is_active()
                                        && (coop::treasury_domain(c) == Some(*doc)
                                            || domain_member(r, &owner.did))
                                })
                        })
                        .unwrap_or(false)
                    })
            }
            None => false,
        }
    }

    fn domain_reader(&self, doc: &DocId, coop_id: Option<DocId>, peer: &Did, owner: Owner) -> bool {
        if self.read(doc, |r| domain_member(r, peer)).unwrap_or(false) {
            return true;
        }
        let Some(coop_id) = coop_id else {
            return false;
        };
        let owner = self
            .read(&coop_id, |c| {
                if is_relay(c, peer) {
                    return Some(None);
                }
                let treasury = coop::treasury_domain(c) == Some(*doc);
                owner(c, peer)
                    .filter(|o| o.is_active())
                    .map(|o| Some((o.did, treasury)))
            })
            .flatten();
        match owner {
            None => false,
            Some(None) => true,            // a relay of the co-op
            Some(Some((_, true))) => true, // a member, of the treasury domain
            Some(Some((owner, false))) => self
                .read(doc, |r| domain_member(r, &owner))
                .unwrap_or(false),
        }
    }
}

/// Finds the member a key (or a DID) stands for in a co-op document.
type Owner = fn(Reader<'_>, &Did) -> Option<coop::Standing>;

/// Whether the co-op document `r` lets `peer` read it.
fn coop_reader(r: Reader<'_>, peer: &Did) -> bool {
    is_relay(r, peer) || coop::device_owner(r, peer).is_some_and(|m| m.is_active())
}

fn coop_of(r: Reader<'_>) -> Option<DocId> {
    domain::coop_of(r)
}

fn is_relay(r: Reader<'_>, peer: &Did) -> bool {
    coop::is_relay(r, peer)
}

fn domain_member(r: Reader<'_>, did: &Did) -> bool {
    domain::DomainMember::read(r, did).is_some_and(|m| m.active)
}
