//! Aliases, reserved and provisioned concurrency through the Lambda REST routes, in
//! process: requests go straight into the router with an authenticated principal, and
//! the functions and versions they act on are inserted with SQL.

use std::sync::Arc;

use axum::http::StatusCode;
use ember_control::service::Settings;
use ember_store::{aliases, concurrency};
use ember_testkit::api::{InProcess, Reply};
use serde_json::{json, Value};

const A: &str = "111111111111";
const B: &str = "222222222222";

/// A service in a temporary directory. Account A has `f` (`$LATEST`, 1, 2, 3) and `g`
/// (`$LATEST`, 1); account B has its own `f` (`$LATEST`).
struct Api(InProcess);

impl Api {
    async fn new() -> Api {
        let api = Api(InProcess::open(Settings::default(), &[(A, "a"), (B, "b")]).await);
        api.function(A, "f", 3).await;
        api.function(A, "g", 1).await;
        api.function(B, "f", 0).await;
        api
    }

    /// Inserts a function with `$LATEST` and versions 1..=`published`.
    async fn function(&self, account: &str, name: &str, published: i64) {
        self.sql(&format!(
            "INSERT INTO functions (account_id, name, created_at, last_version) \
             VALUES ('{account}', '{name}', 0, {published})"
        ))
        .await;
        let versions = std::iter::once(("$LATEST".to_owned(), 0))
            .chain((1..=published).map(|n| (n.to_string(), n)));
        for (version, seq) in versions {
            self.sql(&format!(
                "INSERT INTO versions (account_id, function_name, version, seq, description, \
                 runtime, handler, role, memory_size, timeout, environment, module_kind, \
                 code_sha256, code_size, artifact_id, last_modified, revision_id) VALUES \
                 ('{account}', '{name}', '{version}', {seq}, '', 'wasm', 'handle', 'role', \
                 128, 3, '{{}}', 'reactor', 'sha', 1, 'artifact', \
                 '2026-11-25T10:00:00.000+0000', 'rev')"
            ))
            .await;
        }
    }

    async fn sql(&self, statement: &str) {
        sqlx::query(statement).execute(self.0.pool()).await.unwrap();
    }

    async fn count(&self, table: &str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(self.0.pool())
            .await
            .unwrap();
        n
    }

    async fn call(&self, account: &str, method: &str, uri: &str, body: Option<Value>) -> Reply {
        let body = body.unwrap_or(Value::Null);
        self.0.call(account, method, uri, body).await
    }

    async fn create_alias(&self, function: &str, body: Value) -> Reply {
        let uri = format!("/2015-03-31/functions/{function}/aliases");
        self.call(A, "POST", &uri, Some(body)).await
    }

    async fn update_alias(&self, function: &str, name: &str, body: Value) -> Reply {
        let uri = format!("/2015-03-31/functions/{function}/aliases/{name}");
        self.call(A, "PUT", &uri, Some(body)).await
    }

    async fn put_provisioned(&self, function: &str, qualifier: &str, n: i64) -> Reply {
        let uri = format!(
            "/2019-09-30/functions/{function}/provisioned-concurrency?Qualifier={qualifier}"
        );
        let body = json!({ "ProvisionedConcurrentExecutions": n });
        self.call(A, "PUT", &uri, Some(body)).await
    }

    async fn get_reserved(&self, function: &str) -> Reply {
        let uri = format!("/2019-09-30/functions/{function}/concurrency");
        self.call(A, "GET", &uri, None).await
    }

    async fn put_reserved(&self, function: &str, n: i64) -> Reply {
        let uri = format!("/2017-10-31/functions/{function}/concurrency");
        let body = json!({ "ReservedConcurrentExecutions": n });
        self.call(A, "PUT", &uri, Some(body)).await
    }
}

fn arn(account: &str, qualified: &str) -> String {
    format!("arn:aws:lambda:local:{account}:function:{qualified}")
}

#[tokio::test]
async fn alias_lifecycle_with_weighted_routing() {
    let api = Api::new().await;
    let created = api
        .create_alias(
            "f",
            json!({"Name": "live", "FunctionVersion": "1", "Description": "prod"}),
        )
        .await;
    let created = created.expect(201);
    assert_eq!(created["AliasArn"], arn(A, "f:live"));
    assert_eq!(created["Name"], "live");
    assert_eq!(created["FunctionVersion"], "1");
    assert_eq!(created["Description"], "prod");
    assert!(created.get("RoutingConfig").is_none(), "{created}");
    let first_revision = created["RevisionId"].as_str().unwrap().to_owned();

    // Shift a quarter of the traffic to version 2, addressing the function by ARN.
    let updated = api
        .update_alias(
            &arn(A, "f"),
            "live",
            json!({"RoutingConfig": {"AdditionalVersionWeights": {"2": 0.25}},
                   "RevisionId": first_revision}),
        )
        .await;
    let updated = updated.expect(200);
    assert_eq!(
        updated["RoutingConfig"],
        json!({"AdditionalVersionWeights": {"2": 0.25}})
    );
    assert_eq!(updated["Description"], "prod", "kept when not given");
    let second_revision = updated["RevisionId"].as_str().unwrap().to_owned();
    assert_ne!(second_revision, first_revision);

    let got = api
        .call(A, "GET", "/2015-03-31/functions/f/aliases/live", None)
        .await;
    assert_eq!(got.expect(200), updated);
    let routing = aliases::resolve(api.0.pool(), A, "f", "live")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(routing.primary, "1");
    assert_eq!(routing.additional, Some(("2".to_owned(), 0.25)));

    // Promote version 2 and drop the routing with an empty weight map.
    let promoted = api
        .update_alias(
            "f",
            "live",
            json!({"FunctionVersion": "2", "RoutingConfig": {"AdditionalVersionWeights": {}}}),
        )
        .await;
    let promoted = promoted.expect(200);
    assert_eq!(promoted["FunctionVersion"], "2");
    assert!(promoted.get("RoutingConfig").is_none(), "{promoted}");
    let routing = aliases::resolve(api.0.pool(), A, "f", "live")
        .await
        .unwrap();
    assert_eq!(routing.unwrap().additional, None);

    // Versions resolve to themselves; unknown qualifiers to nothing.
    for version in ["$LATEST", "3"] {
        let routing = aliases::resolve(api.0.pool(), A, "f", version)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (routing.primary.as_str(), routing.additional),
            (version, None)
        );
    }
    for missing in ["9", "nope"] {
        assert_eq!(
            aliases::resolve(api.0.pool(), A, "f", missing)
                .await
                .unwrap(),
            None
        );
    }

    // An alias may follow $LATEST when it routes nowhere else.
    api.create_alias("f", json!({"Name": "edge", "FunctionVersion": "$LATEST"}))
        .await
        .expect(201);

    let deleted = api
        .call(A, "DELETE", "/2015-03-31/functions/f/aliases/live", None)
        .await;
    assert_eq!(deleted.status.as_u16(), 204);
    assert_eq!(deleted.body, Value::Null);
    let message = api
        .call(A, "GET", "/2015-03-31/functions/f/aliases/live", None)
        .await
        .expect_error(404, "ResourceNotFoundException")
        .to_owned();
    assert_eq!(
        message,
        format!("Cannot find alias arn: {}", arn(A, "f:live"))
    );
    api.call(A, "DELETE", "/2015-03-31/functions/f/aliases/live", None)
        .await
        .expect_error(404, "ResourceNotFoundException");
}

#[tokio::test]
async fn alias_requests_are_validated_like_lambda() {
    let api = Api::new().await;
    let invalid = "InvalidParameterValueException";
    let weights = |w: Value| json!({ "AdditionalVersionWeights": w });
    for (body, why) in [
        (json!({"Name": "12", "FunctionVersion": "1"}), "all digits"),
        (
            json!({"Name": "$LATEST", "FunctionVersion": "1"}),
            "$LATEST",
        ),
        (json!({"Name": "a.b", "FunctionVersion": "1"}), "dot"),
        (
            json!({"Name": "x".repeat(129), "FunctionVersion": "1"}),
            "too long",
        ),
        (json!({"FunctionVersion": "1"}), "no name"),
        (json!({"Name": "a"}), "no version"),
        (json!({"Name": "a", "FunctionVersion": "v1"}), "bad version"),
        (
            json!({"Name": "a", "FunctionVersion": "1", "Description": "d".repeat(257)}),
            "long description",
        ),
        (
            json!({"Name": "a", "FunctionVersion": "1", "RoutingConfig": weights(json!({"2": 0.1, "3": 0.1}))}),
            "two additional versions",
        ),
        (
            json!({"Name": "a", "FunctionVersion": "1", "RoutingConfig": weights(json!({"2": 1.0}))}),
            "weight 1.0",
        ),
        (
            json!({"Name": "a", "FunctionVersion": "1", "RoutingConfig": weights(json!({"2": -0.5}))}),
            "negative weight",
        ),
        (
            json!({"Name": "a", "FunctionVersion": "1", "RoutingConfig": weights(json!({"1": 0.5}))}),
            "additional is primary",
        ),
        (
            json!({"Name": "a", "FunctionVersion": "$LATEST", "RoutingConfig": weights(json!({"2": 0.5}))}),
            "routing from $LATEST",
        ),
        (
            json!({"Name": "a", "FunctionVersion": "1", "RoutingConfig": weights(json!({"$LATEST": 0.5}))}),
            "routing to $LATEST",
        ),
    ] {
        let reply = api.create_alias("f", body).await;
        assert_eq!(reply.status.as_u16(), 400, "{why}: {reply:?}");
        assert_eq!(reply.error.as_deref(), Some(invalid), "{why}");
    }
    let message = api
        .create_alias(
            "f",
            json!({"Name": "a", "FunctionVersion": "1", "RoutingConfig": weights(json!({"1": 0.5}))}),
        )
        .await
        .expect_error(400, invalid)
        .to_owned();
    assert_eq!(
        message,
        "Invalid function version 1. Function version 1 is already included in routing configuration."
    );

    // Missing function, version or additional version: 404.
    let message = api
        .create_alias("nope", json!({"Name": "a", "FunctionVersion": "1"}))
        .await
        .expect_error(404, "ResourceNotFoundException")
        .to_owned();
    assert_eq!(message, format!("Function not found: {}", arn(A, "nope")));
    let message = api
        .create_alias("f", json!({"Name": "a", "FunctionVersion": "9"}))
        .await
        .expect_error(404, "ResourceNotFoundException")
        .to_owned();
    assert_eq!(message, format!("Function not found: {}", arn(A, "f:9")));
    api.create_alias(
        "f",
        json!({"Name": "a", "FunctionVersion": "1", "RoutingConfig": weights(json!({"9": 0.5}))}),
    )
    .await
    .expect_error(404, "ResourceNotFoundException");

    // A qualified function name, or a body that is not JSON.
    api.create_alias("f:1", json!({"Name": "a", "FunctionVersion": "1"}))
        .await
        .expect_error(400, invalid);
    api.call(
        A,
        "POST",
        "/2015-03-31/functions/f/aliases",
        Some(json!("not an object")),
    )
    .await
    .expect_error(400, "InvalidRequestContentException");

    // Duplicates conflict; weights of 0.0 are allowed.
    api.create_alias(
        "f",
        json!({"Name": "live", "FunctionVersion": "1", "RoutingConfig": weights(json!({"2": 0.0}))}),
    )
    .await
    .expect(201);
    let message = api
        .create_alias("f", json!({"Name": "live", "FunctionVersion": "2"}))
        .await
        .expect_error(409, "ResourceConflictException")
        .to_owned();
    assert_eq!(
        message,
        format!("Alias already exists: {}", arn(A, "f:live"))
    );

    // Updates: stale revision, unknown alias, and a result that breaks the rules.
    let message = api
        .update_alias(
            "f",
            "live",
            json!({"Description": "x", "RevisionId": "stale"}),
        )
        .await
        .expect_error(412, "PreconditionFailedException")
        .to_owned();
    assert!(message.contains("Revision Id"), "{message}");
    api.update_alias("f", "gone", json!({"Description": "x"}))
        .await
        .expect_error(404, "ResourceNotFoundException");
    api.update_alias("f", "live", json!({"FunctionVersion": "$LATEST"}))
        .await
        .expect_error(400, invalid);
    api.update_alias("f", "live", json!({"FunctionVersion": "2"}))
        .await
        .expect_error(400, invalid);
    api.update_alias("f", "live", json!({"FunctionVersion": "7"}))
        .await
        .expect_error(404, "ResourceNotFoundException");
    api.call(A, "GET", "/2015-03-31/functions/f/aliases/12", None)
        .await
        .expect_error(400, invalid);
    let unchanged = api
        .call(A, "GET", "/2015-03-31/functions/f/aliases/live", None)
        .await;
    assert_eq!(unchanged.expect(200)["FunctionVersion"], "1");
}

#[tokio::test]
async fn list_aliases_pages_with_an_opaque_marker() {
    let api = Api::new().await;
    for (i, name) in ["a1", "a2", "a3", "a4", "a5", "a6", "a7"]
        .iter()
        .enumerate()
    {
        let version = if i % 2 == 0 { "1" } else { "2" };
        api.create_alias("f", json!({"Name": name, "FunctionVersion": version}))
            .await
            .expect(201);
    }
    let mut names = Vec::new();
    let mut pages = 0;
    let mut marker: Option<String> = None;
    loop {
        let uri = match &marker {
            Some(m) => format!("/2015-03-31/functions/f/aliases?MaxItems=3&Marker={m}"),
            None => "/2015-03-31/functions/f/aliases?MaxItems=3".to_owned(),
        };
        let page = api.call(A, "GET", &uri, None).await;
        let page = page.expect(200);
        pages += 1;
        for alias in page["Aliases"].as_array().unwrap() {
            names.push(alias["Name"].as_str().unwrap().to_owned());
        }
        match page.get("NextMarker") {
            Some(next) => marker = Some(next.as_str().unwrap().to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["a1", "a2", "a3", "a4", "a5", "a6", "a7"]);

    let filtered = api
        .call(
            A,
            "GET",
            "/2015-03-31/functions/f/aliases?FunctionVersion=2",
            None,
        )
        .await;
    let filtered = filtered.expect(200);
    let filtered: Vec<&str> = filtered["Aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["Name"].as_str().unwrap())
        .collect();
    assert_eq!(filtered, ["a2", "a4", "a6"]);

    let empty = api
        .call(A, "GET", "/2015-03-31/functions/g/aliases", None)
        .await;
    assert_eq!(empty.expect(200), json!({"Aliases": []}));

    for query in [
        "Marker=%21%21%21",
        "Marker=MTIz",
        "MaxItems=0",
        "MaxItems=x",
    ] {
        api.call(
            A,
            "GET",
            &format!("/2015-03-31/functions/f/aliases?{query}"),
            None,
        )
        .await
        .expect_error(400, "InvalidParameterValueException");
    }
    api.call(A, "GET", "/2015-03-31/functions/nope/aliases", None)
        .await
        .expect_error(404, "ResourceNotFoundException");
}

#[tokio::test]
async fn reserved_concurrency_keeps_the_unreserved_minimum() {
    let api = Api::new().await;
    assert_eq!(api.get_reserved("f").await.expect(200), json!({}));
    assert_eq!(
        concurrency::reserved(api.0.pool(), A, "f").await.unwrap(),
        None
    );

    assert_eq!(
        api.put_reserved("f", 800).await.expect(200),
        json!({"ReservedConcurrentExecutions": 800})
    );
    assert_eq!(
        api.get_reserved("f").await.expect(200),
        json!({"ReservedConcurrentExecutions": 800})
    );
    assert_eq!(
        concurrency::reserved(api.0.pool(), A, "f").await.unwrap(),
        Some(800)
    );

    // 800 + 101 would leave 99 of 1000 unreserved.
    let message = api
        .put_reserved("g", 101)
        .await
        .expect_error(400, "InvalidParameterValueException")
        .to_owned();
    assert_eq!(
        message,
        "Specified ReservedConcurrentExecutions for function decreases account's \
         UnreservedConcurrentExecution below its minimum value of [100]."
    );
    api.put_reserved("g", 100).await.expect(200);
    // Replacing a function's own reservation does not count it twice.
    api.put_reserved("f", 800).await.expect(200);
    api.put_reserved("f", 801)
        .await
        .expect_error(400, "InvalidParameterValueException");
    api.put_reserved("f", 0).await.expect(200);
    api.put_reserved("f", -1)
        .await
        .expect_error(400, "InvalidParameterValueException");
    api.call(
        A,
        "PUT",
        "/2017-10-31/functions/f/concurrency",
        Some(json!({})),
    )
    .await
    .expect_error(400, "InvalidParameterValueException");
    api.put_reserved("f:1", 5)
        .await
        .expect_error(400, "InvalidParameterValueException");

    let deleted = api
        .call(A, "DELETE", "/2017-10-31/functions/f/concurrency", None)
        .await;
    assert_eq!(deleted.status.as_u16(), 204);
    assert_eq!(api.get_reserved("f").await.expect(200), json!({}));
    // Another account's reservations are its own business.
    api.call(
        B,
        "PUT",
        "/2017-10-31/functions/f/concurrency",
        Some(json!({"ReservedConcurrentExecutions": 900})),
    )
    .await
    .expect(200);

    api.put_reserved("nope", 1)
        .await
        .expect_error(404, "ResourceNotFoundException");
    api.get_reserved("nope")
        .await
        .expect_error(404, "ResourceNotFoundException");
    api.call(A, "DELETE", "/2017-10-31/functions/nope/concurrency", None)
        .await
        .expect_error(404, "ResourceNotFoundException");
}

#[tokio::test]
async fn provisioned_concurrency_configs() {
    let api = Api::new().await;
    let put = api.put_provisioned("f", "1", 5).await;
    let put = put.expect(202);
    assert_eq!(put["RequestedProvisionedConcurrentExecutions"], 5);
    assert_eq!(put["AvailableProvisionedConcurrentExecutions"], 0);
    assert_eq!(put["AllocatedProvisionedConcurrentExecutions"], 0);
    assert_eq!(put["Status"], "IN_PROGRESS");
    assert!(put["LastModified"].as_str().unwrap().ends_with("+0000"));
    assert!(put.get("FunctionArn").is_none());

    let uri = "/2019-09-30/functions/f/provisioned-concurrency?Qualifier=1";
    let got = api.call(A, "GET", uri, None).await;
    assert_eq!(got.expect(200), put);
    // The qualifier may come with the function name instead.
    let got = api
        .call(
            A,
            "GET",
            "/2019-09-30/functions/f:1/provisioned-concurrency",
            None,
        )
        .await;
    assert_eq!(got.expect(200), put);
    api.call(
        A,
        "GET",
        "/2019-09-30/functions/f:1/provisioned-concurrency?Qualifier=2",
        None,
    )
    .await
    .expect_error(400, "InvalidParameterValueException");

    // Unpublished, missing or out-of-range requests.
    let message = api
        .put_provisioned("f", "$LATEST", 1)
        .await
        .expect_error(400, "InvalidParameterValueException")
        .to_owned();
    assert_eq!(
        message,
        "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
    );
    api.put_provisioned("f", "1", 0)
        .await
        .expect_error(400, "InvalidParameterValueException");
    api.call(
        A,
        "PUT",
        "/2019-09-30/functions/f/provisioned-concurrency",
        Some(json!({"ProvisionedConcurrentExecutions": 1})),
    )
    .await
    .expect_error(400, "InvalidParameterValueException");
    api.put_provisioned("f", "9", 1)
        .await
        .expect_error(404, "ResourceNotFoundException");
    api.put_provisioned("f", "nope", 1)
        .await
        .expect_error(404, "ResourceNotFoundException");
    api.put_provisioned("nope", "1", 1)
        .await
        .expect_error(404, "ResourceNotFoundException");
    api.call(
        A,
        "GET",
        "/2019-09-30/functions/f/provisioned-concurrency?Qualifier=2",
        None,
    )
    .await
    .expect_error(404, "ProvisionedConcurrencyConfigNotFoundException");
    api.call(
        A,
        "GET",
        "/2019-09-30/functions/f/provisioned-concurrency?Qualifier=$LATEST",
        None,
    )
    .await
    .expect_error(400, "InvalidParameterValueException");

    // Aliases: not to $LATEST, not over a provisioned version, not under one.
    api.create_alias("f", json!({"Name": "edge", "FunctionVersion": "$LATEST"}))
        .await
        .expect(201);
    api.put_provisioned("f", "edge", 1)
        .await
        .expect_error(400, "InvalidParameterValueException");
    api.create_alias("f", json!({"Name": "old", "FunctionVersion": "1"}))
        .await
        .expect(201);
    api.put_provisioned("f", "old", 1)
        .await
        .expect_error(409, "ResourceConflictException");
    api.create_alias(
        "f",
        json!({"Name": "live", "FunctionVersion": "2",
               "RoutingConfig": {"AdditionalVersionWeights": {"3": 0.1}}}),
    )
    .await
    .expect(201);
    api.put_provisioned("f", "live", 7).await.expect(202);
    for version in ["2", "3"] {
        api.put_provisioned("f", version, 1)
            .await
            .expect_error(409, "ResourceConflictException");
    }
    api.update_alias("f", "live", json!({"FunctionVersion": "1"}))
        .await
        .expect_error(409, "ResourceConflictException");
    api.update_alias(
        "f",
        "live",
        json!({"FunctionVersion": "$LATEST", "RoutingConfig": {}}),
    )
    .await
    .expect_error(400, "InvalidParameterValueException");
    // Replacing a configuration updates it in place.
    api.put_provisioned("f", "live", 8).await.expect(202);

    // List, one per page.
    let mut listed = Vec::new();
    let mut uri = "/2019-09-30/functions/f/provisioned-concurrency?List=ALL&MaxItems=1".to_owned();
    loop {
        let page = api.call(A, "GET", &uri, None).await;
        let page = page.expect(200);
        let configs = page["ProvisionedConcurrencyConfigs"].as_array().unwrap();
        assert_eq!(configs.len(), 1);
        listed.push((
            configs[0]["FunctionArn"].as_str().unwrap().to_owned(),
            configs[0]["RequestedProvisionedConcurrentExecutions"]
                .as_i64()
                .unwrap(),
        ));
        match page.get("NextMarker") {
            Some(m) => {
                uri = format!(
                    "/2019-09-30/functions/f/provisioned-concurrency?List=ALL&MaxItems=1&Marker={}",
                    m.as_str().unwrap()
                )
            }
            None => break,
        }
    }
    assert_eq!(listed, [(arn(A, "f:1"), 5), (arn(A, "f:live"), 8)]);
    api.call(
        A,
        "GET",
        "/2019-09-30/functions/f/provisioned-concurrency?List=ALL&MaxItems=51",
        None,
    )
    .await
    .expect(200);
    api.call(
        A,
        "GET",
        "/2019-09-30/functions/f/provisioned-concurrency?List=ALL&Marker=bad",
        None,
    )
    .await
    .expect_error(400, "InvalidParameterValueException");
    api.call(
        A,
        "GET",
        "/2019-09-30/functions/nope/provisioned-concurrency?List=ALL",
        None,
    )
    .await
    .expect_error(404, "ResourceNotFoundException");

    // Deleting is idempotent; deleting an alias takes its configuration with it.
    for _ in 0..2 {
        let deleted = api.call(A, "DELETE", uri_for("1").as_str(), None).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    }
    api.call(A, "GET", uri_for("1").as_str(), None)
        .await
        .expect_error(404, "ProvisionedConcurrencyConfigNotFoundException");
    api.call(A, "DELETE", uri_for("9").as_str(), None)
        .await
        .expect_error(404, "ResourceNotFoundException");
    api.call(A, "DELETE", "/2015-03-31/functions/f/aliases/live", None)
        .await
        .expect(204);
    assert_eq!(api.count("provisioned_concurrency").await, 0);
}

fn uri_for(qualifier: &str) -> String {
    format!("/2019-09-30/functions/f/provisioned-concurrency?Qualifier={qualifier}")
}

#[tokio::test]
async fn provisioned_concurrency_fits_reservations_and_the_account_pool() {
    let api = Api::new().await;
    api.put_reserved("f", 10).await.expect(200);
    api.put_provisioned("f", "1", 6).await.expect(202);
    let message = api
        .put_provisioned("f", "2", 5)
        .await
        .expect_error(400, "InvalidParameterValueException")
        .to_owned();
    assert_eq!(
        message,
        "Requested Provisioned Concurrency should not be greater than the \
         reservedConcurrentExecution for function"
    );
    api.put_provisioned("f", "2", 4).await.expect(202);
    // The reservation cannot shrink below what is provisioned.
    api.put_reserved("f", 9)
        .await
        .expect_error(400, "InvalidParameterValueException");
    api.put_reserved("f", 10).await.expect(200);

    // Without a reservation, provisioned concurrency comes out of the unreserved pool:
    // 1000 - 100 kept free - 10 reserved for f leaves 890 for g.
    let message = api
        .put_provisioned("g", "1", 891)
        .await
        .expect_error(400, "InvalidParameterValueException")
        .to_owned();
    assert!(
        message.contains("below its minimum value of [100]"),
        "{message}"
    );
    api.put_provisioned("g", "1", 890).await.expect(202);
    // ... and then no reservation elsewhere fits.
    api.put_reserved("f", 11)
        .await
        .expect_error(400, "InvalidParameterValueException");
}

#[tokio::test]
async fn other_accounts_see_nothing() {
    let api = Api::new().await;
    api.create_alias("f", json!({"Name": "live", "FunctionVersion": "1"}))
        .await
        .expect(201);
    api.put_provisioned("f", "1", 2).await.expect(202);
    api.put_reserved("g", 5).await.expect(200);

    // B has a function `f` of its own, without versions or aliases; `g` does not exist.
    let not_found = [
        ("GET", "/2015-03-31/functions/f/aliases/live".to_owned()),
        ("DELETE", "/2015-03-31/functions/f/aliases/live".to_owned()),
        (
            "GET",
            format!("/2015-03-31/functions/{}/aliases", arn(A, "f")),
        ),
        (
            "GET",
            format!("/2015-03-31/functions/{}/aliases/live", arn(A, "f")),
        ),
        ("GET", "/2015-03-31/functions/g/aliases".to_owned()),
        ("GET", "/2019-09-30/functions/g/concurrency".to_owned()),
        ("DELETE", "/2017-10-31/functions/g/concurrency".to_owned()),
        (
            "GET",
            "/2019-09-30/functions/f/provisioned-concurrency?Qualifier=1".to_owned(),
        ),
        (
            "DELETE",
            "/2019-09-30/functions/f/provisioned-concurrency?Qualifier=1".to_owned(),
        ),
        (
            "GET",
            "/2019-09-30/functions/g/provisioned-concurrency?List=ALL".to_owned(),
        ),
    ];
    for (method, uri) in not_found {
        let reply = api.call(B, method, &uri, None).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{method} {uri}: {reply:?}"
        );
    }
    let listed = api
        .call(B, "GET", "/2015-03-31/functions/f/aliases", None)
        .await;
    assert_eq!(listed.expect(200), json!({"Aliases": []}));
    assert_eq!(
        aliases::resolve(api.0.pool(), B, "f", "live")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        concurrency::reserved(api.0.pool(), B, "g").await.unwrap(),
        None
    );

    // A's settings are untouched.
    api.call(A, "GET", "/2015-03-31/functions/f/aliases/live", None)
        .await
        .expect(200);
    api.call(A, "GET", uri_for("1").as_str(), None)
        .await
        .expect(200);
}

#[tokio::test]
async fn deleting_a_function_removes_its_aliases_and_configs() {
    let api = Api::new().await;
    api.create_alias("f", json!({"Name": "live", "FunctionVersion": "2"}))
        .await
        .expect(201);
    api.put_provisioned("f", "live", 3).await.expect(202);
    api.put_provisioned("f", "1", 3).await.expect(202);
    api.create_alias("g", json!({"Name": "live", "FunctionVersion": "1"}))
        .await
        .expect(201);

    api.sql(&format!(
        "DELETE FROM functions WHERE account_id = '{A}' AND name = 'f'"
    ))
    .await;
    assert_eq!(api.count("provisioned_concurrency").await, 0);
    assert_eq!(api.count("aliases").await, 1, "g's alias stays");
    api.call(A, "GET", "/2015-03-31/functions/f/aliases/live", None)
        .await
        .expect_error(404, "ResourceNotFoundException");
    assert_eq!(
        aliases::resolve(api.0.pool(), A, "f", "live")
            .await
            .unwrap(),
        None
    );

    // A function of the same name starts with none of them.
    api.function(A, "f", 2).await;
    api.call(A, "GET", "/2015-03-31/functions/f/aliases", None)
        .await
        .expect(200);
    api.call(A, "GET", uri_for("1").as_str(), None)
        .await
        .expect_error(404, "ProvisionedConcurrencyConfigNotFoundException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_cannot_overcommit_the_account() {
    let api = Arc::new(Api::new().await);
    for i in 0..10 {
        api.function(A, &format!("h{i}"), 0).await;
    }
    // Ten requests of 100 race for the 900 the account may reserve: exactly nine win.
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..10 {
        let api = api.clone();
        requests.spawn(async move { api.put_reserved(&format!("h{i}"), 100).await.status });
    }
    let mut granted = 0;
    while let Some(status) = requests.join_next().await {
        match status.unwrap() {
            StatusCode::OK => granted += 1,
            status => assert_eq!(status, StatusCode::BAD_REQUEST),
        }
    }
    assert_eq!(granted, 9);
}
