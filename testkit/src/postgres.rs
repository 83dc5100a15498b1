//! A throwaway PostgreSQL server for the tests that run the registry on PostgreSQL: its own
//! cluster (`initdb`) in a temporary directory, trust authentication, reachable only
//! through a Unix socket in that directory, one database per test, stopped when the last
//! test using it lets go.
//!
//! The server programs come from Debian's `postgresql` package (`.ci/run` installs it);
//! without them the tests fail, naming the package, rather than skip. PostgreSQL refuses
//! to run as root, so as root (as in CI) the cluster belongs to the `postgres` user the
//! package creates and its programs run under that user's ids.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// What the failure message tells the reader to install.
const PACKAGE_HINT: &str = "install Debian's `postgresql` package \
     (`apt-get install -y postgresql`, as .ci/run does)";

/// How long the server may take to accept connections, and to stop.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The socket's port number: it only names the socket file (`.s.PGSQL.5432`) in the
/// server's own directory, so it cannot clash with another server.
const PORT: &str = "5432";

/// A running PostgreSQL server, stopped (fast shutdown) when dropped.
pub struct Postgres {
    /// Holds the cluster (`data/`), the socket and the log; removed after the server.
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The installation's major version. From 15 on, the cluster's default collation is
    /// ICU's `en-US` (`a` < `B`), not byte order.
    pub major: u32,
    /// The shell watching over the server (see [`Postgres::start`]).
    child: Child,
    /// Closing it stops the server.
    stdin: Option<ChildStdin>,
    databases: AtomicUsize,
}

impl Postgres {
    /// The server this test process's tests share: started by the first that asks, stopped
    /// when the last of them drops it (a later test then starts a new one).
    pub fn shared() -> Arc<Postgres> {
        static SHARED: Mutex<Weak<Postgres>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(server) = shared.upgrade() {
            return server;
        }
        let server = Arc::new(Postgres::start());
        *shared = Arc::downgrade(&server);
        server
    }

    /// Creates a cluster in a new temporary directory and starts its server.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let user = if running_as_root() {
            Some(postgres_user())
        } else {
            None
        };
        // Under /tmp rather than $TMPDIR: a socket's path must stay under 108 bytes, and
        // the `postgres` user must be able to reach the directory.
        let dir = tempfile::Builder::new()
            .prefix("ember-pg-")
            .tempdir_in("/tmp")
            .expect("create a directory for PostgreSQL under /tmp");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("give the PostgreSQL directory to the postgres user");
        }
        let data = dir.path().join("data");

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("--pgdata")
            .arg(&data)
            .args(["--username", "postgres", "--auth", "trust"])
            .args(["--encoding", "UTF8", "--locale", "C", "--no-sync"]);
        let major = major_version(&bin);
        if major >= 15 {
            // A default collation that is not byte order (`a` < `B`), as most databases
            // have: the registry must not depend on it.
            initdb.args(["--locale-provider", "icu", "--icu-locale", "en-US"]);
        }
        let out = as_user(&mut initdb, user, dir.path())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", bin.join("initdb").display()));
        assert!(
            out.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // The server runs under a shell that stops it (SIGINT: fast shutdown) once its
        // standard input closes: when this value is dropped, and also when the test
        // process dies without dropping it, so no server outlives the tests. The shell
        // exits with the server, so an early exit shows as the child's.
        let log = dir.path().join("postgres.log");
        let log_file = File::create(&log).expect("create the PostgreSQL log");
        let mut server = Command::new("/bin/sh");
        server
            .arg("-c")
            .arg(
                r#"exec 3<&0 </dev/null
"$@" &
pg=$!
{ read -r line <&3; kill -INT "$pg"; } 2>/dev/null &
wait "$pg""#,
            )
            .arg("sh")
            .arg(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args(["-p", PORT, "-c", "listen_addresses="])
            // Throwaway data: no need to survive a crash of the machine.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdin(Stdio::piped())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        let mut child = as_user(&mut server, user, dir.path())
            .spawn()
            .expect("start postgres");
        let stdin = child.stdin.take();
        let mut postgres = Postgres {
            dir,
            bin,
            major,
            child,
            stdin,
            databases: AtomicUsize::new(0),
        };
        postgres.wait_until_ready(&log);
        postgres
    }

    /// Creates a new database (named after `label`, unique on this server) and returns its
    /// URL.
    pub fn database(&self, label: &str) -> String {
        let name = format!("{label}_{}", self.databases.fetch_add(1, Ordering::Relaxed));
        let out = self
            .client("createdb")
            .arg(&name)
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    /// The URL of database `name`, through the server's socket.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@localhost:{PORT}/{name}?host={}",
            self.dir.path().display()
        )
    }

    /// A client program of the server's installation, pointed at it.
    fn client(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command
            .arg("--host")
            .arg(self.dir.path())
            .args(["--port", PORT, "--username", "postgres"]);
        command
    }

    fn wait_until_ready(&mut self, log: &Path) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "postgres exited ({status}):\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            let ready = self
                .client("pg_isready")
                .output()
                .is_ok_and(|out| out.status.success());
            if ready {
                return;
            }
            if started.elapsed() > TIMEOUT {
                panic!(
                    "postgres did not accept connections within {TIMEOUT:?}:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let started = Instant::now();
        while started.elapsed() < TIMEOUT {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("postgres did not stop within {TIMEOUT:?}; killing it");
        // The postmaster's pid is the first line of its pid file.
        let pid_file = self.dir.path().join("data/postmaster.pid");
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.lines().next().map(str::to_owned))
        {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The directory holding `initdb`, `postgres`, `pg_isready` and `createdb`: where the
/// `initdb` on the path really lives, else Debian's newest `/usr/lib/postgresql/N/bin`.
fn bin_dir() -> PathBuf {
    const PROGRAMS: [&str; 4] = ["initdb", "postgres", "pg_isready", "createdb"];
    let complete = |dir: &Path| PROGRAMS.iter().all(|p| dir.join(p).is_file());
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("initdb"))
        .find(|initdb| initdb.is_file())
        .and_then(|initdb| std::fs::canonicalize(initdb).ok())
        .and_then(|initdb| initdb.parent().map(Path::to_owned));
    if let Some(dir) = on_path.filter(|dir| complete(dir)) {
        return dir;
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    debian.sort();
    match debian.pop() {
        Some((_, dir)) => dir,
        None => panic!(
            "PostgreSQL's server programs ({}) are not on the path nor in \
             /usr/lib/postgresql/*/bin: {PACKAGE_HINT}",
            PROGRAMS.join(", ")
        ),
    }
}

/// The major version of the installation in `bin` (`initdb --version` prints e.g.
/// `initdb (PostgreSQL) 15.18`).
fn major_version(bin: &Path) -> u32 {
    let out = Command::new(bin.join("initdb"))
        .arg("--version")
        .output()
        .expect("run initdb --version");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .last()
        .and_then(|version| version.split('.').next())
        .and_then(|major| major.parse().ok())
        .unwrap_or_else(|| panic!("unexpected `initdb --version`: {text}"))
}

/// Whether this process runs as root: `/proc/self` belongs to the effective user.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .expect("read /proc/self")
        .uid()
        == 0
}

/// The `postgres` user's ids, for running the server when the tests run as root.
fn postgres_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        assert!(
            out.status.success(),
            "PostgreSQL refuses to run as root and there is no `postgres` user to run it \
             as: {PACKAGE_HINT}, which creates it"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("id prints a number")
    };
    (id("-u"), id("-g"))
}

/// `command` to run in `dir` as `user` (dropping root's supplementary groups too), if any.
fn as_user<'a>(command: &'a mut Command, user: Option<(u32, u32)>, dir: &Path) -> &'a mut Command {
    command.current_dir(dir);
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}
