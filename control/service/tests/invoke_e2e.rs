//! The invoke path end to end: the real `ember-control`, real `emberd` workers running
//! real micro-VMs (KVM required), mutual TLS between them, and the stock AWS CLI and
//! boto3 as clients.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ember_core::grants::{GrantIssuer, Holder};
use ember_testkit::worker::Worker;
use ember_testkit::{aws_error, write_packages, zip, Control};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Control with heartbeats fast enough for the tests to see a worker die.
fn control(dir: &Path, extra: &[&str]) -> Control {
    let mut args = vec!["--heartbeat-ms", "200"];
    args.extend_from_slice(extra);
    Control::start_with(&dir.join("data"), &args)
}

fn create(control: &Control, dir: &Path, name: &str, package: &str) {
    control.create_function(name, &dir.join(package), &[]);
}

/// `aws lambda invoke`: the CLI's output and the response body.
fn invoke(control: &Control, dir: &Path, args: &[&str]) -> (serde_json::Value, String) {
    let out = dir.join("response.json");
    let mut all = vec!["invoke"];
    all.extend_from_slice(args);
    all.push(out.to_str().unwrap());
    let printed = control.aws_json(&all);
    let body = std::fs::read_to_string(&out).unwrap_or_default();
    (printed, body)
}

#[test]
fn aws_cli_invokes_functions_on_a_registered_worker() {
    let dir = tempfile::tempdir().unwrap();
    let control = control(dir.path(), &[]);
    let worker = Worker::start(&control, &dir.path().join("worker"));
    write_packages(dir.path());

    // The worker's certificate: from control's fleet CA, named by its id.
    let ca = std::fs::read(control.data_dir.join("tls/fleet-ca.pem")).unwrap();
    let ca = CertificateDer::from_pem_slice(&ca).unwrap();
    let cert = std::fs::read(worker.state_dir.join("worker.pem")).unwrap();
    let cert = CertificateDer::from_pem_slice(&cert).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&ca).unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
    parsed.verify_signature(Some(ca.public_key())).unwrap();
    assert_eq!(
        ember_fleet::tls::common_name(&cert).as_deref(),
        Some(worker.id.as_str())
    );
    for secret in ["worker.key", "cache.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(worker.state_dir.join(secret))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }

    create(&control, dir.path(), "hello", "hello.zip");
    create(&control, dir.path(), "counter", "counter.zip");
    // Silent for 3 heartbeats (600 ms) would be dead: this shows it heartbeats.
    std::thread::sleep(Duration::from_millis(1500));

    let (printed, body) = invoke(
        &control,
        dir.path(),
        &[
            "--function-name",
            "hello",
            "--payload",
            r#"{"name":"Ada"}"#,
            "--log-type",
            "Tail",
        ],
    );
    assert_eq!(body, r#"{"message":"Hello, Ada!"}"#);
    assert_eq!(printed["StatusCode"], 200);
    assert_eq!(printed["ExecutedVersion"], "$LATEST");
    assert!(printed.get("FunctionError").is_none(), "{printed}");
    let tail = base64::engine::general_purpose::STANDARD
        .decode(printed["LogResult"].as_str().unwrap())
        .unwrap();
    assert!(
        String::from_utf8_lossy(&tail).contains(r#"greeting "Ada""#),
        "{tail:?}"
    );

    // A warm environment keeps the reactor's state, as Lambda's does.
    for expected in 1..=3 {
        let (_, body) = invoke(&control, dir.path(), &["--function-name", "counter"]);
        let count: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(count["count"], expected, "{body}");
    }

    let dry = control.aws_json(&[
        "invoke",
        "--function-name",
        "hello",
        "--invocation-type",
        "DryRun",
        dir.path().join("dry.json").to_str().unwrap(),
    ]);
    assert_eq!(dry["StatusCode"], 204);
    let missing = control.aws(&[
        "invoke",
        "--function-name",
        "absent",
        dir.path().join("x.json").to_str().unwrap(),
    ]);
    assert_eq!(aws_error(&missing), "ResourceNotFoundException");
}

#[test]
fn boto3_routes_versions_and_aliases_and_reports_errors() {
    let dir = tempfile::tempdir().unwrap();
    let control = control(dir.path(), &[]);
    let _worker = Worker::start(&control, &dir.path().join("worker"));
    write_packages(dir.path());
    for (name, module) in [
        ("trap", ember_examples::TRAP),
        ("loop", ember_examples::LOOP),
        ("env-reader", ember_examples::ENV_READER),
    ] {
        let package = zip(&[(&format!("{name}.wasm"), module)]);
        std::fs::write(dir.path().join(format!("{name}.zip")), package).unwrap();
    }
    let account = control.account();
    let mut python = control.boto3("invoke_boto3.py", &control.credentials());
    python
        .arg(&control.endpoint)
        .arg(control.ca())
        .arg(control.credentials())
        .arg(dir.path())
        .arg(&account);
    let out = python.output().expect("run python3");
    assert!(
        out.status.success(),
        "boto3 invocations failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A blocking HTTPS client for the fleet's TLS, with `identity` if given.
fn fleet_client(
    ca_pem: &str,
    identity: Option<&ember_fleet::tls::Identity<'_>>,
) -> reqwest::blocking::Client {
    let config = ember_fleet::tls::client_config(ca_pem, identity).unwrap();
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(Arc::unwrap_or_clone(config))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Registers a fake worker with `token`: its key (PEM) and the answer.
fn register(control: &Control, ca_pem: &str, token: &str) -> (String, reqwest::blocking::Response) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let request = ember_fleet::messages::RegisterRequest {
        token: token.to_owned(),
        name: "impostor".into(),
        csr_pem: csr,
        address: "127.0.0.1:1".into(),
        capacity: ember_fleet::messages::Capacity {
            vcpus: 1,
            memory_mib: 64,
            max_environments: 1,
        },
    };
    let response = fleet_client(ca_pem, None)
        .post(format!(
            "{}{}",
            control.fleet_endpoint,
            ember_fleet::REGISTER
        ))
        .json(&request)
        .send()
        .unwrap();
    (key.serialize_pem(), response)
}

#[test]
fn the_fleet_refuses_strangers_and_bad_grants() {
    let dir = tempfile::tempdir().unwrap();
    let control = control(dir.path(), &[]);
    let worker = Worker::start(&control, &dir.path().join("worker"));
    write_packages(dir.path());
    create(&control, dir.path(), "hello", "hello.zip");
    let ca_pem = std::fs::read_to_string(control.ca()).unwrap();
    let token = std::fs::read_to_string(control.data_dir.join("worker-token")).unwrap();
    let fleet = &control.fleet_endpoint;

    // Registration needs the token.
    let (_, wrong) = register(&control, &ca_pem, "not-the-token");
    assert_eq!(wrong.status(), 403);

    // Everything else needs a worker's certificate: none is refused...
    let heartbeat = format!("{fleet}{}", ember_fleet::HEARTBEAT);
    let anonymous = fleet_client(&ca_pem, None)
        .post(&heartbeat)
        .json(&ember_fleet::messages::HeartbeatRequest::default())
        .send()
        .unwrap();
    assert_eq!(anonymous.status(), 403);
    // ...and one from another CA fails the handshake.
    let foreign_key = rcgen::KeyPair::generate().unwrap();
    let mut foreign = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    foreign.distinguished_name = rcgen::DistinguishedName::new();
    foreign
        .distinguished_name
        .push(rcgen::DnType::CommonName, worker.id.as_str());
    let foreign = foreign.self_signed(&foreign_key).unwrap().pem();
    let foreign_key = foreign_key.serialize_pem();
    let stranger = ember_fleet::tls::Identity {
        certificate_pem: &foreign,
        key_pem: &foreign_key,
    };
    let refused = fleet_client(&ca_pem, Some(&stranger))
        .post(&heartbeat)
        .json(&ember_fleet::messages::HeartbeatRequest::default())
        .send();
    assert!(refused.is_err(), "a foreign certificate was accepted");

    // A registered worker's certificate works for heartbeats and code, with a grant.
    let (key_pem, registered) = register(&control, &ca_pem, token.trim());
    assert_eq!(registered.status(), 200);
    let registered: ember_fleet::messages::RegisterResponse = registered.json().unwrap();
    let identity = ember_fleet::tls::Identity {
        certificate_pem: &registered.certificate_pem,
        key_pem: &key_pem,
    };
    let member = fleet_client(&ca_pem, Some(&identity));
    let beat = member
        .post(&heartbeat)
        .json(&ember_fleet::messages::HeartbeatRequest::default())
        .send()
        .unwrap();
    assert_eq!(beat.status(), 200);

    let got = control.aws_json(&["get-function", "--function-name", "hello"]);
    let location = got["Code"]["Location"].as_str().unwrap();
    let (path, grant) = location.split_once("?grant=").unwrap();
    let (account, artifact) = path
        .rsplit_once("/artifacts/")
        .unwrap()
        .1
        .split_once('/')
        .unwrap();
    let code = format!("{fleet}{}/{account}/{artifact}", ember_fleet::ARTIFACTS);
    let fetch = |grant: &str| {
        member
            .get(&code)
            .header(ember_fleet::GRANT_HEADER, grant)
            .send()
            .unwrap()
    };
    // A download URL's grant is no worker's.
    assert_eq!(fetch(grant).status(), 403);
    let issuer = GrantIssuer::load_or_create(&control.data_dir).unwrap();
    let member_id = Holder::Worker(&registered.worker_id);
    let now = ember_core::clock::now_unix();
    let grant = issuer
        .issue(account, artifact, member_id, now + 60)
        .unwrap();
    let module = fetch(&grant);
    assert_eq!(module.status(), 200);
    assert_eq!(&module.bytes().unwrap()[..], ember_examples::HELLO);
    let mut forged = grant.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(fetch(&forged).status(), 403);
    let expired = issuer.issue(account, artifact, member_id, 1).unwrap();
    assert_eq!(fetch(&expired).status(), 403);
    // The grant is the credential: a worker certificate alone is not enough.
    assert_eq!(member.get(&code).send().unwrap().status(), 403);

    // A worker runs invocations for control only, not for another worker's certificate.
    let invoke = format!("{}{}", worker.endpoint, ember_fleet::INVOKE);
    let from_worker = member.post(&invoke).body("{}").send();
    assert!(
        from_worker.is_err(),
        "a worker took an invocation from a worker"
    );
    let from_nobody = fleet_client(&ca_pem, None).post(&invoke).body("{}").send();
    assert!(
        from_nobody.is_err(),
        "a worker took an anonymous invocation"
    );

    // Deregistered, the certificate is refused.
    let left = member
        .post(format!("{fleet}{}", ember_fleet::DEREGISTER))
        .send()
        .unwrap();
    assert_eq!(left.status(), 204);
    let after = member
        .post(&heartbeat)
        .json(&ember_fleet::messages::HeartbeatRequest::default())
        .send()
        .unwrap();
    assert_eq!(after.status(), 403);
}

#[test]
fn dead_workers_and_ending_leases_stop_routing() {
    let dir = tempfile::tempdir().unwrap();
    // A 6 s lease: the drain margin is 1 s (two 200 ms heartbeats, rounded up to a second).
    let control = control(dir.path(), &["--lease-seconds", "6"]);
    write_packages(dir.path());
    create(&control, dir.path(), "hello", "hello.zip");
    let invoke_args = ["--function-name", "hello"];

    // A lease ending: the worker drains, deregisters and exits 0.
    let mut leased = Worker::start(&control, &dir.path().join("leased"));
    let (_, body) = invoke(&control, dir.path(), &invoke_args);
    assert!(body.contains("Hello"), "{body}");
    let status = leased.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    let none = control.aws(&[
        "invoke",
        "--function-name",
        "hello",
        dir.path().join("x.json").to_str().unwrap(),
    ]);
    assert_eq!(aws_error(&none), "ServiceException");

    // SIGTERM drains too.
    let mut stopped = Worker::start(&control, &dir.path().join("stopped"));
    stopped.terminate();
    let status = stopped.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}");

    // A worker that dies is routed nothing once it has missed its heartbeats.
    let mut killed = Worker::start(&control, &dir.path().join("killed"));
    let (_, body) = invoke(&control, dir.path(), &invoke_args);
    assert!(body.contains("Hello"), "{body}");
    killed.kill();
    std::thread::sleep(Duration::from_millis(1000));
    let started = std::time::Instant::now();
    let gone = control.aws(&[
        "invoke",
        "--function-name",
        "hello",
        dir.path().join("x.json").to_str().unwrap(),
    ]);
    assert_eq!(aws_error(&gone), "ServiceException");
    assert!(started.elapsed() < Duration::from_secs(20));
}
