//! The sandbox for this worker's micro-VMs (`docs/isolation.md`): the zygote, this very
//! program started again as `emberd zygote` (or `ember zygote` under `ember up`), forks
//! every VM into a process of its own. What the host lacks for it is said exactly, and
//! the worker refuses to start unless told `--insecure-no-jail`.

use std::path::PathBuf;
use std::sync::Arc;

use ember_jail::{JailConfig, Zygote};
use ember_vmm::process::Jail;

use crate::config::ServeArgs;

/// Why the sandbox cannot be had here.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("the micro-VM sandbox needs root (to make namespaces and cgroups and to drop to uid {0}); run emberd as root, or pass --insecure-no-jail to run VMs unsandboxed")]
    NotRoot(u32),
    #[error("the micro-VM sandbox needs a cgroup for each VM: {0}; pass --insecure-no-jail to run VMs unsandboxed")]
    Cgroups(#[source] ember_jail::cgroup::CgroupError),
    #[error("the micro-VM sandbox's root {}: {source}", path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the VM zygote: {0}")]
    Zygote(#[source] ember_jail::zygote::ZygoteError),
}

/// The jail for this worker's VMs, or `None` with `--insecure-no-jail`.
pub fn start(args: &ServeArgs) -> Result<Option<Arc<Jail>>, JailError> {
    if args.insecure_no_jail {
        log::warn!(
            "--insecure-no-jail: micro-VMs run as threads of this process, without their sandbox"
        );
        return Ok(None);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(JailError::NotRoot(args.jail_uid));
    }
    // Each VM process mounts its own empty root here, in its own mount namespace.
    let root = args.state_dir.join("jail-root");
    let made = std::fs::create_dir_all(&root).and_then(|()| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
    });
    made.map_err(|source| JailError::Root {
        path: root.clone(),
        source,
    })?;
    let config =
        JailConfig::detect(&root, args.jail_uid, args.jail_gid).map_err(JailError::Cgroups)?;
    let program = std::env::current_exe().map_err(|source| JailError::Root {
        path: "/proc/self/exe".into(),
        source,
    })?;
    let zygote = Zygote::start(&program, &config, &[]).map_err(JailError::Zygote)?;
    Ok(Some(Arc::new(Jail::new(zygote))))
}
