//! What the node's binary tests share: free loopback ports.

#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};

/// A TCP port free on loopback now (for a gateway or metrics).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A UDP port free on loopback now (for a sync endpoint).
pub(crate) fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}
