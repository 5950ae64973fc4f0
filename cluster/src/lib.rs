//! A cluster of real `icnd` processes under real faults, the Jepsen way
//! (issue 17; `docs/reliability.md`).
//!
//! Each node runs in its own network namespace, joined to the others by a
//! veth pair and a bridge ([`net`]); members' clients drive the nodes over
//! HTTP while a seeded schedule partitions them, drops their packets and
//! kills them with SIGKILL, fills their disks ([`run`]), and a byzantine peer sends them
//! backdated, replayed and forged data (`byzantine`). When the faults heal, the checker
//! waits for the nodes to agree and then asks every node for every write a
//! client saw acknowledged. Needs root (network namespaces, loop mounts),
//! iproute2, nftables, libfaketime, e2fsprogs and util-linux.

mod byzantine;
pub mod net;
pub mod nodes;
mod phones;
pub mod relay;
pub mod run;

pub use run::{MdnsProbe, Options, Report, Step, mdns_probe, partition_probe, run, schedule};
