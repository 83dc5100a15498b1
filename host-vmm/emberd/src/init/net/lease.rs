//! Keeping a DHCP lease while the worker runs. At half its time the lease is renewed
//! ([`client::renew`]); if the server refuses (NAK) or nobody answers before it ends, the
//! address may be someone else's by now, so it comes off the interface and a new lease
//! is obtained as at boot and applied. An infinite lease needs none of this.

use std::io;

use super::client::{self, Failure, UdpTransport};
use super::dhcp::Lease;
use super::settings::NetSettings;
use super::{apply, dhcp_lease, iface, Addressing};

/// Everything the lease's thread needs.
pub struct Keeper {
    pub name: String,
    pub mac: [u8; 6],
    pub transport: UdpTransport,
    pub settings: NetSettings,
    pub lease: Lease,
}

/// Starts the thread that keeps `keeper.lease` (none for an infinite lease).
pub fn keep(keeper: Keeper) -> io::Result<()> {
    if keeper.lease.time.is_none() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("dhcp-lease".into())
        .spawn(move || keeper.run())
        .map(drop)
}

/// `lease 86400s` or `infinite lease`.
pub fn describe(lease: &Lease) -> String {
    match lease.time {
        Some(time) => format!("lease {}s", time.as_secs()),
        None => "infinite lease".to_owned(),
    }
}

impl Keeper {
    fn run(mut self) {
        while let Some(time) = self.lease.time {
            std::thread::sleep(time / 2);
            let xid = match getrandom::u32() {
                Ok(xid) => xid,
                Err(e) => return log::error!("network: getrandom: {e}; the lease will run out"),
            };
            match client::renew(&mut self.transport, xid, self.mac, &self.lease) {
                Ok(renewed) if renewed.address == self.lease.address => {
                    log::info!(
                        "network: {}: {} renewed ({})",
                        self.name,
                        renewed.address,
                        describe(&renewed)
                    );
                    self.lease = renewed;
                }
                Ok(other) => self.replace(other),
                Err(Failure::Io(e)) => {
                    return log::error!(
                        "network: {}: renewing the lease: {e}; it will run out",
                        self.name
                    )
                }
                Err(failure) => {
                    log::error!("network: {}: {failure}; asking for a new lease", self.name);
                    if let Err(e) = iface::clear_address(&self.name) {
                        log::error!("network: taking the address off {}: {e}", self.name);
                    }
                    match dhcp_lease(&self.name, self.mac, &mut self.transport) {
                        Ok((lease, _)) => self.replace(lease),
                        Err(e) => return log::error!("{e}"),
                    }
                }
            }
        }
    }

    /// Applies a lease for another address.
    fn replace(&mut self, lease: Lease) {
        let addressing = Addressing::from_lease(&lease, &self.settings);
        match apply(&self.name, &addressing) {
            Ok(()) => log::info!(
                "network: {} is {addressing} (a new DHCP lease from {}, {})",
                self.name,
                lease.server,
                describe(&lease)
            ),
            Err(e) => log::error!("{e}"),
        }
        self.lease = lease;
    }
}
