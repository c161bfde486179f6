//! The dashboard without a browser: nothing is shown without a key, sign-in
//! takes only keys that can read, the session cookie is HttpOnly and
//! SameSite=Strict, pages carry no scripts and nothing from elsewhere, and a
//! revoked key or a sign-out ends the session. (The browser test is in
//! `custody-cli/tests/browser.rs`.)

mod common;

use common::*;
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::json;

struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

impl Browser {
    fn new(t: &TestServer) -> Self {
        let http = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
        Self { http, base: t.base.clone(), cookie: None }
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            request = request.header("cookie", c);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    }

    async fn sign_in(&mut self, key: &str) -> StatusCode {
        let response = self
            .http
            .post(format!("{}/signin", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("key={key}"))
            .send()
            .await
            .unwrap();
        if let Some(set) = response.headers().get("set-cookie") {
            let set = set.to_str().unwrap().to_owned();
            assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
            self.cookie = Some(set.split(';').next().unwrap().to_owned());
        }
        response.status()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_open_without_a_key_and_the_pages_show_both_witnesses() {
    let t = TestServer::start().await;
    let event = json!({"workspace": "acme", "kind": "authz.decision",
        "principal": {"type": "agent", "id": "agent:support"}, "action": "email.send",
        "resource": {"type": "email", "id": "c@example.com"}, "decision": "allow", "action_id": "act-1",
        "session": {"session_id": "sess-1", "process_id": "root"}});
    let (status, _) = t.post(ADMIN, "/api/v1/audit/events", event.to_string()).await;
    assert_eq!(status, StatusCode::CREATED);
    let record = json!({"workspace": "acme", "kind": "model_call", "session_id": "sess-1", "process_id": "root",
        "agent_name": "support", "provider": "openai", "model": "gpt-4o", "started_at": "2026-12-01T10:00:00Z",
        "input": [{"role": "user", "content": "<script>alert(1)</script>"}], "action_ids": ["act-1"]});
    let (status, body) = t.traces(ADMIN, &[record]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["ids"][0].as_str().unwrap().to_owned();

    let mut b = Browser::new(&t);
    for path in ["/", "/audit?workspace=acme", "/actions/act-1?workspace=acme", "/sessions/sess-1?workspace=acme"] {
        let (status, html) = b.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(html.contains("Sign in") && !html.contains("act-1") && !html.contains("gpt-4o"), "{path}: {html}");
    }
    assert_eq!(b.sign_in("cust_nope_nope").await, StatusCode::UNAUTHORIZED);
    let writer = t.key("acme", "trace:write").await;
    assert_eq!(b.sign_in(&writer).await, StatusCode::FORBIDDEN, "a key that cannot read does not sign in");
    assert!(b.cookie.is_none());
    let reader = t.key("acme", "read").await;
    assert_eq!(b.sign_in(&reader).await, StatusCode::SEE_OTHER);

    let (status, home) = b.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(home.contains("acme") && home.contains("Verify now"), "{home}");
    let (_, audit) = b.get("/audit?workspace=acme&principal=agent:support").await;
    assert!(audit.contains("/actions/act-1?workspace=acme"), "{audit}");
    let (_, chain) = b.get("/actions/act-1?workspace=acme").await;
    assert!(chain.contains("Audit log") && chain.contains("Trace store") && chain.contains("gpt-4o"), "{chain}");
    let (_, call) = b.get(&format!("/calls/{id}?workspace=acme")).await;
    assert!(call.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "prompt content is escaped: {call}");
    for page in [&home, &audit, &chain, &call] {
        assert!(!page.contains("<script"), "no scripts");
        assert!(!page.contains("src=\"http") && !page.contains("href=\"http"), "nothing from elsewhere");
    }
    let (_, tree) = b.get("/sessions/sess-1?workspace=acme").await;
    assert!(tree.contains("support") && tree.contains("subtree"), "{tree}");
    let (status, _) = b.get("/audit?workspace=other").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a key of acme reads no other workspace");

    // Signing out ends that session only.
    let mut other = Browser::new(&t);
    assert_eq!(other.sign_in(&reader).await, StatusCode::SEE_OTHER);
    let response = other
        .http
        .post(format!("{}/signout", t.base))
        .header("cookie", other.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, html) = other.get("/audit?workspace=acme").await;
    assert!(html.contains("Sign in") && !html.contains("act-1"), "signed out: {html}");
    let (_, html) = b.get("/audit?workspace=acme").await;
    assert!(html.contains("act-1"), "the first session is still open");

    // Revoking the key ends its sessions.
    let id = reader.split('_').nth(1).unwrap();
    t.client(ADMIN).revoke_key(id).await.unwrap();
    let (_, html) = b.get("/audit?workspace=acme").await;
    assert!(html.contains("no longer valid") && !html.contains("act-1"), "{html}");
}
