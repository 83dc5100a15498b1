//! The functions and versions API, driven in-process through the router with requests as
//! the auth layer leaves them (a `Principal` in their extensions).

use std::io::{Cursor, Write};
use std::ops::Deref;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ember_control::api;
use ember_control::service::Settings;
use ember_core::artifacts::ArtifactError;
use ember_core::package::Limits;
use ember_testkit::api::{InProcess, Reply};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

const A: &str = "111111111111";
const B: &str = "222222222222";

/// A service on a temporary data directory with accounts A and B.
struct Harness(InProcess);

impl Deref for Harness {
    type Target = InProcess;

    fn deref(&self) -> &InProcess {
        &self.0
    }
}

impl Harness {
    async fn new() -> Harness {
        Harness::with(Settings::default()).await
    }

    async fn with(settings: Settings) -> Harness {
        Harness(InProcess::open(settings, &[(A, "alice"), (B, "bob")]).await)
    }

    async fn get(&self, account: &str, uri: &str) -> Reply {
        self.call(account, "GET", uri, Value::Null).await
    }

    /// Creates `name` in account A from `zip`, with `extra` members merged in.
    async fn create(&self, name: &str, zip: &[u8], extra: Value) -> Reply {
        self.create_in(A, name, zip, extra).await
    }

    async fn create_in(&self, account: &str, name: &str, zip: &[u8], extra: Value) -> Reply {
        let mut body = json!({
            "FunctionName": name,
            "Runtime": "wasm32-wasip1",
            "Role": role(account),
            "Code": {"ZipFile": STANDARD.encode(zip)},
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        self.call(account, "POST", "/2015-03-31/functions", body)
            .await
    }

    /// Account `account`'s stored artifact ids.
    fn artifacts(&self, account: &str) -> Vec<String> {
        self.service
            .artifacts
            .list()
            .unwrap()
            .into_iter()
            .filter(|(a, _)| a == account)
            .map(|(_, id)| id)
            .collect()
    }
}

fn role(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/runner")
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for (name, contents) in entries {
        writer.start_file(*name, options).unwrap();
        writer.write_all(contents).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn hello() -> Vec<u8> {
    zip_of(&[("hello.wasm", ember_examples::HELLO)])
}

fn echo() -> Vec<u8> {
    zip_of(&[("echo.wasm", ember_examples::ECHO_REACTOR)])
}

fn sha(zip: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(zip))
}

fn arn(account: &str, name: &str) -> String {
    format!("arn:aws:lambda:local:{account}:function:{name}")
}

const FUNCTIONS: &str = "/2015-03-31/functions";

#[tokio::test]
async fn lifecycle() {
    let h = Harness::new().await;
    let zip = hello();
    let created = h
        .create(
            "hello",
            &zip,
            json!({"Environment": {"Variables": {"GREETING": "hi"}}, "Description": "greets"}),
        )
        .await
        .expect(201);
    assert_eq!(created["FunctionName"], "hello");
    assert_eq!(created["FunctionArn"], arn(A, "hello"));
    assert_eq!(created["Runtime"], "wasm32-wasip1");
    assert_eq!(created["Role"], role(A));
    assert_eq!(created["Handler"], "handle");
    assert_eq!(created["CodeSize"], zip.len());
    assert_eq!(created["CodeSha256"], sha(&zip));
    assert_eq!(created["Description"], "greets");
    assert_eq!(created["Timeout"], 3);
    assert_eq!(created["MemorySize"], 128);
    assert_eq!(created["Version"], "$LATEST");
    assert_eq!(
        created["Environment"]["Variables"],
        json!({"GREETING": "hi"})
    );
    assert_eq!(created["State"], "Active");
    assert_eq!(created["LastUpdateStatus"], "Successful");
    assert_eq!(created["PackageType"], "Zip");
    assert_eq!(created["Architectures"], json!(["x86_64"]));
    let modified = created["LastModified"].as_str().unwrap();
    assert!(
        modified.ends_with("+0000") && modified.len() == 28,
        "{modified}"
    );
    assert_eq!(created["RevisionId"].as_str().unwrap().len(), 36);
    assert_eq!(h.artifacts(A).len(), 1);

    let got = h.get(A, "/2015-03-31/functions/hello").await.expect(200);
    assert_eq!(got["Configuration"], created);
    assert_eq!(got["Code"]["RepositoryType"], "S3");
    assert!(got.get("Concurrency").is_none());
    let config = h
        .get(A, "/2015-03-31/functions/hello/configuration")
        .await
        .expect(200);
    assert_eq!(config, created);
    let list = h.get(A, "/2015-03-31/functions/").await.expect(200);
    assert_eq!(list["Functions"], json!([created]));
    assert!(list.get("NextMarker").is_none());

    let new_zip = echo();
    let updated = h
        .call(
            A,
            "PUT",
            "/2015-03-31/functions/hello/code",
            json!({"ZipFile": STANDARD.encode(&new_zip)}),
        )
        .await
        .expect(200);
    assert_eq!(updated["CodeSha256"], sha(&new_zip));
    assert_eq!(updated["Version"], "$LATEST");
    assert_eq!(updated["FunctionArn"], arn(A, "hello"));
    assert_ne!(updated["RevisionId"], created["RevisionId"]);
    // The replaced code was referenced by nothing else.
    assert_eq!(h.artifacts(A).len(), 1);

    let reconfigured = h
        .call(
            A,
            "PUT",
            "/2015-03-31/functions/hello/configuration",
            json!({"Timeout": 10, "MemorySize": 256, "Description": "echoes",
                   "Environment": {"Variables": {}}}),
        )
        .await
        .expect(200);
    assert_eq!(reconfigured["Timeout"], 10);
    assert_eq!(reconfigured["MemorySize"], 256);
    assert_eq!(reconfigured["Description"], "echoes");
    assert!(reconfigured.get("Environment").is_none());
    assert_eq!(reconfigured["CodeSha256"], sha(&new_zip));
    assert_ne!(reconfigured["RevisionId"], updated["RevisionId"]);

    let published = h
        .call(A, "POST", "/2015-03-31/functions/hello/versions", json!({}))
        .await
        .expect(201);
    assert_eq!(published["Version"], "1");
    assert_eq!(published["FunctionArn"], format!("{}:1", arn(A, "hello")));
    assert_eq!(published["CodeSha256"], sha(&new_zip));
    assert_eq!(published["Timeout"], 10);
    assert_eq!(published["Description"], "echoes");

    let versions = h
        .get(A, "/2015-03-31/functions/hello/versions")
        .await
        .expect(200);
    let listed: Vec<(&str, &str)> = versions["Versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["Version"].as_str().unwrap(),
                v["FunctionArn"].as_str().unwrap(),
            )
        })
        .collect();
    let latest_arn = format!("{}:$LATEST", arn(A, "hello"));
    let v1_arn = format!("{}:1", arn(A, "hello"));
    assert_eq!(
        listed,
        [("$LATEST", latest_arn.as_str()), ("1", v1_arn.as_str())]
    );

    // The same version through every way of naming it.
    for uri in [
        "/2015-03-31/functions/hello?Qualifier=1".to_owned(),
        "/2015-03-31/functions/hello:1".to_owned(),
        format!("/2015-03-31/functions/{}:1", arn(A, "hello")),
        format!("/2015-03-31/functions/{A}:function:hello?Qualifier=1"),
    ] {
        let got = h.get(A, &uri).await.expect(200);
        assert_eq!(got["Configuration"], published, "{uri}");
    }
    let latest = h
        .get(
            A,
            "/2015-03-31/functions/hello/configuration?Qualifier=%24LATEST",
        )
        .await
        .expect(200);
    assert_eq!(latest["FunctionArn"], latest_arn);
    assert_eq!(latest["Version"], "$LATEST");

    h.call(
        A,
        "DELETE",
        "/2015-03-31/functions/hello?Qualifier=1",
        Value::Null,
    )
    .await
    .expect(204);
    h.get(A, "/2015-03-31/functions/hello?Qualifier=1")
        .await
        .expect_error(404, "ResourceNotFoundException");
    // Version 1 shared $LATEST's code, which stays.
    assert_eq!(h.artifacts(A).len(), 1);

    h.call(A, "DELETE", "/2015-03-31/functions/hello", Value::Null)
        .await
        .expect(204);
    let message = h
        .get(A, "/2015-03-31/functions/hello")
        .await
        .expect_error(404, "ResourceNotFoundException");
    assert_eq!(message, format!("Function not found: {}", arn(A, "hello")));
    assert!(h.artifacts(A).is_empty());
    let list = h.get(A, FUNCTIONS).await.expect(200);
    assert_eq!(list["Functions"], json!([]));
}

#[tokio::test]
async fn deleting_a_function_removes_all_its_code_and_settings() {
    let h = Harness::new().await;
    h.create("f", &hello(), json!({"Publish": true}))
        .await
        .expect(201);
    h.call(
        A,
        "PUT",
        "/2015-03-31/functions/f/code",
        json!({"ZipFile": STANDARD.encode(echo()), "Publish": true}),
    )
    .await
    .expect(200);
    h.create("other", &hello(), json!({})).await.expect(201);
    assert_eq!(h.artifacts(A).len(), 3);
    let pool = h.service.registry.pool();
    sqlx::query(
        "INSERT INTO aliases (account_id, function_name, name, function_version, description, \
         routing, revision_id) VALUES ($1, 'f', 'live', '1', '', '{}', 'r')",
    )
    .bind(A)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO provisioned_concurrency (account_id, function_name, qualifier, requested, \
         last_modified) VALUES ($1, 'f', '2', 1, 'now')",
    )
    .bind(A)
    .execute(pool)
    .await
    .unwrap();

    h.call(A, "DELETE", "/2015-03-31/functions/f", Value::Null)
        .await
        .expect(204);
    assert_eq!(h.artifacts(A).len(), 1, "only `other`'s code is left");
    for table in ["versions", "aliases", "provisioned_concurrency"] {
        let (count,): (i64,) = sqlx::query_as(&format!(
            "SELECT COUNT(*) FROM {table} WHERE function_name = 'f'"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(count, 0, "{table}");
    }
    // The name is free again, and numbering starts over with the new function.
    let created = h
        .create("f", &hello(), json!({"Publish": true}))
        .await
        .expect(201);
    assert_eq!(created["Version"], "1");
}

#[tokio::test]
async fn lists_page_through_every_function_once() {
    let h = Harness::new().await;
    let zip = hello();
    let mut names: Vec<String> = (0..7).map(|i| format!("fn-{}", 6 - i)).collect();
    for name in &names {
        h.create(name, &zip, json!({})).await.expect(201);
    }
    names.sort();
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let uri = match &marker {
            Some(m) => format!("{FUNCTIONS}/?MaxItems=3&Marker={m}"),
            None => format!("{FUNCTIONS}/?MaxItems=3"),
        };
        let page = h.get(A, &uri).await.expect(200);
        let functions = page["Functions"].as_array().unwrap();
        pages.push(functions.len());
        for f in functions {
            assert_eq!(f["Version"], "$LATEST");
            assert_eq!(
                f["FunctionArn"],
                arn(A, f["FunctionName"].as_str().unwrap())
            );
            seen.push(f["FunctionName"].as_str().unwrap().to_owned());
        }
        match page.get("NextMarker") {
            Some(next) => marker = Some(next.as_str().unwrap().to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, [3, 3, 1]);
    assert_eq!(seen, names);

    // Every version, across pages of two.
    for timeout in [10, 11] {
        h.call(
            A,
            "PUT",
            "/2015-03-31/functions/fn-3/configuration",
            json!({"Timeout": timeout}),
        )
        .await
        .expect(200);
        h.call(A, "POST", "/2015-03-31/functions/fn-3/versions", json!({}))
            .await
            .expect(201);
    }
    let mut all = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let uri = match &marker {
            Some(m) => format!("{FUNCTIONS}?FunctionVersion=ALL&MaxItems=2&Marker={m}"),
            None => format!("{FUNCTIONS}?FunctionVersion=ALL&MaxItems=2"),
        };
        let page = h.get(A, &uri).await.expect(200);
        for f in page["Functions"].as_array().unwrap() {
            let name = f["FunctionName"].as_str().unwrap();
            let version = f["Version"].as_str().unwrap();
            assert_eq!(f["FunctionArn"], format!("{}:{version}", arn(A, name)));
            all.push(format!("{name}:{version}"));
        }
        match page.get("NextMarker") {
            Some(next) => marker = Some(next.as_str().unwrap().to_owned()),
            None => break,
        }
    }
    let mut expected: Vec<String> = names.iter().map(|n| format!("{n}:$LATEST")).collect();
    expected.extend(["fn-3:1".to_owned(), "fn-3:2".to_owned()]);
    expected.sort_by_key(|v| v.split_once(':').unwrap().0.to_owned());
    assert_eq!(all, expected);

    let versions = h
        .get(A, "/2015-03-31/functions/fn-3/versions?MaxItems=1")
        .await
        .expect(200);
    assert_eq!(versions["Versions"][0]["Version"], "$LATEST");
    let next = versions["NextMarker"].as_str().unwrap();
    let versions = h
        .get(
            A,
            &format!("/2015-03-31/functions/fn-3/versions?MaxItems=5&Marker={next}"),
        )
        .await
        .expect(200);
    let numbers: Vec<&str> = versions["Versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Version"].as_str().unwrap())
        .collect();
    assert_eq!(numbers, ["1", "2"]);
    assert!(versions.get("NextMarker").is_none());

    for bad in [
        format!("{FUNCTIONS}?Marker=garbage"),
        format!("{FUNCTIONS}?MaxItems=0"),
        format!("{FUNCTIONS}?MaxItems=10001"),
        format!("{FUNCTIONS}?FunctionVersion=SOME"),
        format!("/2015-03-31/functions/fn-3/versions?Marker={next}x"),
    ] {
        h.get(A, &bad)
            .await
            .expect_error(400, "InvalidParameterValueException");
    }
}

#[tokio::test]
async fn stale_revision_ids_are_refused() {
    let h = Harness::new().await;
    let created = h.create("f", &hello(), json!({})).await.expect(201);
    let first = created["RevisionId"].as_str().unwrap().to_owned();
    let updated = h
        .call(
            A,
            "PUT",
            "/2015-03-31/functions/f/configuration",
            json!({"Timeout": 5, "RevisionId": first}),
        )
        .await
        .expect(200);
    let second = updated["RevisionId"].as_str().unwrap().to_owned();
    assert_ne!(first, second);

    let stale = [
        (
            "PUT",
            "/2015-03-31/functions/f/configuration",
            json!({"Timeout": 6, "RevisionId": first}),
        ),
        (
            "PUT",
            "/2015-03-31/functions/f/code",
            json!({"ZipFile": STANDARD.encode(echo()), "RevisionId": first}),
        ),
        (
            "POST",
            "/2015-03-31/functions/f/versions",
            json!({"RevisionId": first}),
        ),
    ];
    for (method, uri, body) in stale {
        h.call(A, method, uri, body)
            .await
            .expect_error(412, "PreconditionFailedException");
    }
    // Nothing changed.
    let now = h
        .get(A, "/2015-03-31/functions/f/configuration")
        .await
        .expect(200);
    assert_eq!(now, updated);
    assert_eq!(h.artifacts(A).len(), 1);

    h.call(
        A,
        "POST",
        "/2015-03-31/functions/f/versions",
        json!({"CodeSha256": sha(&echo())}),
    )
    .await
    .expect_error(412, "PreconditionFailedException");
    let published = h
        .call(
            A,
            "POST",
            "/2015-03-31/functions/f/versions",
            json!({"RevisionId": second, "CodeSha256": sha(&hello())}),
        )
        .await
        .expect(201);
    assert_eq!(published["Version"], "1");
}

#[tokio::test]
async fn publishing_without_a_change_returns_the_newest_version() {
    let h = Harness::new().await;
    h.create("f", &hello(), json!({})).await.expect(201);
    let publish = || h.call(A, "POST", "/2015-03-31/functions/f/versions", json!({}));
    let first = publish().await.expect(201);
    assert_eq!(first["Version"], "1");
    let again = publish().await.expect(201);
    assert_eq!(again, first);
    // A description labels the version; it is no change.
    let labelled = h
        .call(
            A,
            "POST",
            "/2015-03-31/functions/f/versions",
            json!({"Description": "same"}),
        )
        .await
        .expect(201);
    assert_eq!(labelled["Version"], "1");

    h.call(
        A,
        "PUT",
        "/2015-03-31/functions/f/configuration",
        json!({"MemorySize": 512}),
    )
    .await
    .expect(200);
    let second = h
        .call(
            A,
            "POST",
            "/2015-03-31/functions/f/versions",
            json!({"Description": "bigger"}),
        )
        .await
        .expect(201);
    assert_eq!(second["Version"], "2");
    assert_eq!(second["Description"], "bigger");
    assert_eq!(second["MemorySize"], 512);

    // Numbers are never reused, even after the newest version is deleted.
    h.call(
        A,
        "DELETE",
        "/2015-03-31/functions/f?Qualifier=2",
        Value::Null,
    )
    .await
    .expect(204);
    let third = publish().await.expect(201);
    assert_eq!(third["Version"], "3");
    assert_eq!(third["MemorySize"], 512);
}

#[tokio::test]
async fn published_versions_are_immutable() {
    let h = Harness::new().await;
    let zip = hello();
    let v1 = h
        .create("f", &zip, json!({"Publish": true, "Timeout": 7}))
        .await
        .expect(201);
    assert_eq!(v1["Version"], "1");
    assert_eq!(v1["FunctionArn"], format!("{}:1", arn(A, "f")));

    h.call(
        A,
        "PUT",
        "/2015-03-31/functions/f/code",
        json!({"ZipFile": STANDARD.encode(echo())}),
    )
    .await
    .expect(200);
    h.call(
        A,
        "PUT",
        "/2015-03-31/functions/f/configuration",
        json!({"Timeout": 30, "Environment": {"Variables": {"MODE": "new"}}}),
    )
    .await
    .expect(200);
    let still = h
        .get(A, "/2015-03-31/functions/f/configuration?Qualifier=1")
        .await
        .expect(200);
    assert_eq!(still, v1);
    assert_eq!(still["CodeSha256"], sha(&zip));
    assert_eq!(h.artifacts(A).len(), 2, "version 1 keeps its code");

    // Only $LATEST can be changed.
    h.call(
        A,
        "PUT",
        "/2015-03-31/functions/f:1/configuration",
        json!({"Timeout": 1}),
    )
    .await
    .expect_error(400, "InvalidParameterValueException");

    let v2 = h
        .call(
            A,
            "PUT",
            "/2015-03-31/functions/f/code",
            json!({"ZipFile": STANDARD.encode(zip_of(&[("x.wasm", ember_examples::COUNTER)])),
                   "Publish": true}),
        )
        .await
        .expect(200);
    assert_eq!(v2["Version"], "2");
    assert_eq!(v2["Timeout"], 30);
    assert_eq!(v2["Environment"]["Variables"]["MODE"], "new");
    // Version 1's code, version 2's ($LATEST's); the one uploaded in between is gone.
    assert_eq!(h.artifacts(A).len(), 2);

    // A dry run checks the code and changes nothing.
    let dry = h
        .call(
            A,
            "PUT",
            "/2015-03-31/functions/f/code",
            json!({"ZipFile": STANDARD.encode(&zip), "DryRun": true}),
        )
        .await
        .expect(200);
    assert_eq!(dry["CodeSha256"], sha(&zip));
    let latest = h
        .get(A, "/2015-03-31/functions/f/configuration")
        .await
        .expect(200);
    assert_eq!(latest["CodeSha256"], v2["CodeSha256"]);
    assert_eq!(h.artifacts(A).len(), 2);
}

#[tokio::test]
async fn aliases_qualify_reads_and_protect_their_versions() {
    let h = Harness::new().await;
    h.create("f", &hello(), json!({"Publish": true}))
        .await
        .expect(201);
    h.call(
        A,
        "PUT",
        "/2015-03-31/functions/f/configuration",
        json!({"Timeout": 9}),
    )
    .await
    .expect(200);
    h.call(A, "POST", "/2015-03-31/functions/f/versions", json!({}))
        .await
        .expect(201);
    for (alias, primary, routing) in [("live", "1", "{}"), ("canary", "1", r#"{"2":0.1}"#)] {
        sqlx::query(
            "INSERT INTO aliases (account_id, function_name, name, function_version, \
             description, routing, revision_id) VALUES ($1, 'f', $2, $3, '', $4, 'r')",
        )
        .bind(A)
        .bind(alias)
        .bind(primary)
        .bind(routing)
        .execute(h.service.registry.pool())
        .await
        .unwrap();
    }
    let live = h
        .get(A, "/2015-03-31/functions/f/configuration?Qualifier=live")
        .await
        .expect(200);
    assert_eq!(live["Version"], "1");
    assert_eq!(live["Timeout"], 3);
    assert_eq!(live["FunctionArn"], format!("{}:live", arn(A, "f")));
    h.get(A, "/2015-03-31/functions/f?Qualifier=nope")
        .await
        .expect_error(404, "ResourceNotFoundException");

    for version in ["1", "2"] {
        let message = h
            .call(
                A,
                "DELETE",
                &format!("/2015-03-31/functions/f?Qualifier={version}"),
                Value::Null,
            )
            .await
            .expect_error(409, "ResourceConflictException");
        assert!(message.contains("canary"), "{message}");
    }
    for (uri, kind) in [
        (
            "/2015-03-31/functions/f?Qualifier=%24LATEST",
            "InvalidParameterValueException",
        ),
        (
            "/2015-03-31/functions/f?Qualifier=live",
            "InvalidParameterValueException",
        ),
        (
            "/2015-03-31/functions/f:1?Qualifier=2",
            "InvalidParameterValueException",
        ),
        (
            "/2015-03-31/functions/f?Qualifier=3",
            "ResourceNotFoundException",
        ),
    ] {
        let reply = h.call(A, "DELETE", uri, Value::Null).await;
        let status = if kind == "ResourceNotFoundException" {
            404
        } else {
            400
        };
        reply.expect_error(status, kind);
    }
    sqlx::query("UPDATE functions SET reserved_concurrency = 5 WHERE name = 'f'")
        .execute(h.service.registry.pool())
        .await
        .unwrap();
    let got = h.get(A, "/2015-03-31/functions/f").await.expect(200);
    assert_eq!(
        got["Concurrency"],
        json!({"ReservedConcurrentExecutions": 5})
    );
}

#[tokio::test]
async fn creation_checks_every_setting() {
    let h = Harness::new().await;
    let zip = hello();
    let invalid = |extra: Value| h.create("f", &zip, extra);
    for extra in [
        json!({"FunctionName": "a b"}),
        json!({"FunctionName": "x".repeat(65)}),
        json!({"FunctionName": ""}),
        json!({"FunctionName": "f:1"}),
        json!({"FunctionName": null}),
        json!({"MemorySize": 127}),
        json!({"MemorySize": 129}),
        json!({"MemorySize": 3330}),
        json!({"MemorySize": 10240}),
        json!({"Timeout": 0}),
        json!({"Timeout": 901}),
        json!({"Role": "admin"}),
        json!({"Role": null}),
        json!({"Handler": "has space"}),
        json!({"Description": "d".repeat(257)}),
        json!({"PackageType": "Image"}),
        json!({"Architectures": ["arm64"]}),
        json!({"Environment": {"Variables": {"1A": "x"}}}),
        json!({"Environment": {"Variables": {"A": "x"}}}),
        json!({"Environment": {"Variables": {"AWS_SECRET_ACCESS_KEY": "x"}}}),
        json!({"Environment": {"Variables": {"BIG": "x".repeat(4096)}}}),
        json!({"Code": {"S3Bucket": "b", "S3Key": "k"}}),
        json!({"Code": {}}),
        json!({"Code": null}),
    ] {
        let what = extra.to_string();
        let reply = invalid(extra).await;
        assert_eq!(reply.status.as_u16(), 400, "{what}: {}", reply.body);
        reply.expect_error(400, "InvalidParameterValueException");
    }
    let message = invalid(json!({"Runtime": "python3.12"}))
        .await
        .expect_error(400, "InvalidParameterValueException");
    assert!(message.contains("The runtime parameter of python3.12 is not supported"));

    // The code: not a ZIP, no module, several, invalid wasm, a reactor without the handler.
    for (code, expected) in [
        (b"not a zip".to_vec(), "Could not unzip"),
        (
            zip_of(&[("README", b"hi")]),
            "must contain a WebAssembly module",
        ),
        (
            zip_of(&[
                ("a.wasm", ember_examples::HELLO),
                ("b.wasm", ember_examples::ECHO),
            ]),
            "exactly one",
        ),
        (
            zip_of(&[("f.wasm", b"\0asm\x02\0\0\0")]),
            "Invalid WebAssembly module",
        ),
        (
            zip_of(&[("f.wasm", b"\0asm\x01\0\0\0")]),
            "neither `_start`",
        ),
    ] {
        let message = h
            .create("f", &code, json!({}))
            .await
            .expect_error(400, "InvalidParameterValueException");
        assert!(message.contains(expected), "{message}");
    }
    let message = h
        .create("f", &zip, json!({"Handler": "missing"}))
        .await
        .expect_error(400, "InvalidParameterValueException");
    assert!(message.contains("missing"), "{message}");

    // Requests that cannot be read.
    for body in [
        &b"{not json"[..],
        br#"{"FunctionName": "f", "Timeout": "3"}"#,
        br#"{"FunctionName": "f", "Environment": {"Variables": {"N": 1}}}"#,
    ] {
        let reply = h.send(A, "POST", FUNCTIONS, body.to_vec()).await;
        reply.expect_error(400, "InvalidRequestContentException");
    }
    let mut zip_base64 = STANDARD.encode(&zip);
    zip_base64.insert(4, '*');
    h.create_in(A, "f", &zip, json!({"Code": {"ZipFile": zip_base64}}))
        .await
        .expect_error(400, "InvalidRequestContentException");
    assert!(h.artifacts(A).is_empty());

    // Defaults, unknown members, and the one name.
    let created = h
        .create(
            "f",
            &zip,
            json!({"Runtime": null, "Handler": "", "Tags": {"team": "x"}, "TracingConfig": {},
                   "PackageType": "Zip", "Architectures": ["x86_64"], "MemorySize": 3328}),
        )
        .await
        .expect(201);
    assert_eq!(created["Runtime"], "wasm32-wasip1");
    assert_eq!(created["Handler"], "handle");
    assert_eq!(created["MemorySize"], 3328);
    let message = h
        .create("f", &zip, json!({}))
        .await
        .expect_error(409, "ResourceConflictException");
    assert_eq!(message, "Function already exist: f");
    assert_eq!(h.artifacts(A).len(), 1);
}

#[tokio::test]
async fn a_new_handler_is_checked_against_the_stored_module() {
    let h = Harness::new().await;
    let created = h.create("f", &hello(), json!({})).await.expect(201);
    let message = h
        .call(
            A,
            "PUT",
            "/2015-03-31/functions/f/configuration",
            json!({"Handler": "nope"}),
        )
        .await
        .expect_error(400, "InvalidParameterValueException");
    assert!(message.contains("nope"), "{message}");
    let unchanged = h
        .get(A, "/2015-03-31/functions/f/configuration")
        .await
        .expect(200);
    assert_eq!(unchanged, created);
    for bad in [
        json!({"Runtime": "nodejs22.x"}),
        json!({"MemorySize": 64}),
        json!({"Timeout": 1000}),
        json!({"Role": "arn:aws:iam::123:role/x"}),
        json!({"Environment": {"Variables": {"AWS_REGION": "x"}}}),
    ] {
        h.call(A, "PUT", "/2015-03-31/functions/f/configuration", bad)
            .await
            .expect_error(400, "InvalidParameterValueException");
    }

    // A command ignores the handler: any name is fine once the code is one.
    h.call(
        A,
        "PUT",
        "/2015-03-31/functions/f/code",
        json!({"ZipFile": STANDARD.encode(zip_of(&[("e.wasm", ember_examples::ECHO)]))}),
    )
    .await
    .expect(200);
    let renamed = h
        .call(
            A,
            "PUT",
            "/2015-03-31/functions/f/configuration",
            json!({"Handler": "main"}),
        )
        .await
        .expect(200);
    assert_eq!(renamed["Handler"], "main");
    // New code is checked with the current handler: a reactor without `main` is refused.
    h.call(
        A,
        "PUT",
        "/2015-03-31/functions/f/code",
        json!({"ZipFile": STANDARD.encode(hello())}),
    )
    .await
    .expect_error(400, "InvalidParameterValueException");
    h.call(
        A,
        "PUT",
        "/2015-03-31/functions/f/code",
        json!({"S3Bucket": "b", "S3Key": "k"}),
    )
    .await
    .expect_error(400, "InvalidParameterValueException");
    assert_eq!(h.artifacts(A).len(), 1);
}

#[tokio::test]
async fn oversized_packages_and_bodies_are_too_large() {
    let zip = hello();
    let h = Harness::with(Settings {
        package_limits: Limits {
            zipped: zip.len() as u64 - 1,
            ..Limits::default()
        },
        ..Settings::default()
    })
    .await;
    let message = h
        .create("f", &zip, json!({}))
        .await
        .expect_error(413, "RequestTooLargeException");
    assert!(message.contains("Zipped size"), "{message}");
    // A body far past what any allowed package needs is refused before it is parsed.
    let body = vec![b' '; 4 * zip.len() + (2 << 20)];
    h.send(A, "PUT", "/2015-03-31/functions/f/code", body)
        .await
        .expect_error(413, "RequestTooLargeException");
    assert!(h.artifacts(A).is_empty());
}

#[tokio::test]
async fn code_storage_is_limited_per_account() {
    let (small, large) = (echo(), hello());
    assert!(small.len() < large.len());
    let h = Harness::with(Settings {
        code_storage_limit: large.len() as u64 + small.len() as u64 / 2,
        ..Settings::default()
    })
    .await;
    h.create("a", &large, json!({})).await.expect(201);
    h.create("b", &small, json!({}))
        .await
        .expect_error(400, "CodeStorageExceededException");
    assert_eq!(h.artifacts(A).len(), 1, "the refused upload is not kept");
    // Other accounts have their own quota.
    h.create_in(B, "b", &small, json!({})).await.expect(201);
    // Replacing code counts the new code instead of the old.
    h.call(
        A,
        "PUT",
        "/2015-03-31/functions/a/code",
        json!({"ZipFile": STANDARD.encode(&small)}),
    )
    .await
    .expect(200);
    h.create("b", &small, json!({})).await.expect(201);
    // Until a published version keeps the old code too.
    h.call(A, "POST", "/2015-03-31/functions/b/versions", json!({}))
        .await
        .expect(201);
    h.call(
        A,
        "PUT",
        "/2015-03-31/functions/b/code",
        json!({"ZipFile": STANDARD.encode(&large)}),
    )
    .await
    .expect_error(400, "CodeStorageExceededException");
    assert_eq!(h.artifacts(A).len(), 2);
}

#[tokio::test]
async fn accounts_see_only_their_own_functions() {
    let h = Harness::new().await;
    h.create("secret", &hello(), json!({"Publish": true}))
        .await
        .expect(201);
    let full = arn(A, "secret");
    let not_found = [
        (
            "GET",
            "/2015-03-31/functions/secret".to_owned(),
            Value::Null,
        ),
        ("GET", format!("/2015-03-31/functions/{full}"), Value::Null),
        (
            "GET",
            format!("/2015-03-31/functions/{A}:function:secret:1"),
            Value::Null,
        ),
        (
            "GET",
            "/2015-03-31/functions/secret/configuration?Qualifier=1".to_owned(),
            Value::Null,
        ),
        (
            "GET",
            "/2015-03-31/functions/secret/versions".to_owned(),
            Value::Null,
        ),
        (
            "PUT",
            "/2015-03-31/functions/secret/code".to_owned(),
            json!({"ZipFile": STANDARD.encode(echo())}),
        ),
        (
            "PUT",
            "/2015-03-31/functions/secret/configuration".to_owned(),
            json!({"Timeout": 9}),
        ),
        (
            "POST",
            "/2015-03-31/functions/secret/versions".to_owned(),
            json!({}),
        ),
        (
            "DELETE",
            "/2015-03-31/functions/secret?Qualifier=1".to_owned(),
            Value::Null,
        ),
        (
            "DELETE",
            "/2015-03-31/functions/secret".to_owned(),
            Value::Null,
        ),
        (
            "DELETE",
            format!("/2015-03-31/functions/{full}"),
            Value::Null,
        ),
    ];
    for (method, uri, body) in not_found {
        h.call(B, method, &uri, body)
            .await
            .expect_error(404, "ResourceNotFoundException");
    }
    let list = h
        .get(B, "/2015-03-31/functions?FunctionVersion=ALL")
        .await
        .expect(200);
    assert_eq!(list["Functions"], json!([]));
    assert!(h.artifacts(B).is_empty());

    // B's function of the same name is its own.
    let theirs = h
        .create_in(B, "secret", &echo(), json!({}))
        .await
        .expect(201);
    assert_eq!(theirs["FunctionArn"], arn(B, "secret"));
    let ours = h
        .get(A, "/2015-03-31/functions/secret/configuration")
        .await
        .expect(200);
    assert_eq!(ours["CodeSha256"], sha(&hello()));
    assert_eq!(ours["Timeout"], 3);
    assert_eq!(h.artifacts(A).len(), 1);
}

#[tokio::test]
async fn orphaned_artifacts_are_removed_once_old() {
    let h = Harness::new().await;
    h.create("f", &hello(), json!({})).await.expect(201);
    let uploaded = h.artifacts(A);
    let now = ember_core::clock::now_unix();
    let [orphan, in_use, recent] = [(7200, 'a'), (7200, 'c'), (0, 'b')]
        .map(|(age, fill)| format!("code-{}-{}", now - age, fill.to_string().repeat(32)));
    for id in [&orphan, &in_use, &recent, &"unrelated".to_owned()] {
        h.service.artifacts.put(A, id, b"module").unwrap();
    }
    // An old artifact a version names is not an orphan.
    sqlx::query("UPDATE versions SET artifact_id = $1")
        .bind(&in_use)
        .execute(h.service.registry.pool())
        .await
        .unwrap();

    let removed = api::functions::remove_orphan_artifacts(&h.service)
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(matches!(
        h.service.artifacts.get(A, &orphan),
        Err(ArtifactError::NotFound { .. })
    ));
    // The upload's own artifact is unreferenced now, but too young to be sure.
    let mut expected = uploaded;
    expected.extend([in_use, recent, "unrelated".to_owned()]);
    expected.sort();
    assert_eq!(h.artifacts(A), expected);
}
