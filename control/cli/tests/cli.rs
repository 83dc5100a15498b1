//! End to end: the `ember` CLI against a real `ember-control serve` on a loopback port,
//! configured from the service's data directory the way an operator would.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use ember_testkit::Control;
use serde_json::Value;
use tempfile::TempDir;

/// A running service in its own data directory; drops stop it, then remove the directory.
struct Server {
    control: Control,
    _data: TempDir,
}

impl Server {
    fn start() -> Server {
        let data = tempfile::tempdir().unwrap();
        Server {
            control: Control::start(data.path()),
            _data: data,
        }
    }

    fn dir(&self) -> &str {
        self.control.data_dir.to_str().unwrap()
    }

    fn endpoint(&self) -> &str {
        &self.control.endpoint
    }
}

/// The CLI with its own config file and home, and none of the caller's settings.
struct Ember {
    home: TempDir,
}

impl Ember {
    fn new() -> Ember {
        Ember {
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> PathBuf {
        self.home.path().join("ember/config.json")
    }

    /// Writes `bytes` into the home directory and returns the file's path.
    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.home.path().join(name);
        fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ember"));
        command
            .args(args)
            .env("HOME", self.home.path())
            .env("EMBER_CONFIG", self.config());
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_ACCOUNT_ID",
            "AWS_SHARED_CREDENTIALS_FILE",
            "EMBER_ENDPOINT",
            "EMBER_REGION",
            "EMBER_PROFILE",
            "EMBER_CA",
            "XDG_CONFIG_HOME",
        ] {
            command.env_remove(var);
        }
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a command that must succeed and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ember {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command with `--output json` and parses what it prints.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        let stdout = self.ok(&args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// Runs a command that must fail; returns its exit code and its stderr.
    fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args);
        assert!(!out.status.success(), "ember {args:?} succeeded");
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }
}

/// The `Version`s in a list of function configurations.
fn versions(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v["Version"].as_str().unwrap())
        .collect()
}

fn configured(server: &Server) -> Ember {
    let ember = Ember::new();
    ember.ok(&[
        "configure",
        "--from-data-dir",
        server.dir(),
        "--endpoint",
        server.endpoint(),
    ]);
    ember
}

#[test]
fn configure_reads_the_data_directory_and_keeps_secrets_private() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start();
    let ember = Ember::new();
    let shown = ember.ok(&[
        "configure",
        "--from-data-dir",
        server.dir(),
        "--endpoint",
        server.endpoint(),
    ]);
    let credentials = fs::read_to_string(server.control.credentials()).unwrap();
    let secret = credentials
        .lines()
        .find_map(|l| {
            l.split_once('=')
                .filter(|(k, _)| k.trim() == "aws_secret_access_key")
        })
        .map(|(_, v)| v.trim().to_owned())
        .expect("the data directory's credentials hold a secret");
    assert!(shown.contains("profile [ember]"), "{shown}");
    assert!(!shown.contains(&secret));
    let mode = fs::metadata(ember.config()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The keys stay in the data directory: the config file refers to them.
    assert!(!fs::read_to_string(ember.config())
        .unwrap()
        .contains(&secret));
    assert_eq!(ember.json(&["function", "list"]), Value::Array(vec![]));
}

#[test]
fn a_function_through_its_lifecycle() {
    let server = Server::start();
    let ember = configured(&server);
    let hello = ember.file("hello.wasm", ember_examples::HELLO);
    let counter = ember.file("counter.wasm", ember_examples::COUNTER);

    let created = ember.json(&[
        "function",
        "create",
        "hello",
        "--wasm",
        &hello,
        "--memory",
        "256",
        "--timeout",
        "5",
        "--env",
        "GREETING=hi",
        "--description",
        "first",
    ]);
    assert_eq!(created["FunctionName"], "hello");
    assert_eq!(created["Version"], "$LATEST");
    assert_eq!(created["MemorySize"], 256);
    assert_eq!(created["Timeout"], 5);
    assert_eq!(created["Environment"]["Variables"]["GREETING"], "hi");
    assert!(
        created["Role"]
            .as_str()
            .unwrap()
            .ends_with(":role/ember-default"),
        "{created}"
    );

    let got = ember.json(&["function", "get", "hello"]);
    assert_eq!(got["Configuration"]["FunctionArn"], created["FunctionArn"]);
    let summary = ember.ok(&["function", "get", "hello"]);
    assert!(summary.contains("256 MiB"), "{summary}");
    assert!(
        summary.contains("GREETING") && !summary.contains("hi\n"),
        "{summary}"
    );

    let listed = ember.json(&["function", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["FunctionName"], "hello");
    let table = ember.ok(&["function", "list"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.lines().nth(1).unwrap().starts_with("hello"),
        "{table}"
    );

    let updated = ember.json(&["function", "update-code", "hello", "--wasm", &counter]);
    assert_ne!(updated["CodeSha256"], created["CodeSha256"]);
    let configured = ember.json(&[
        "function",
        "update-config",
        "hello",
        "--memory",
        "512",
        "--description",
        "second",
    ]);
    assert_eq!(configured["MemorySize"], 512);
    assert_eq!(configured["Description"], "second");
    assert_eq!(configured["Environment"]["Variables"]["GREETING"], "hi");

    let v1 = ember.json(&["function", "publish", "hello", "--description", "v1"]);
    assert_eq!(v1["Version"], "1");
    assert_eq!(v1["CodeSha256"], updated["CodeSha256"]);
    let v2 = ember.json(&[
        "function",
        "update-code",
        "hello",
        "--wasm",
        &hello,
        "--publish",
    ]);
    assert_eq!(v2["Version"], "2");
    assert_eq!(v2["CodeSha256"], created["CodeSha256"]);
    assert_eq!(
        versions(&ember.json(&["function", "versions", "hello"])),
        ["$LATEST", "1", "2"]
    );
    assert_eq!(
        ember
            .json(&["function", "list", "--all-versions"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // A qualified ARN is escaped in the path and still names the function.
    let unqualified = created["FunctionArn"].as_str().unwrap();
    let arn = format!("{}:1", unqualified.trim_end_matches(":$LATEST"));
    assert_eq!(
        ember.json(&["function", "get", &arn])["Configuration"]["Version"],
        "1"
    );

    let alias = ember.json(&[
        "alias",
        "create",
        "hello",
        "live",
        "--version",
        "1",
        "--weight",
        "2=0.25",
        "--description",
        "canary",
    ]);
    assert_eq!(alias["Name"], "live");
    assert_eq!(alias["FunctionVersion"], "1");
    assert_eq!(
        alias["RoutingConfig"]["AdditionalVersionWeights"]["2"],
        0.25
    );
    let aliases = ember.json(&["alias", "list", "hello"]);
    assert_eq!(aliases.as_array().unwrap().len(), 1);
    assert!(ember
        .ok(&["alias", "get", "hello", "live"])
        .contains("2=0.25"));
    let moved = ember.json(&[
        "alias",
        "update",
        "hello",
        "live",
        "--version",
        "2",
        "--clear-weights",
    ]);
    assert_eq!(moved["FunctionVersion"], "2");
    let weights = &moved["RoutingConfig"]["AdditionalVersionWeights"];
    assert!(
        weights.is_null() || weights.as_object().unwrap().is_empty(),
        "{moved}"
    );

    ember.ok(&["concurrency", "put", "hello", "--reserved", "5"]);
    assert_eq!(
        ember.json(&["concurrency", "get", "hello"])["ReservedConcurrentExecutions"],
        5
    );
    let provisioned = ember.json(&[
        "concurrency",
        "provisioned",
        "put",
        "hello",
        "--qualifier",
        "live",
        "--count",
        "2",
    ]);
    assert_eq!(provisioned["RequestedProvisionedConcurrentExecutions"], 2);
    let configs = ember.json(&["concurrency", "provisioned", "list", "hello"]);
    assert_eq!(configs.as_array().unwrap().len(), 1);
    assert_eq!(configs[0]["RequestedProvisionedConcurrentExecutions"], 2);
    assert!(configs[0]["FunctionArn"]
        .as_str()
        .unwrap()
        .ends_with(":hello:live"));
    ember.ok(&[
        "concurrency",
        "provisioned",
        "delete",
        "hello",
        "--qualifier",
        "live",
    ]);
    let (code, _) = ember.fails(&[
        "concurrency",
        "provisioned",
        "get",
        "hello",
        "--qualifier",
        "live",
    ]);
    assert_eq!(code, 3);
    ember.ok(&["concurrency", "delete", "hello"]);
    assert!(ember
        .ok(&["concurrency", "get", "hello"])
        .contains("no reserved concurrency"));

    ember.ok(&["alias", "delete", "hello", "live"]);
    ember.ok(&["function", "delete", "hello", "--qualifier", "1"]);
    assert_eq!(
        versions(&ember.json(&["function", "versions", "hello"])),
        ["$LATEST", "2"]
    );
    assert_eq!(
        ember.ok(&["function", "delete", "hello"]).trim(),
        "deleted function 'hello'"
    );
    let (code, stderr) = ember.fails(&["function", "get", "hello"]);
    assert_eq!(code, 3);
    assert_eq!(
        stderr,
        "error: function 'hello' not found (ResourceNotFoundException)\n"
    );
}

#[test]
fn failures_are_one_line_with_a_hint() {
    let server = Server::start();
    let ember = Ember::new();
    // Keys but no CA: the service's certificate cannot be trusted.
    ember.ok(&[
        "configure",
        "--endpoint",
        server.endpoint(),
        "--credentials-file",
        server.control.credentials().to_str().unwrap(),
        "--profile",
        "ember",
    ]);
    let (code, stderr) = ember.fails(&["function", "list"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("certificate is not trusted; pass --ca"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let ca = server.control.ca();
    let ca = ca.to_str().unwrap();
    assert_eq!(
        ember.json(&["--ca", ca, "function", "list"]),
        Value::Array(vec![])
    );

    let (code, stderr) = ember.fails(&[
        "--ca",
        ca,
        "--endpoint",
        "https://127.0.0.1:1",
        "function",
        "list",
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("error: cannot reach https://127.0.0.1:1"),
        "{stderr}"
    );

    // Keys from the environment override the file's; wrong ones are refused by the service.
    let out = ember
        .command(&["--ca", ca, "function", "list"])
        .env("AWS_ACCESS_KEY_ID", "AKIAAAAAAAAAAAAAAAAA")
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("error: ") && stderr.ends_with("Exception)\n"),
        "{stderr}"
    );
}

#[test]
fn worker_commands_manage_join_tokens_on_the_data_directory() {
    let server = Server::start();
    let ember = Ember::new();
    let dir = server.dir();
    let token = ember.ok(&[
        "worker",
        "token",
        "create",
        "--data-dir",
        dir,
        "--uses",
        "unlimited",
        "--expires-in",
        "7d",
        "--max-vcpus",
        "8",
        "--description",
        "rack 4",
    ]);
    let (id, secret) = token.trim().split_once('.').unwrap();
    assert!(id.starts_with("jt-") && secret.len() == 64, "{token}");
    let listed = ember.ok(&["worker", "token", "list", "--data-dir", dir]);
    let row = listed.lines().find(|l| l.starts_with(id)).unwrap();
    assert!(
        row.contains("\t0/unlimited\t") && row.contains("\t8/") && row.ends_with("rack 4"),
        "{row}"
    );
    assert!(!listed.contains(secret), "no secrets in the list");
    // The bootstrap token is one of them.
    assert!(listed.contains("\nbootstrap\t"), "{listed}");
    assert_eq!(
        ember
            .ok(&["worker", "revoke", id, "--data-dir", dir])
            .trim(),
        format!("revoked join token {id}")
    );
    let (code, stderr) = ember.fails(&["worker", "revoke", id, "--data-dir", dir]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not revoked already"), "{stderr}");
    let (code, stderr) = ember.fails(&[
        "worker",
        "token",
        "create",
        "--uses",
        "0",
        "--data-dir",
        dir,
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(ember
        .ok(&["worker", "list", "--data-dir", dir])
        .starts_with("ID\tNAME"));
}
