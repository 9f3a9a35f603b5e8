//! The console's JSON API against the real database and broker (contract
//! section 9): the token on every path, filters and keyset paging, groups
//! with their fix, masking and logged reveals, paced replay with progress,
//! cross-site refusals. The browser half is in `console_browser.rs`.

use crate::support::*;
use reqwest::{Client, Method, StatusCode, header};
use serde_json::{Value, json};
use std::{process::Command, time::Duration};

pub const TOKEN: &str = "console-token-0123456789abcdef";
/// A Telnxo answer that says the key is wrong and echoes the recipient.
pub const AUTH_BODY: &str =
    r#"{"error":{"code":"invalid_api_key","message":"key rejected for +919876543210"}}"#;

/// Every console and API path, with its method.
pub const PATHS: [(&str, &str); 16] = [
    ("GET", "/console"),
    ("GET", "/console/login"),
    ("GET", "/console/dead-letters/1"),
    ("POST", "/console/replay/confirm"),
    ("POST", "/console/replay"),
    ("GET", "/console/replays/1"),
    ("POST", "/console/logout"),
    ("GET", "/console/nowhere"),
    ("GET", "/api/v1/dead-letters"),
    ("GET", "/api/v1/dead-letters/groups"),
    ("POST", "/api/v1/dead-letters/replay"),
    ("GET", "/api/v1/dead-letters/1"),
    ("GET", "/api/v1/replays"),
    ("GET", "/api/v1/deliveries/sms-0"),
    ("GET", "/api/v1/providers"),
    ("GET", "/api/v2/anything"),
];

pub struct Api {
    pub base: String,
    pub http: Client,
}

impl Api {
    pub fn new(worker: &impl Admin) -> Self {
        Self {
            base: worker.admin_url(),
            http: Client::new(),
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.base),
            )
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("console answers");
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }
}

/// A worker with the console on and the auth pause off, and `n` SMS jobs
/// dead-lettered by an invalid key (401), plus one rejected email.
pub async fn with_dead_letters(
    env: &TestEnv,
    n: usize,
    sms: &FakeProvider,
    email: &FakeProvider,
) -> TestWorker {
    let worker = env
        .worker(
            email,
            sms,
            &["--auth-pause-secs", "0", "--console-token", TOKEN],
        )
        .await;
    for i in 0..n {
        env.publish("sms", &sms_job(&format!("sms-{i}"), "+919876543210"))
            .await;
    }
    env.publish("email", &email_job("mail-0", "rejected@example.com"))
        .await;
    env.wait_rows(n + 1).await;
    worker
}

/// A form body.
pub fn form(pairs: &[(&str, String)]) -> String {
    let mut f = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        f.append_pair(k, v);
    }
    f.finish()
}

fn answering() -> impl Fn(&Call) -> Reply + Send + Sync + 'static {
    |_| Reply::status(401, AUTH_BODY)
}

async fn email_rejecting() -> FakeProvider {
    FakeProvider::start(|_| Reply::status(400, r#"{"error":{"code":"bad_address"}}"#)).await
}

#[tokio::test]
async fn every_console_and_api_path_answers_401_without_the_token_and_nothing_of_the_data() {
    let env = TestEnv::new().await;
    let (email, sms) = (
        email_rejecting().await,
        FakeProvider::start(answering()).await,
    );
    let worker = with_dead_letters(&env, 2, &sms, &email).await;
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let forged = "4102444800.n.AAAA";
    for (method, path) in PATHS {
        let url = format!("{}{path}", worker.admin_url());
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        for (how, req) in [
            ("no token", http.request(m.clone(), &url)),
            (
                "wrong bearer",
                http.request(m.clone(), &url)
                    .bearer_auth("console-token-0123456789abcdeX"),
            ),
            (
                "forged cookie",
                http.request(m.clone(), &url)
                    .header(header::COOKIE, format!("nw_console={forged}")),
            ),
            // A right cookie does not rescue a wrong bearer.
            (
                "bad bearer",
                http.request(m.clone(), &url)
                    .header(header::AUTHORIZATION, "Basic Zm9v"),
            ),
        ] {
            let res = req.send().await.unwrap();
            assert_eq!(
                res.status(),
                StatusCode::UNAUTHORIZED,
                "{how}: {method} {path}"
            );
            let csp = res.headers().get(header::CONTENT_SECURITY_POLICY).cloned();
            let body = res.text().await.unwrap();
            for secret in [
                "sms-0",
                "mail-0",
                "9876543210",
                "rejected@example.com",
                "invalid_api_key",
                TOKEN,
            ] {
                assert!(
                    !body.contains(secret),
                    "{how}: {method} {path} leaks {secret}: {body}"
                );
            }
            assert!(csp.is_some(), "{how}: {method} {path}: no CSP");
        }
        // With the token the same path is served (or is a 400/404/403 of its own).
        let (status, _) = Api::new(&worker).call(method, path, Some(json!({}))).await;
        assert_ne!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with the token"
        );
    }
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(worker.get(open).await.0, 200, "{open} stays open");
    }
    worker.stop().await;

    // Without a token the console is off: not there at all.
    let off = env.worker(&email, &sms, &[]).await;
    assert_eq!(off.get("/console").await.0, 404);
    assert_eq!(off.get("/api/v1/dead-letters").await.0, 404);
    off.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_api_groups_filters_pages_and_masks_dead_letters() {
    let env = TestEnv::new().await;
    let (email, sms) = (
        email_rejecting().await,
        FakeProvider::start(answering()).await,
    );
    let worker = with_dead_letters(&env, 5, &sms, &email).await;
    let api = Api::new(&worker);

    // Groups: the auth failures in one, with the reason and the fix.
    let groups = api.get("/api/v1/dead-letters/groups").await;
    let items = groups["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{groups}");
    let auth = &items[0];
    assert_eq!(auth["provider"], "telnxo");
    assert_eq!(auth["error_code"], "invalid_api_key");
    assert_eq!(auth["http_status"], 401);
    assert_eq!(
        (auth["count"].as_i64(), auth["open"].as_i64()),
        (Some(5), Some(5))
    );
    assert!(
        auth["fix"].as_str().unwrap().contains("verify the key"),
        "{auth}"
    );
    assert!(
        auth["summary"]
            .as_str()
            .unwrap()
            .starts_with("5 open of 5 jobs: telnxo invalid_api_key (401) since "),
        "{auth}"
    );
    assert_eq!(items[1]["error_code"], "rejected");

    // Keyset paging: every row once, newest first, over pages of 2.
    let mut seen = Vec::new();
    let mut path = "/api/v1/dead-letters?code=invalid_api_key&limit=2".to_owned();
    loop {
        let page = api.get(&path).await;
        let ids: Vec<i64> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        assert!(ids.len() <= 2);
        seen.extend(ids);
        match page["next_cursor"].as_str() {
            Some(c) => {
                path = format!("/api/v1/dead-letters?code=invalid_api_key&limit=2&cursor={c}")
            }
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!((seen.len(), &seen), (5, &sorted), "each once, newest first");
    let email_only = api.get("/api/v1/dead-letters?channel=email").await;
    assert_eq!(email_only["items"].as_array().unwrap().len(), 1);
    assert_eq!(email_only["items"][0]["job_id"], "mail-0");

    // Bounds: a bad value is a 400 naming the parameter.
    for (path, names) in [
        ("/api/v1/dead-letters?limit=100000", "`limit`"),
        ("/api/v1/dead-letters?channel=fax", "`channel`"),
        ("/api/v1/dead-letters?since=yesterday", "`since`"),
        ("/api/v1/dead-letters?surprise=1", "surprise"),
    ] {
        let (status, body) = api.call("GET", path, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(
            body["message"].as_str().unwrap_or("").contains(names),
            "{path}: {body}"
        );
    }
    let long = format!("/api/v1/dead-letters?code={}", "x".repeat(101));
    assert_eq!(
        api.call("GET", &long, None).await.0,
        StatusCode::BAD_REQUEST
    );

    // One dead letter: masked, then revealed (counted as a reveal).
    let id = seen[0];
    let masked = api.get(&format!("/api/v1/dead-letters/{id}")).await;
    let text = masked.to_string();
    assert!(
        !text.contains("9876543210") && !text.contains("482910"),
        "{text}"
    );
    assert_eq!(masked["payload"]["to"], "+9198******10");
    assert_eq!(masked["revealed"], false);
    assert!(
        masked["provider_response"]
            .as_str()
            .unwrap()
            .contains("invalid_api_key")
    );
    assert!(masked["fix"].as_str().unwrap().contains("verify the key"));
    assert_eq!(
        worker.metric("notify_console_reveals_total").await,
        Some(0.0)
    );
    let clear = api
        .get(&format!("/api/v1/dead-letters/{id}?reveal=true"))
        .await;
    assert_eq!(clear["payload"]["to"], "+919876543210");
    assert!(
        clear["payload"]["message"]
            .as_str()
            .unwrap()
            .contains("482910")
    );
    assert_eq!(
        worker.metric("notify_console_reveals_total").await,
        Some(1.0)
    );
    let (status, _) = api.call("GET", "/api/v1/dead-letters/999999", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The delivery record, recipient masked.
    let job = masked["job_id"].as_str().unwrap();
    let d = api.get(&format!("/api/v1/deliveries/{job}")).await;
    assert_eq!(d["items"][0]["status"], "dead_lettered", "{d}");
    assert_eq!(d["items"][0]["recipient"], "+9198******10", "{d}");
    assert_eq!(
        api.call("GET", "/api/v1/deliveries/nobody", None).await.0,
        StatusCode::NOT_FOUND
    );

    // Provider state: both, with flow figures.
    let p = api.get("/api/v1/providers").await;
    let names: Vec<&str> = p["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["provider"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["migosmtp", "telnxo"]);
    assert_eq!(p["items"][1]["breaker"]["state"], "closed");
    assert!(
        p["items"][1]["flow"]["in_flight_limit"].as_u64().unwrap() >= 1,
        "{p}"
    );
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_auth_pause_shows_in_the_provider_state_with_its_fix() {
    let env = TestEnv::new().await;
    let (email, sms) = (
        FakeProvider::accepting().await,
        FakeProvider::start(answering()).await,
    );
    let worker = env
        .worker(
            &email,
            &sms,
            &["--auth-pause-secs", "60", "--console-token", TOKEN],
        )
        .await;
    env.publish("sms", &sms_job("paused-0", "+919876543210"))
        .await;
    env.wait_rows(1).await;
    let api = Api::new(&worker);
    let p = api.get("/api/v1/providers").await;
    let telnxo = &p["items"][1];
    assert_eq!(telnxo["pause"]["kind"], "auth", "{p}");
    assert_eq!(telnxo["pause"]["reason"], "invalid_api_key");
    assert!(telnxo["pause"]["until"].as_str().is_some(), "{p}");
    assert!(
        telnxo["pause"]["fix"]
            .as_str()
            .unwrap()
            .contains("verify the key")
    );
    assert!(p["items"][0]["pause"].is_null(), "{p}");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_api_replay_counts_first_then_runs_paced_with_its_progress_visible() {
    let env = TestEnv::new().await;
    let (email, sms) = (
        email_rejecting().await,
        FakeProvider::start(answering()).await,
    );
    let worker = with_dead_letters(&env, 4, &sms, &email).await;
    let api = Api::new(&worker);

    // Nothing named: refused, not "everything".
    let (status, body) = api
        .call("POST", "/api/v1/dead-letters/replay", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let filter = json!({"filter": {"code": "invalid_api_key"}, "dry_run": true, "rate": 10});
    let (status, dry) = api
        .call("POST", "/api/v1/dead-letters/replay", Some(filter))
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["count"], 4);
    assert_eq!(dry["sample"].as_array().unwrap().len(), 4);
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(open, 5, "a dry run replays nothing");
    let (status, _) = api
        .call(
            "POST",
            "/api/v1/dead-letters/replay",
            Some(json!({"ids": [1], "rate": 100000})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a pace above NOTIFY_CONSOLE_REPLAY_MAX_RATE"
    );

    let run = json!({"filter": {"code": "invalid_api_key"}, "rate": 10});
    let (status, started) = api
        .call("POST", "/api/v1/dead-letters/replay", Some(run))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["count"], 4);
    let id = started["replay"]["id"].as_u64().unwrap();
    let done = eventually("replay done", Duration::from_secs(20), || async {
        let p = api.get(&format!("/api/v1/replays/{id}")).await;
        (p["state"] == "done").then_some(p)
    })
    .await;
    assert_eq!(
        (done["replayed"].as_u64(), done["total"].as_i64()),
        (Some(4), Some(4)),
        "{done}"
    );
    assert_eq!(api.get("/api/v1/replays").await["items"][0]["id"], id);
    let gaps: Vec<Option<f64>> = sqlx::query_scalar(
        "SELECT extract(epoch FROM replayed_at - lag(replayed_at) OVER (ORDER BY replayed_at))::float8 \
         FROM dead_letters WHERE error_code = 'invalid_api_key' ORDER BY replayed_at",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    let gaps: Vec<f64> = gaps.into_iter().flatten().collect();
    assert!(
        gaps.len() == 3 && gaps.iter().all(|g| *g >= 0.05),
        "paced at 10/s: {gaps:?}"
    );
    // Republished: the worker calls the provider again for each.
    for i in 0..4 {
        sms.wait_calls_to("+919876543210", 5 + i).await;
    }
    let rejected: Option<String> = sqlx::query_scalar(
        "SELECT replayed_at::text FROM dead_letters WHERE error_code = 'rejected'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(rejected, None, "outside the filter: untouched");
    assert!(worker.metric("notify_console_replayed_total").await >= Some(4.0));
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_cookie_session_needs_same_origin_and_its_csrf_token_to_change_anything() {
    let env = TestEnv::new().await;
    let (email, sms) = (
        email_rejecting().await,
        FakeProvider::start(answering()).await,
    );
    let worker = with_dead_letters(&env, 1, &sms, &email).await;
    let base = worker.admin_url();
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |origin: &'static str, token: &'static str| {
        http.post(format!("{base}/console/login"))
            .header(header::ORIGIN, origin)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(&[("token", token.to_owned())]))
    };
    // A login from another site, and a wrong token, set no cookie.
    let res = login("http://evil.example", TOKEN).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers().get(header::SET_COOKIE).is_none());
    let origin: &'static str = Box::leak(base.clone().into_boxed_str());
    let res = login(origin, "wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers().get(header::SET_COOKIE).is_none());
    assert_eq!(
        worker
            .metric("notify_console_logins_total{result=\"refused\"}")
            .await,
        Some(1.0)
    );
    let res = login(origin, TOKEN).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = res.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = http
        .get(format!("{base}/console"))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page carries a CSRF token")
        .to_owned();

    let id: i64 = sqlx::query_scalar("SELECT min(id) FROM dead_letters")
        .fetch_one(&env.db)
        .await
        .unwrap();
    let confirm = |site: &'static str, csrf: String| {
        http.post(format!("{base}/console/replay/confirm"))
            .header(header::COOKIE, &session)
            .header("sec-fetch-site", site)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(&[("csrf", csrf), ("ids", id.to_string())]))
    };
    for (site, token, want) in [
        ("cross-site", csrf.clone(), StatusCode::FORBIDDEN),
        ("same-site", csrf.clone(), StatusCode::FORBIDDEN),
        ("same-origin", "forged".to_owned(), StatusCode::FORBIDDEN),
        ("same-origin", csrf.clone(), StatusCode::OK),
    ] {
        let res = confirm(site, token.clone()).send().await.unwrap();
        assert_eq!(res.status(), want, "{site} with csrf {token}");
    }
    // The API by cookie: the CSRF token in its header, or refused.
    let replay = |csrf: Option<&str>| {
        let mut req = http
            .post(format!("{base}/api/v1/dead-letters/replay"))
            .header(header::COOKIE, &session)
            .json(&json!({"ids": [id], "dry_run": true}));
        if let Some(c) = csrf {
            req = req.header("x-notify-csrf", c);
        }
        req
    };
    assert_eq!(
        replay(None).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        replay(Some(&csrf)).send().await.unwrap().status(),
        StatusCode::OK
    );
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(open, 2, "nothing replayed by any of it");
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_token_file_rotates_sessions_end_and_no_token_or_session_reaches_the_logs() {
    let env = TestEnv::new().await;
    let (email, sms) = (
        email_rejecting().await,
        FakeProvider::start(answering()).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("console");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let new_token = "console-token-rotated-fedcba9876543210";
    let mut args = env.args(&email, &sms);
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    set_arg(&mut args, "--admin-addr", Some(&admin));
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_notify-worker"))
        .env_clear()
        .env("NOTIFY_LOG_FORMAT", "json")
        .env("NOTIFY_LOG_LEVEL", "trace")
        .env("NOTIFY_AUTH_PAUSE_SECS", "0")
        .env("NOTIFY_KEY_POLL_MS", "50")
        .env("MIGOSMTP_API_KEY", EMAIL_KEY)
        .env("TELNXO_API_KEY", SMS_KEY)
        .env("NOTIFY_CONSOLE_TOKEN_FILE", &token_file)
        .arg("run")
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let exited = tokio::spawn(child.wait_with_output());
    let base = format!("http://{admin}");
    eventually("worker ready", Duration::from_secs(30), || async {
        let ok = reqwest::get(format!("{base}/readyz")).await.ok()?;
        (ok.status() == 200).then_some(())
    })
    .await;
    env.publish("sms", &sms_job("rot-1", "+919876543210")).await;
    env.wait_rows(1).await;

    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let status = |token: &'static str| {
        let http = http.clone();
        let url = format!("{base}/api/v1/dead-letters/1?reveal=1");
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let login = http
        .post(format!("{base}/console/login"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[("token", TOKEN.to_owned())]))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    let session = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = || {
        http.get(format!("{base}/console"))
            .header(header::COOKIE, &session)
            .send()
    };
    assert_eq!(with_cookie().await.unwrap().status(), StatusCode::OK);
    assert_eq!(status(TOKEN).await, StatusCode::OK, "a reveal, logged");

    // A bad new token is refused and the old one kept; a good one replaces
    // it and ends the sessions the old one made.
    std::fs::write(&token_file, "tiny-tok\n").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(TOKEN).await, StatusCode::OK);
    std::fs::write(&token_file, new_token).unwrap();
    eventually("new token in use", Duration::from_secs(10), || async {
        (status(new_token).await == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(status(TOKEN).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        with_cookie().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let output = tokio::time::timeout(Duration::from_secs(30), exited)
        .await
        .expect("exits after SIGTERM")
        .unwrap()
        .unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let cookie_value = session.split_once('=').unwrap().1;
    for secret in [TOKEN, new_token, cookie_value, "tiny-tok"] {
        assert!(!logs.contains(secret), "{secret} in the logs");
        assert!(!metrics.contains(secret), "{secret} in /metrics");
    }
    let audit: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(r#""audit":"reveal""#))
        .collect();
    assert_eq!(
        audit.len(),
        3,
        "each of the three reveals logged: {audit:?}"
    );
    assert!(
        audit[0].contains("revealed") && audit[0].contains("bearer token"),
        "{audit:?}"
    );
    assert!(
        logs.contains("console token replaced from its file"),
        "{logs}"
    );
    assert!(logs.contains("new console token refused"), "{logs}");
    env.cleanup().await;
}
