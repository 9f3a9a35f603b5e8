//! The console driven in a real browser (Debian's headless Chromium through
//! ChromeDriver): log in, see a group, filter, open a row, reveal, replay
//! one and see it marked replayed; hostile markup from a provider and from
//! a job shown as text with no script run; a cross-site form refused.
//! CI installs `chromium` and `chromium-driver` when they are missing.

use super::console::TOKEN;
use crate::support::*;
use axum::{Router, response::Html, routing::get};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Markup a provider or a job might carry; each would set `window.__xss`.
const HOSTILE_ANSWER: &str = r#"{"error":{"code":"invalid_api_key","message":"<script>window.__xss='answer'</script><img src=x onerror=\"window.__xss='img'\">"}}"#;

/// A browser session and the ChromeDriver behind it; both go at drop.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "the browser tests need Debian's chromium and chromium-driver: apt-get install chromium chromium-driver (.ci/run does)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }))
        .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let client = eventually("chromedriver session", Duration::from_secs(30), || async {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
                .ok()
        })
        .await;
        Self {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Fills the login form the page shows with the token and sends it.
    async fn log_in(&self) {
        self.client
            .find(Locator::Css("input[name=token]"))
            .await
            .expect("the login form")
            .send_keys(TOKEN)
            .await
            .unwrap();
        self.click("form[action='/console/login'] button").await;
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Clicks what leads to another page, and waits until the page shown
    /// is no longer this one (the click may return while it loads).
    async fn click(&self, css: &str) {
        let page = self.client.find(Locator::Css("html")).await.unwrap();
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // The old page's root goes stale once the new one replaced it.
        while page.tag_name().await.is_ok() {
            assert!(Instant::now() < deadline, "{css}: no new page within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the page shown is one whose address holds `part` (a
    /// form's submission may still be loading when the click returns).
    async fn wait_url(&self, part: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.client.current_url().await.unwrap().to_string();
            if url.contains(part) {
                // The new page's document is the one now queried.
                self.client
                    .wait()
                    .for_element(Locator::Css("body"))
                    .await
                    .unwrap();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited 10 s for a page at *{part}*, still at {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// No script ran and no element that could run one was made.
    async fn assert_inert(&self, page: &str) {
        let ran = self
            .client
            .execute(
                "return [window.__xss === undefined ? null : String(window.__xss), \
                 document.scripts.length, document.images.length, document.querySelectorAll('[onerror]').length];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            ran,
            json!([null, 0, 0, 0]),
            "{page}: [xss, scripts, images, onerror]"
        );
    }

    async fn wait_text(&self, css: &str, want: &str) -> String {
        eventually(
            &format!("{css} shows {want}"),
            Duration::from_secs(20),
            || async {
                let found = self.client.find(Locator::Css(css)).await.ok()?;
                let text = found.text().await.ok()?;
                text.contains(want).then_some(text)
            },
        )
        .await
    }
}

/// A worker with the console on, two SMS jobs dead-lettered by an auth
/// failure whose answer holds markup, and an invalid job whose id and
/// sender are markup.
async fn setup(env: &TestEnv) -> (TestWorker, FakeProvider, FakeProvider) {
    let email = FakeProvider::accepting().await;
    let sms = FakeProvider::start(|_| Reply::status(401, HOSTILE_ANSWER)).await;
    let worker = env
        .worker(
            &email,
            &sms,
            &["--auth-pause-secs", "0", "--console-token", TOKEN],
        )
        .await;
    env.publish("sms", &sms_job("otp-1", "+919876543210")).await;
    env.publish("sms", &sms_job("otp-2", "+919876543211")).await;
    let hostile = json!({"id": "<script>window.__xss='id'</script>", "from": "<img src=x onerror=\"window.__xss='from'\">", "message": "no recipient"});
    env.publish("sms", hostile.to_string().as_bytes()).await;
    env.wait_rows(3).await;
    (worker, email, sms)
}

#[tokio::test]
async fn an_operator_logs_in_finds_the_cause_opens_a_row_and_replays_it() {
    let env = TestEnv::new().await;
    let (worker, _email, _sms) = setup(&env).await;
    let b = Browser::start().await;
    let base = worker.admin_url();

    // Not logged in: the login form, no data.
    b.client.goto(&format!("{base}/console")).await.unwrap();
    assert_eq!(b.text("h1").await, "Log in");
    assert!(!b.client.source().await.unwrap().contains("otp-1"));
    b.log_in().await;

    // Groups first: the auth failures, with the fix.
    let group = b.wait_text("tr.group", "invalid_api_key").await;
    assert!(group.contains("verify the key"), "{group}");
    b.assert_inert("console").await;
    // The hostile job id and sender are listed as text.
    let list = b.text("#dead-letters").await;
    assert!(
        list.contains("<script>window.__xss='id'</script>"),
        "{list}"
    );

    // Filter by the group: its two rows.
    let group_link = "tr.group a";
    let groups = b.client.find_all(Locator::Css("tr.group")).await.unwrap();
    let mut clicked = false;
    for g in groups {
        if g.text().await.unwrap().contains("invalid_api_key") {
            g.find(Locator::Css("a"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            clicked = true;
            break;
        }
    }
    assert!(clicked, "{group_link}");
    b.wait_url("code=invalid_api_key").await;
    assert!(
        b.client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("code=invalid_api_key")
    );
    let rows = b.client.find_all(Locator::Css("tr.row")).await.unwrap();
    assert_eq!(rows.len(), 2);

    // The filter form narrows further: the state field, then Filter.
    b.client
        .find(Locator::Css("#filter select[name=channel]"))
        .await
        .unwrap()
        .select_by_value("sms")
        .await
        .unwrap();
    b.click("#filter button").await;
    b.wait_url("channel=sms").await;
    assert_eq!(
        b.client
            .find_all(Locator::Css("tr.row"))
            .await
            .unwrap()
            .len(),
        2
    );

    // Open one: masked, the provider's markup as text.
    b.click("tr.row td:nth-child(2) a").await;
    let answer = b.text("#provider-response").await;
    assert!(
        answer.contains("<script>window.__xss='answer'</script>"),
        "{answer}"
    );
    assert!(answer.contains("<img src=x onerror="), "{answer}");
    let payload = b.text("#payload").await;
    assert!(payload.contains("+9198******1"), "{payload}");
    assert!(!payload.contains("482910"), "{payload}");
    assert!(b.text("#fix").await.contains("verify the key"));
    b.assert_inert("detail").await;

    // Reveal: logged and counted; still inert.
    b.click("#reveal").await;
    assert!(b.text("#revealed").await.contains("logged"));
    assert!(b.text("#payload").await.contains("482910"));
    b.assert_inert("revealed detail").await;
    assert_eq!(
        worker.metric("notify_console_reveals_total").await,
        Some(1.0)
    );
    let detail_url = b.client.current_url().await.unwrap().to_string();

    // Replay it: the confirmation states the count and the pace.
    b.click("#replay-one button").await;
    assert_eq!(b.text("#count").await, "1");
    assert!(b.text("#confirm-text").await.contains("a second"));
    b.click("#confirm").await;
    b.wait_text("#replay-state", "done").await;
    b.client.goto(&detail_url).await.unwrap();
    assert!(
        b.text("#state").await.starts_with("replayed at"),
        "marked replayed"
    );
    b.client
        .goto(&format!("{base}/console?state=replayed"))
        .await
        .unwrap();
    assert_eq!(
        b.client
            .find_all(Locator::Css("tr.row"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(b.text("tr.row td.state").await, "replayed");

    b.client.close().await.unwrap();
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_form_posted_from_another_site_is_refused_with_the_session_cookie_sent() {
    let env = TestEnv::new().await;
    let (worker, _email, _sms) = setup(&env).await;
    let b = Browser::start().await;
    let base = worker.admin_url();
    b.client.goto(&format!("{base}/console")).await.unwrap();
    b.log_in().await;
    b.wait_text("tr.group", "invalid_api_key").await;
    let open = |db: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")
            .fetch_one(&db)
            .await
            .unwrap()
    };
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM dead_letters ORDER BY id")
        .fetch_all(&env.db)
        .await
        .unwrap();

    // Another origin on the same host: the same site, so the SameSite
    // cookie goes along; the console must refuse it by origin.
    let attack = format!(
        r#"<!doctype html><form id=f method=post action="{base}/console/replay">
        <input name=ids value="{}"><input name=upto value="{}"><input name=rate value=100></form>
        <script>document.getElementById('f').submit()</script>"#,
        ids[0], ids[2]
    );
    let app = Router::new().route("/", get(move || async move { Html(attack.clone()) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    b.client.goto(&evil).await.unwrap();
    let refused = b.wait_text("body", "refused").await;
    assert!(refused.contains("cross-site request refused"), "{refused}");
    assert_eq!(open(env.db.clone()).await, 3, "nothing replayed");
    // Back on the console, the same session still works.
    b.client.goto(&format!("{base}/console")).await.unwrap();
    assert_eq!(b.text("h1").await, "Dead letters");

    b.client.close().await.unwrap();
    worker.stop().await;
    env.cleanup().await;
}
