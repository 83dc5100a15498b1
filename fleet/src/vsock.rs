//! How the fleet names the two ends of a vsock connection, where TCP addresses and host
//! names do not exist. A worker inside a VM dials control at `vsock://2:PORT` (CID 2 is
//! the host) and checks control's certificate for [`CONTROL_NAME`]; it registers the
//! address `vsock://CID:PORT` of its worker API. Control does not take that address at
//! its word: it keeps only the port and records the worker as `WORKER_HOST:PORT`, which
//! it reaches through the hybrid vsock socket that registration arrived on (so a worker
//! can only ever point control into its own VM). As over TCP, control checks the worker's
//! certificate for the name it gave that worker ([`crate::tls::worker_name`]).

/// The TLS name of control's fleet listener as reached over vsock.
pub const CONTROL_NAME: &str = "control.vsock.ember";

/// The host name of a worker reached through control's hybrid vsock socket, in its
/// recorded address.
pub const WORKER_HOST: &str = "worker.vsock.ember";

/// A vsock address, `vsock://CID:PORT`; CID `-1` is any (`VMADDR_CID_ANY`), for listening.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VsockAddr {
    pub cid: u32,
    pub port: u32,
}

impl std::str::FromStr for VsockAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<VsockAddr, String> {
        let invalid = || format!("{text:?} is not vsock://CID:PORT");
        let (cid, port) = text
            .strip_prefix("vsock://")
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(invalid)?;
        let cid = match cid {
            "-1" => u32::MAX,
            cid => cid.parse().map_err(|_| invalid())?,
        };
        let port = port.parse().map_err(|_| invalid())?;
        Ok(VsockAddr { cid, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cid_and_port() {
        assert_eq!(
            "vsock://2:9444".parse(),
            Ok(VsockAddr { cid: 2, port: 9444 })
        );
        assert_eq!(
            "vsock://-1:5000".parse::<VsockAddr>().unwrap().cid,
            u32::MAX
        );
        for bad in [
            "vsock://2",
            "2:9444",
            "vsock://x:1",
            "vsock://2:-1",
            "tcp://2:1",
        ] {
            assert!(bad.parse::<VsockAddr>().is_err(), "{bad}");
        }
    }
}
