//! Nothing is lost and nothing damaged is served: restarts, a crash in the middle of an
//! upload, tampered files and master-key rotation, each checked by downloading the code
//! through GetFunction's `Code.Location` (the decrypted module) with the real AWS CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ember_testkit::{aws_env, write_packages, zip, Control};
use sha2::{Digest, Sha256};

const ROLE: &str = "arn:aws:iam::123456789012:role/durability";

/// Creates `name` from `package` (a file in `dir`) and publishes version 1.
fn create(control: &Control, dir: &Path, name: &str, package: &str) {
    let zip = format!("fileb://{}", dir.join(package).display());
    control.aws_json(&[
        "create-function",
        "--function-name",
        name,
        "--runtime",
        "wasm32-wasip1",
        "--role",
        ROLE,
        "--zip-file",
        &zip,
        "--publish",
    ]);
}

/// GetFunction's `Code.Location` for `name`.
fn location(control: &Control, name: &str) -> String {
    let got = control.aws_json(&["get-function", "--function-name", name]);
    got["Code"]["Location"]
        .as_str()
        .expect("GetFunction has Code.Location")
        .to_owned()
}

/// Downloads `url` trusting the service's CA: the status and the body.
fn download(control: &Control, url: &str) -> (u16, Vec<u8>) {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(control.ca()).unwrap()).unwrap();
    let client = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let response = client.get(url).send().expect("download");
    let status = response.status().as_u16();
    (status, response.bytes().unwrap().to_vec())
}

/// The module `name` serves now, or the failed download's status and body.
fn code(control: &Control, name: &str) -> Result<Vec<u8>, (u16, String)> {
    match download(control, &location(control, name)) {
        (200, bytes) => Ok(bytes),
        (status, body) => Err((status, String::from_utf8_lossy(&body).into_owned())),
    }
}

/// The artifact id in a `Code.Location` URL (`…/artifacts/<account>/<id>?grant=…`).
fn artifact_dir_and_id(control: &Control, name: &str) -> (PathBuf, String) {
    let url = location(control, name);
    let path = url.split_once("/artifacts/").unwrap().1;
    let (account, rest) = path.split_once('/').unwrap();
    let id = rest.split_once('?').unwrap().0;
    (
        control.data_dir.join("artifacts").join(account),
        id.to_owned(),
    )
}

/// Flips one bit of `path` at `offset` (from the end when negative).
fn flip(path: &Path, offset: i64) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = if offset < 0 {
        bytes.len() - offset.unsigned_abs() as usize
    } else {
        offset as usize
    };
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn blob_of(dir: &Path, id: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with(&format!("{id}.")) && name.ends_with(".blob")
        })
        .expect("the artifact's blob")
}

fn ember_control(data: &Path, args: &[&str]) -> String {
    let out = Command::new(ember_testkit::binaries::binary(
        "ember-control",
        "ember-control",
    ))
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

#[test]
fn a_restart_keeps_every_function_and_its_code_decrypts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_packages(dir.path());
    let control = Control::start(&data);
    create(&control, dir.path(), "hello", "hello.zip");
    create(&control, dir.path(), "counter", "counter.zip");
    control.aws_json(&[
        "create-alias",
        "--function-name",
        "hello",
        "--name",
        "live",
        "--function-version",
        "1",
    ]);
    // A crash, not a clean stop.
    control.kill();

    let control = Control::start(&data);
    let listed = control.aws_json(&["list-functions"]);
    assert_eq!(listed["Functions"].as_array().unwrap().len(), 2);
    let alias = control.aws_json(&["get-alias", "--function-name", "hello", "--name", "live"]);
    assert_eq!(alias["FunctionVersion"], "1");
    assert_eq!(code(&control, "hello").unwrap(), ember_examples::HELLO);
    assert_eq!(code(&control, "counter").unwrap(), ember_examples::COUNTER);
}

#[test]
fn a_crash_during_an_upload_never_serves_half_an_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_packages(dir.path());
    // Large enough that the upload takes a while: the module plus incompressible padding.
    let padding: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(
        dir.path().join("big.zip"),
        zip(&[
            ("counter.wasm", ember_examples::COUNTER),
            ("padding.bin", &padding),
        ]),
    )
    .unwrap();
    let mut control = Control::start(&data);
    create(&control, dir.path(), "f", "hello.zip");

    for delay_ms in [50, 300, 800, 1500, 3000] {
        let mut upload = ember_testkit::aws_cli();
        upload
            .args(["--profile", "ember", "--region", "local"])
            .args(["--endpoint-url", &control.endpoint])
            .args(["lambda", "update-function-code", "--function-name", "f"])
            .arg(format!(
                "--zip-file=fileb://{}",
                dir.path().join("big.zip").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        aws_env(&mut upload, &control.credentials(), &control.ca());
        let mut upload = upload.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        control.kill();
        let _ = upload.wait();

        control = Control::start(&data);
        let served = code(&control, "f").unwrap_or_else(|e| panic!("after {delay_ms} ms: {e:?}"));
        assert!(
            served == ember_examples::HELLO || served == ember_examples::COUNTER,
            "after a crash {delay_ms} ms into an upload, f serves something else"
        );
        let config = control.aws_json(&["get-function", "--function-name", "f"]);
        let expected_size = if served == ember_examples::HELLO {
            std::fs::metadata(dir.path().join("hello.zip"))
                .unwrap()
                .len()
        } else {
            std::fs::metadata(dir.path().join("big.zip")).unwrap().len()
        };
        assert_eq!(config["Configuration"]["CodeSize"], expected_size);
        // Version 1 is untouched whatever happened to $LATEST.
        let v1 = control.aws_json(&["get-function", "--function-name", "f", "--qualifier", "1"]);
        let (status, bytes) = download(&control, v1["Code"]["Location"].as_str().unwrap());
        assert_eq!((status, bytes.as_slice()), (200, ember_examples::HELLO));
    }
}

#[test]
fn a_tampered_blob_or_wrapped_key_is_refused_and_nothing_else_is_affected() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_packages(dir.path());
    let control = Control::start(&data);
    create(&control, dir.path(), "victim", "hello.zip");
    create(&control, dir.path(), "bystander", "counter.zip");
    let (account_dir, id) = artifact_dir_and_id(&control, "victim");

    // One bit of the encrypted code.
    let blob = blob_of(&account_dir, &id);
    flip(&blob, 100);
    let (status, message) = code(&control, "victim").unwrap_err();
    assert_eq!(status, 500);
    assert!(message.contains("tampered"), "{message}");
    assert_eq!(
        code(&control, "bystander").unwrap(),
        ember_examples::COUNTER
    );
    flip(&blob, 100);
    assert_eq!(code(&control, "victim").unwrap(), ember_examples::HELLO);

    // One bit of the wrapped data key (the 48 bytes before the header's trailing 32-byte
    // SHA-256), with the digest recomputed so that only the key's authentication can
    // catch it.
    let header = account_dir.join(format!("{id}.hdr"));
    let mut bytes = std::fs::read(&header).unwrap();
    let body = bytes.len() - 32;
    bytes[body - 10] ^= 0x01;
    let digest = Sha256::digest(&bytes[..body]);
    bytes[body..].copy_from_slice(&digest);
    std::fs::write(&header, bytes).unwrap();
    let (status, message) = code(&control, "victim").unwrap_err();
    assert_eq!(status, 500);
    assert!(message.contains("tampered"), "{message}");
    assert_eq!(
        code(&control, "bystander").unwrap(),
        ember_examples::COUNTER
    );
    // The registry is not the artifact: the function's configuration is still readable.
    let config = control.aws_json(&["get-function-configuration", "--function-name", "victim"]);
    assert_eq!(config["FunctionName"], "victim");
}

/// Whether `secret` appears in any file of the SQLite registry (the database, its WAL).
fn registry_holds(data: &Path, secret: &str) -> bool {
    std::fs::read_dir(data).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        let is_registry = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(ember_store::DB_FILE));
        is_registry
            && std::fs::read(&path)
                .unwrap()
                .windows(secret.len())
                .any(|w| w == secret.as_bytes())
    })
}

#[test]
fn secrets_are_sealed_at_rest_and_survive_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_packages(dir.path());
    let control = Control::start(&data);
    create(&control, dir.path(), "a", "hello.zip");
    let variable = "Pa55word-of-function-a";
    control.aws_json(&[
        "update-function-configuration",
        "--function-name",
        "a",
        "--environment",
        &format!("Variables={{DB_PASSWORD={variable}}}"),
    ]);
    let credentials = std::fs::read_to_string(control.credentials()).unwrap();
    let secret = credentials
        .lines()
        .find_map(|l| l.strip_prefix("aws_secret_access_key = "))
        .expect("a secret in the credentials file")
        .to_owned();
    for (what, value) in [
        ("access key secret", secret.as_str()),
        ("variable", variable),
    ] {
        assert!(
            !registry_holds(&data, value),
            "the {what} is in the database in the clear"
        );
    }

    let rotated = ember_control(&data, &["keys", "rotate"]);
    // The admin's key, and the variables of $LATEST and of version 1.
    assert!(
        rotated.contains("re-sealed 3 database secret(s)"),
        "{rotated}"
    );
    // Signed with the re-sealed secret, read the re-sealed variables.
    let config = control.aws_json(&["get-function-configuration", "--function-name", "a"]);
    assert_eq!(config["Environment"]["Variables"]["DB_PASSWORD"], variable);
    assert!(!registry_holds(&data, variable));
}

#[test]
fn rotating_and_retiring_master_keys_keeps_every_function_readable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_packages(dir.path());
    let control = Control::start(&data);
    create(&control, dir.path(), "a", "hello.zip");
    create(&control, dir.path(), "b", "counter.zip");
    let (account_dir, id) = artifact_dir_and_id(&control, "a");
    let blob_before = std::fs::read(blob_of(&account_dir, &id)).unwrap();
    let old_keys = ember_control(&data, &["keys", "list"]);

    // While the service runs.
    let rotated = ember_control(&data, &["keys", "rotate"]);
    assert!(rotated.contains("re-wrapped"), "{rotated}");
    let old_id = old_keys
        .split_whitespace()
        .find(|word| word.starts_with("mk-"))
        .expect("a key id in `keys list`")
        .to_owned();
    ember_control(&data, &["keys", "retire", &old_id]);
    let listed = ember_control(&data, &["keys", "list"]);
    assert!(!listed.contains(&old_id), "{listed}");

    assert_eq!(code(&control, "a").unwrap(), ember_examples::HELLO);
    assert_eq!(code(&control, "b").unwrap(), ember_examples::COUNTER);
    // Rotation re-wraps keys; the encrypted code is not rewritten.
    assert_eq!(
        std::fs::read(blob_of(&account_dir, &id)).unwrap(),
        blob_before
    );
    // A function created after the rotation, and everything after a restart.
    create(&control, dir.path(), "c", "echo.zip");
    control.kill();
    let control = Control::start(&data);
    assert_eq!(code(&control, "a").unwrap(), ember_examples::HELLO);
    assert_eq!(code(&control, "c").unwrap(), ember_examples::ECHO);
}
