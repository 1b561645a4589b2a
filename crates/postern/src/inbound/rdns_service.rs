//! The long-lived part of `[inbound.rdns]`: the DNS the checks ask and the
//! in-memory harvest counts. One per daemon (`Services::rdns`).
//!
//! May touch: DNS (through [`InboundDns`]). No RFCs.

use std::net::SocketAddr;
use std::sync::Arc;

use super::dns::{Bound, HickoryDns, InboundDns};
use super::harvest::HarvestCounts;

/// The DNS and the counters of the rDNS/HELO/sender/harvest checks.
#[derive(Default)]
pub struct RdnsService {
    real: HickoryDns,
    /// A fixed DNS instead of the real one (tests).
    fixed: Option<Arc<dyn InboundDns>>,
    /// Unknown recipients per client.
    pub harvest: HarvestCounts,
}

impl RdnsService {
    /// The real DNS.
    pub fn new() -> RdnsService {
        RdnsService::default()
    }

    /// This DNS instead of the real one (tests).
    pub fn with_dns(dns: Arc<dyn InboundDns>) -> RdnsService {
        RdnsService { fixed: Some(dns), ..RdnsService::default() }
    }

    /// The DNS to ask now (`[mx] nameservers` of the current settings).
    pub fn dns(&self, nameservers: &[SocketAddr]) -> Arc<dyn InboundDns> {
        match &self.fixed {
            Some(d) => d.clone(),
            None => Arc::new(Bound::new(&self.real, nameservers)),
        }
    }
}

impl std::fmt::Debug for RdnsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdnsService").field("fixed", &self.fixed.is_some()).finish()
    }
}
