//! What the gateway's unit tests share: a node holding one co-op whose
//! document a test can move.

use icn_engine::Signer;
use icn_engine::test_utils::{TestNode, keypair, new_coop};
use icn_schemas::DocId;
use icn_schemas::coop::{self, Role};

/// A node with one co-op, created by its admin (`keypair(1)`).
pub(crate) struct OneCoop {
    pub(crate) node: TestNode,
    pub(crate) id: DocId,
    admin: Signer,
}

impl OneCoop {
    pub(crate) fn new() -> Self {
        let node = TestNode::new();
        let admin = Signer::Device(keypair(1));
        let id = node
            .engine
            .create_coop(&admin, &new_coop(&keypair(1)))
            .expect("co-op");
        OneCoop { node, id, admin }
    }

    /// Changes the co-op's document: adds the member of `seed`.
    pub(crate) fn add_member(&self, seed: u64) {
        self.node
            .engine
            .write(&self.id, &self.admin, |tx| {
                coop::add_member(tx, &keypair(seed).did(), Role::Member, 1)
            })
            .expect("member");
    }
}
