//! `emberd serve`'s options.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use ember_net::exposition::MetricsListen;

/// How a worker joins the fleet and what it offers.
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Control's fleet listener, `https://HOST:PORT`; `vsock://2:PORT` from inside a VM
    /// (AF_VSOCK to the host); or `unix:///PATH`, a Unix socket that leads to it (on a host:
    /// the `PATH_PORT` socket control listens on behind a VM's hybrid vsock socket). Over
    /// vsock and Unix sockets control's certificate is checked for its vsock name.
    #[arg(long, value_name = "URL")]
    pub control: String,
    /// Control's CA certificate (`DIR/ca.pem` of ember-control's data directory), which
    /// vouches for control's fleet listener. Who may call the worker API is checked against
    /// the fleet CA control hands over at registration instead.
    #[arg(long, value_name = "PEM")]
    pub ca: PathBuf,
    /// The file holding a join token: control's bootstrap token (`DIR/worker-token`) or one
    /// from `ember worker token create`.
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,
    /// Where to serve the worker API (mutual TLS); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:9445")]
    pub listen: SocketAddr,
    /// Also serve the worker API on this AF_VSOCK port (a worker inside a VM); the worker
    /// then registers `vsock://CID:PORT` with this VM's CID, unless --advertise says
    /// otherwise.
    #[arg(long, value_name = "PORT")]
    pub vsock_port: Option<u32>,
    /// The `HOST:PORT` control reaches the worker API by, when not the listen address
    /// (required when listening on 0.0.0.0 or ::); `vsock://CID:PORT` for a worker that
    /// registers over vsock (control keeps only the port, see docs/fleet.md).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Where the worker keeps its key, certificate and encrypted code cache.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// The worker's name in control's logs (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Most execution environments to hold at once (reported to control for placement).
    #[arg(long, default_value_t = 64)]
    pub max_envs: u32,
    /// Guest memory to offer, in MiB (default: half of this machine's memory).
    #[arg(long, value_name = "MIB")]
    pub memory_mib: Option<u64>,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP without
    /// authentication: keep it on loopback or a scrape-only network); port 0 picks a free
    /// one (printed once serving); `off` serves none.
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:9465")]
    pub metrics_listen: MetricsListen,
    /// Run micro-VMs as threads of this process, without their sandbox (own process,
    /// namespaces, cgroup, unprivileged uid, seccomp): only for a host that cannot give
    /// them one (not root, no usable cgroups). Never with other people's code.
    #[arg(long)]
    pub insecure_no_jail: bool,
    /// The uid and gid VM processes run as (no capabilities, nothing to open).
    #[arg(long, value_name = "UID", default_value_t = 65534)]
    pub jail_uid: u32,
    #[arg(long, value_name = "GID", default_value_t = 65534)]
    pub jail_gid: u32,
}
