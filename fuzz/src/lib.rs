//! The fixture the fuzz targets share, and helpers to seed their corpora.

use std::sync::OnceLock;

use icn_engine::test_utils::{TestNode, keypair, new_coop};
use icn_engine::{Keypair, Signer};
use icn_schemas::{DocId, coop};

/// A node with one co-op: admin `keypair(1)`, member [`member`].
pub struct Fixture {
    /// The node.
    pub node: TestNode,
    /// The co-op.
    pub coop: DocId,
}

/// The member of the fixture co-op whose changes the fuzzer re-signs.
pub fn member() -> Keypair {
    keypair(2)
}

/// The shared fixture, made on first use.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let node = TestNode::new();
        let admin = keypair(1);
        let signer = Signer::Device(admin.clone());
        let coop = node
            .engine
            .create_coop(&signer, &new_coop(&admin))
            .expect("create");
        node.engine
            .write(&coop, &signer, |tx| {
                coop::add_member(tx, &member().did(), coop::Role::Member, 1)
            })
            .expect("add member");
        Fixture { node, coop }
    })
}
