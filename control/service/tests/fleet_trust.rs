//! Who the fleet trusts, against the real `ember-control` over real TLS (no worker VMs):
//! a registered worker's certificate is no server certificate for API clients, and what a
//! stranger or a rogue worker claims at registration is bounded by its join token.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ember_fleet::messages::{Capacity, RegisterRequest, RegisterResponse};
use ember_fleet::messages::{HeartbeatRequest, HeartbeatResponse};
use ember_testkit::{binaries, write_packages, Control};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A blocking HTTPS client for the fleet listener (trusting `DIR/ca.pem`, which workers
/// are given as `--ca`), with a worker's `identity` if given.
fn fleet_client(
    control: &Control,
    identity: Option<&ember_fleet::tls::Identity<'_>>,
) -> reqwest::blocking::Client {
    let ca_pem = std::fs::read_to_string(control.ca()).unwrap();
    let config = ember_fleet::tls::client_config(&ca_pem, identity).unwrap();
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(Arc::unwrap_or_clone(config))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Registers a made-up worker reachable at `address` with `capacity`: its key (PEM) and
/// control's answer.
fn register(
    control: &Control,
    token: &str,
    address: &str,
    capacity: Capacity,
) -> (String, reqwest::blocking::Response) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let request = RegisterRequest {
        token: token.to_owned(),
        name: "impostor".into(),
        csr_pem: csr,
        address: address.to_owned(),
        capacity,
    };
    let response = fleet_client(control, None)
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

fn small() -> Capacity {
    Capacity {
        vcpus: 1,
        memory_mib: 64,
        max_environments: 1,
    }
}

fn bootstrap_token(data: &Path) -> String {
    std::fs::read_to_string(data.join("worker-token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Serves one TLS connection on `listener` with `certificate_pem`/`key_pem` (no client
/// certificate asked), answering any request with 200.
fn serve_once(listener: TcpListener, certificate_pem: String, key_pem: String) {
    let chain = CertificateDer::pem_slice_iter(certificate_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    std::thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        let connection = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, socket);
        let mut buf = [0; 4096];
        if tls.read(&mut buf).is_ok() {
            let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            let _ = tls.flush();
        }
    });
}

#[test]
fn a_worker_certificate_is_no_api_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let control = Control::start(&data);

    // A holder of a join token registers as if it served the API's own address...
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (key_pem, answer) = register(&control, &bootstrap_token(&data), &address, small());
    assert_eq!(answer.status(), 200);
    let answer: RegisterResponse = answer.json().unwrap();
    serve_once(listener, answer.certificate_pem.clone(), key_pem);

    // ...and an API client trusting the bundle users get (AWS_CA_BUNDLE) refuses it.
    let bundle = std::fs::read(control.ca()).unwrap();
    let api_client = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&bundle).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let impersonated = api_client.get(format!("https://{address}/")).send();
    assert!(
        impersonated.is_err(),
        "an API client took a worker for the control API: {impersonated:?}"
    );

    // The API bundle holds one CA, and it is not the one that signs workers.
    let in_bundle = CertificateDer::pem_slice_iter(&bundle)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(in_bundle.len(), 1, "the API bundle holds only the API CA");
    let (_, api_ca) = x509_parser::parse_x509_certificate(&in_bundle[0]).unwrap();
    let worker = CertificateDer::from_pem_slice(answer.certificate_pem.as_bytes()).unwrap();
    let (_, worker) = x509_parser::parse_x509_certificate(&worker).unwrap();
    assert!(worker.verify_signature(Some(api_ca.public_key())).is_err());
    // The fleet CA the worker is handed signs it, and names it by its id only.
    let fleet_ca = CertificateDer::from_pem_slice(answer.ca_pem.as_bytes()).unwrap();
    let (_, fleet_ca) = x509_parser::parse_x509_certificate(&fleet_ca).unwrap();
    worker
        .verify_signature(Some(fleet_ca.public_key()))
        .unwrap();
    assert_ne!(fleet_ca.public_key().raw, api_ca.public_key().raw);
    let names: Vec<String> = worker
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        names,
        [format!(
            "DNSName({})",
            ember_fleet::tls::worker_name(&answer.worker_id)
        )]
    );
}

/// A made-up worker registered with control: it heartbeats and fetches code with its
/// certificate, as emberd would.
struct FakeWorker {
    id: String,
    client: reqwest::blocking::Client,
    fleet: String,
}

impl FakeWorker {
    fn join(control: &Control, token: &str, capacity: Capacity) -> FakeWorker {
        let (key_pem, answer) = register(control, token, "127.0.0.1:1", capacity);
        assert_eq!(answer.status(), 200);
        let answer: RegisterResponse = answer.json().unwrap();
        let identity = ember_fleet::tls::Identity {
            certificate_pem: &answer.certificate_pem,
            key_pem: &key_pem,
        };
        FakeWorker {
            id: answer.worker_id,
            client: fleet_client(control, Some(&identity)),
            fleet: control.fleet_endpoint.clone(),
        }
    }

    fn heartbeat(&self) -> reqwest::blocking::Response {
        self.client
            .post(format!("{}{}", self.fleet, ember_fleet::HEARTBEAT))
            .json(&HeartbeatRequest::default())
            .send()
            .unwrap()
    }

    fn fetch(&self, account: &str, artifact: &str, grant: &str) -> reqwest::StatusCode {
        self.client
            .get(format!(
                "{}{}/{account}/{artifact}",
                self.fleet,
                ember_fleet::ARTIFACTS
            ))
            .header(ember_fleet::GRANT_HEADER, grant)
            .send()
            .unwrap()
            .status()
    }
}

/// `ember-control ARGS… --data-dir DATA`: its stdout, or the panic with its stderr.
fn ember_control(data: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(binaries::binary("ember-control", "ember-control"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ember-control {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn capacity(vcpus: u32) -> Capacity {
    Capacity { vcpus, ..small() }
}

#[test]
fn join_tokens_bound_who_joins_and_what_they_claim() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let control = Control::start_with(&data, &["--heartbeat-ms", "200"]);
    let bootstrap = bootstrap_token(&data);

    // A claim of 4,294,967,295 vCPUs is refused, even with the operator's bootstrap token.
    let (_, boast) = register(&control, &bootstrap, "127.0.0.1:1", capacity(u32::MAX));
    assert_eq!(boast.status(), 400);
    let body = boast.text().unwrap();
    assert!(body.contains("4294967295 vCPUs (at most 256)"), "{body}");

    // A token for one worker of at most 4 vCPUs.
    let token = ember_control(
        &data,
        &[
            "worker",
            "token",
            "create",
            "--uses",
            "1",
            "--max-vcpus",
            "4",
        ],
    );
    let token = token.trim();
    let (_, over) = register(&control, token, "127.0.0.1:1", capacity(5));
    assert_eq!(over.status(), 400, "over the token's ceiling");
    let worker = FakeWorker::join(&control, token, capacity(4));
    let (_, again) = register(&control, token, "127.0.0.1:1", capacity(1));
    assert_eq!(again.status(), 403, "the token's one use is spent");
    assert!(again.text().unwrap().contains("used up"));
    let token_id = token.split_once('.').unwrap().0;
    let listed = ember_control(&data, &["worker", "token", "list"]);
    assert!(listed.contains(&format!("{token_id}\t1/1\t")), "{listed}");
    assert!(
        !listed.contains(token.split_once('.').unwrap().1),
        "no secrets"
    );
    let workers = ember_control(&data, &["worker", "list"]);
    let row = workers
        .lines()
        .find(|line| line.starts_with(&worker.id))
        .unwrap_or_else(|| panic!("{workers}"));
    assert!(
        row.contains("\tactive\t4\t") && row.contains(token_id),
        "{row}"
    );

    // Revoked, the worker is refused from its next heartbeat interval on, for good.
    assert_eq!(worker.heartbeat().status(), 200);
    ember_control(&data, &["worker", "revoke", &worker.id]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while worker.heartbeat().status() != 403 {
        assert!(std::time::Instant::now() < deadline, "still heartbeating");
        std::thread::sleep(Duration::from_millis(100));
    }
    let workers = ember_control(&data, &["worker", "list"]);
    assert!(workers.contains("\trevoked\t"), "{workers}");

    // A revoked join token admits no one; the bootstrap token is one too.
    let bootstrap_worker = FakeWorker::join(&control, &bootstrap, small());
    assert_eq!(bootstrap_worker.heartbeat().status(), 200);
    ember_control(&data, &["worker", "revoke", "bootstrap"]);
    let (_, refused) = register(&control, &bootstrap, "127.0.0.1:1", small());
    assert_eq!(refused.status(), 403);
    assert!(refused.text().unwrap().contains("revoked"));
}

#[test]
fn a_code_grant_works_only_for_the_worker_it_was_issued_to() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let control = Control::start_with(&data, &["--heartbeat-ms", "200"]);
    write_packages(dir.path());
    control.create_function("hello", &dir.path().join("hello.zip"), &[]);
    control.aws_json(&["publish-version", "--function-name", "hello"]);
    let bootstrap = bootstrap_token(&data);
    let room = Capacity {
        vcpus: 1,
        memory_mib: 1024,
        max_environments: 4,
    };
    let workers = [
        FakeWorker::join(&control, &bootstrap, room.clone()),
        FakeWorker::join(&control, &bootstrap, room),
    ];
    control.aws_json(&[
        "put-provisioned-concurrency-config",
        "--function-name",
        "hello",
        "--qualifier",
        "1",
        "--provisioned-concurrent-executions",
        "1",
    ]);

    // One of the two is told to keep the version, with a grant for its code.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (holder, code) = loop {
        assert!(std::time::Instant::now() < deadline, "nothing was placed");
        let placed = workers.iter().find_map(|worker| {
            let answer: HeartbeatResponse = worker.heartbeat().json().unwrap();
            let share = answer.provisioned.into_iter().next()?;
            Some((worker, share.function.code))
        });
        if let Some(placed) = placed {
            break placed;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let thief = workers.iter().find(|w| w.id != holder.id).unwrap();
    let (account, artifact) = (&code.account, &code.artifact_id);
    assert_eq!(thief.fetch(account, artifact, &code.grant), 403);
    assert_eq!(holder.fetch(account, artifact, &code.grant), 200);
    // Nor does it work on the public API's download URL.
    let api = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(control.ca()).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let url = format!(
        "{}/artifacts/{account}/{artifact}?grant={}",
        control.endpoint, code.grant
    );
    assert_eq!(api.get(url).send().unwrap().status(), 403);
}

#[tokio::test]
async fn join_tokens_and_revocations_hold_on_postgres() {
    use ember_control::fleet::join::{self, Limits, Refused};
    use ember_store::join_tokens;
    use ember_store::workers::{self, WorkerRow, WorkerState};

    let postgres = ember_testkit::postgres::Postgres::shared();
    let registry = ember_store::Registry::open(&postgres.database("join_tokens"))
        .await
        .unwrap();
    let pool = registry.pool();
    let limits = Limits {
        description: "rack 4".into(),
        lifetime: Some(Duration::from_secs(60)),
        max_uses: Some(1),
        ceiling: capacity(4),
    };
    let created = join::create(pool, limits, 100).await.unwrap();
    let id = &created.stored.id;
    assert!(matches!(
        join::admit(pool, &created.token, &capacity(5), 100).await,
        Err(Refused::OverCeiling(_))
    ));
    assert_eq!(
        join::admit(pool, &created.token, &capacity(4), 100)
            .await
            .unwrap(),
        *id
    );
    assert!(matches!(
        join::admit(pool, &created.token, &capacity(1), 100).await,
        Err(Refused::Unusable { .. })
    ));
    let never = Limits {
        description: String::new(),
        lifetime: None,
        max_uses: None,
        ceiling: capacity(4),
    };
    let open = join::create(pool, never, 100).await.unwrap();
    assert!(join::admit(pool, &open.token, &capacity(1), u64::MAX / 2)
        .await
        .is_ok());
    assert!(join_tokens::revoke(pool, &open.stored.id, 101)
        .await
        .unwrap());
    let listed = join_tokens::list(pool).await.unwrap();
    assert_eq!(listed.len(), 2);
    let revoked = listed.iter().find(|t| t.id == open.stored.id).unwrap();
    assert_eq!(revoked.revoked_at, Some(101));

    let row = WorkerRow {
        id: "w-0123456789abcdef".into(),
        name: "host".into(),
        address: "10.0.0.1:9445".into(),
        capacity: capacity(4),
        registered_at: 100,
        last_heartbeat: 100,
        lease_expires_at: 50_500,
        state: WorkerState::Active,
        token_id: id.clone(),
    };
    workers::insert(pool, &row).await.unwrap();
    assert!(workers::set_state(pool, &row.id, WorkerState::Revoked)
        .await
        .unwrap());
    workers::update(pool, &row.id, 150, WorkerState::Active)
        .await
        .unwrap();
    assert_eq!(workers::revoked(pool).await.unwrap(), [row.id.as_str()]);
    assert!(workers::current(pool).await.unwrap().is_empty());
    assert_eq!(workers::all(pool).await.unwrap()[0].token_id, *id);
}
