//! ember's test kit: what the end-to-end tests of several packages share. [`Control`]
//! runs the real `ember-control` binary, [`worker::Worker`] a real `emberd` joined to it,
//! [`postgres`] a throwaway PostgreSQL server, and the real AWS CLI and boto3 drive them
//! ([`aws_cli`], [`Control::boto3`]). Both clients are installed from PyPI on first use when
//! missing (the versions `.ci/run` pins), so `cargo test` needs no setup of its own; when
//! that fails, the tests fail with the reason instead of skipping.

pub mod api;
pub mod binaries;
pub mod postgres;
pub mod worker;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

/// How long a start may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `ember-control serve`, killed when dropped.
pub struct Control {
    pub data_dir: PathBuf,
    pub endpoint: String,
    /// The fleet listener, where workers register.
    pub fleet_endpoint: String,
    /// The metrics listener, `http://127.0.0.1:PORT`.
    pub metrics_endpoint: String,
    child: Child,
}

impl Control {
    /// Starts the service on a free loopback port with `data_dir`, waiting until it
    /// listens.
    pub fn start(data_dir: &Path) -> Control {
        Control::start_with(data_dir, &[])
    }

    /// Like [`Control::start`], with extra `serve` arguments (a `--fleet-listen` among
    /// them replaces the free port).
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Control {
        let fleet_listen = match extra.contains(&"--fleet-listen") {
            true => &[][..],
            false => &["--fleet-listen", "127.0.0.1:0"][..],
        };
        let mut child = Command::new(binaries::binary("ember-control", "ember-control"))
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(fleet_listen)
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(extra)
            // Requests are logged at info; tests show only what went wrong.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ember-control");
        let lines = stdout_lines(&mut child);
        let mut urls =
            std::iter::from_fn(|| lines.recv_timeout(START_TIMEOUT).ok()).filter_map(|line| {
                [
                    "ember-control listening on ",
                    "ember-control fleet listening on ",
                    "ember-control metrics on ",
                ]
                .iter()
                .find_map(|prefix| line.strip_prefix(prefix).map(str::to_owned))
            });
        let (Some(endpoint), Some(fleet_endpoint), Some(metrics_endpoint)) =
            (urls.next(), urls.next(), urls.next())
        else {
            let _ = child.kill();
            panic!("ember-control did not print its listening lines within {START_TIMEOUT:?}");
        };
        Control {
            data_dir: data_dir.to_owned(),
            endpoint,
            fleet_endpoint,
            metrics_endpoint,
            child,
        }
    }

    /// Kills the service at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `DIR/ca.pem`.
    pub fn ca(&self) -> PathBuf {
        self.data_dir.join("ca.pem")
    }

    /// `DIR/credentials`.
    pub fn credentials(&self) -> PathBuf {
        self.data_dir.join("credentials")
    }

    /// The admin's account, from `DIR/credentials`.
    pub fn account(&self) -> String {
        let credentials = std::fs::read_to_string(self.credentials()).unwrap();
        credentials
            .lines()
            .find_map(|line| line.strip_prefix("aws_account_id = "))
            .expect("the credentials name the account")
            .to_owned()
    }

    /// An execution role in the admin's account.
    pub fn role(&self) -> String {
        format!("arn:aws:iam::{}:role/tests", self.account())
    }

    /// `aws lambda create-function` of the ZIP file `package` as `name`, with `extra`
    /// arguments; returns the CLI's output.
    pub fn create_function(&self, name: &str, package: &Path, extra: &[&str]) -> serde_json::Value {
        let role = self.role();
        let zip_file = format!("fileb://{}", package.display());
        let mut args = vec![
            "create-function",
            "--function-name",
            name,
            "--runtime",
            "wasm32-wasip1",
            "--role",
            &role,
            "--zip-file",
            &zip_file,
        ];
        args.extend_from_slice(extra);
        self.aws_json(&args)
    }

    /// Runs `aws --profile ember lambda ARGS…` against the service.
    pub fn aws(&self, args: &[&str]) -> Output {
        self.aws_with(&self.credentials(), "ember", args)
    }

    /// Runs `aws lambda ARGS…` with another credentials file and profile.
    pub fn aws_with(&self, credentials: &Path, profile: &str, args: &[&str]) -> Output {
        self.aws_service("lambda", credentials, profile, args)
    }

    /// Runs `aws SERVICE ARGS…` (`lambda`, `logs`) with a credentials file and profile.
    pub fn aws_service(
        &self,
        service: &str,
        credentials: &Path,
        profile: &str,
        args: &[&str],
    ) -> Output {
        let mut command = aws_cli();
        command
            .args([
                "--profile",
                profile,
                "--region",
                "local",
                "--output",
                "json",
            ])
            .args(["--endpoint-url", &self.endpoint, service])
            .args(args);
        aws_env(&mut command, credentials, &self.ca());
        command
            .output()
            .expect("run `aws` (the AWS CLI; .ci/run installs it with pip)")
    }

    /// Runs `aws lambda ARGS…`, requires success and parses its JSON output.
    pub fn aws_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.aws(args);
        assert!(
            out.status.success(),
            "aws lambda {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if out.stdout.is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&out.stdout).expect("aws printed JSON")
    }

    /// `python3` running the boto3 script `script` (a file in the kit's `py/` folder)
    /// with `credentials` and this service's CA, and nothing from the environment.
    pub fn boto3(&self, script: &str, credentials: &Path) -> Command {
        let mut command = python();
        command.arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("py")
                .join(script),
        );
        aws_env(&mut command, credentials, &self.ca());
        command
    }

    /// Runs the boto3 script that drives a whole function lifecycle (`py/lambda_boto3.py`)
    /// as `profile` of `credentials`, with the sample packages written to `dir`; panics
    /// with the script's output if it fails.
    pub fn boto3_lifecycle(&self, credentials: &Path, profile: &str, dir: &Path) {
        write_packages(dir);
        let out = self
            .boto3("lambda_boto3.py", credentials)
            .arg(&self.endpoint)
            .arg(self.ca())
            .arg(credentials)
            .arg(profile)
            .arg(dir)
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "boto3 lifecycle failed (needs boto3: .ci/run installs it):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Adds an account with `ember-control account create` and returns a credentials file
    /// holding both the admin's profile and the new one's.
    pub fn add_account(&self, name: &str, into: &Path) -> PathBuf {
        let out = Command::new(binaries::binary("ember-control", "ember-control"))
            .args(["account", "create", name, "--data-dir"])
            .arg(&self.data_dir)
            .output()
            .expect("run ember-control account create");
        assert!(
            out.status.success(),
            "account create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = into.join("credentials");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&std::fs::read(self.credentials()).unwrap())
            .unwrap();
        file.write_all(b"\n").unwrap();
        file.write_all(&out.stdout).unwrap();
        path
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every line `child` prints on stdout (which must be piped), read by a thread of its own
/// so the child never blocks on a full pipe.
pub fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // Read to the end even when nobody listens any more: a closed pipe would fail
            // the child's next write.
            let _ = tx.send(line);
        }
    });
    rx
}

/// The AWS CLI and boto3 as `.ci/run` pins them.
const PYTHON_CLIENTS: [&str; 2] = ["awscli==1.45.11", "boto3==1.43.11"];

/// A command running the AWS CLI: `aws` when it is on the path, else the same CLI as a
/// Python module (where pip put it without a script on the path).
pub fn aws_cli() -> Command {
    static ON_PATH: OnceLock<bool> = OnceLock::new();
    let on_path = *ON_PATH.get_or_init(|| {
        install_python_clients();
        Command::new("aws")
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    });
    if on_path {
        Command::new("aws")
    } else {
        let mut command = Command::new("python3");
        command.args(["-m", "awscli"]);
        command
    }
}

/// `python3`, with boto3 importable.
pub fn python() -> Command {
    install_python_clients();
    Command::new("python3")
}

/// Installs the AWS CLI and boto3 with pip unless both are there already; once per test
/// process.
fn install_python_clients() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let present = Command::new("python3")
            .args(["-c", "import awscli, boto3"])
            .output()
            .is_ok_and(|out| out.status.success());
        if present {
            return;
        }
        let out = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PYTHON_CLIENTS)
            .output()
            .expect("run python3 -m pip (the tests need Python 3 with pip)");
        assert!(
            out.status.success(),
            "installing {PYTHON_CLIENTS:?} with pip failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Points an AWS CLI or boto3 process at `credentials` and `ca`, and at nothing else: no
/// configuration or keys from the environment running the tests leak in.
pub fn aws_env(command: &mut Command, credentials: &Path, ca: &Path) {
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
    ] {
        command.env_remove(var);
    }
    command
        .env("AWS_SHARED_CREDENTIALS_FILE", credentials)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_CA_BUNDLE", ca)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "");
}

/// The error type in an AWS CLI failure, from its `An error occurred (TYPE) when calling …`
/// line.
pub fn aws_error(out: &Output) -> String {
    assert!(!out.status.success(), "expected the aws command to fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .split_once("An error occurred (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(kind, _)| kind.to_owned())
        .unwrap_or_else(|| panic!("no AWS error type in: {stderr}"))
}

/// A ZIP holding `entries` (name, bytes), deflated.
pub fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut writer = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        writer.start_file(*name, options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap();
    out.into_inner()
}

/// Writes the packages the client tests upload into `dir`: the example functions, and
/// the broken ones the service must refuse.
pub fn write_packages(dir: &Path) {
    let packages: [(&str, Vec<u8>); 6] = [
        ("hello.zip", zip(&[("hello.wasm", ember_examples::HELLO)])),
        (
            "counter.zip",
            zip(&[("counter.wasm", ember_examples::COUNTER)]),
        ),
        ("echo.zip", zip(&[("bin/echo.wasm", ember_examples::ECHO)])),
        ("not-a-zip.zip", b"this is not a zip archive".to_vec()),
        ("no-module.zip", zip(&[("README.txt", b"no code here")])),
        (
            "bad-wasm.zip",
            zip(&[("f.wasm", b"\0asm\x01\0\0\0garbage")]),
        ),
    ];
    for (name, bytes) in packages {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
