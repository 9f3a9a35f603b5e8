use super::*;
use crate::domain::ProviderCode;

#[test]
fn each_worker_has_its_own_series_all_present_from_the_start() {
    let a = Metrics::new();
    let b = Metrics::new();
    a.job_settled(Channel::Sms, Outcome::Sent);
    a.dead_lettered(
        Channel::Email,
        &ErrorCode::Provider(ProviderCode::parse("user 42 key sk_live_x").unwrap()),
    );
    let reason = PauseReason::Auth(ProviderCode::parse("invalid_api_key").unwrap());
    a.set_paused(Provider::MigoSmtp, Some(&reason));
    let held = a.hold_for_database();
    let a_text = a.render();
    assert!(
        a_text.contains("notify_dead_letter_writes_held 1"),
        "{a_text}"
    );
    drop(held);
    assert!(a.render().contains("notify_dead_letter_writes_held 0"));
    assert!(
        a.render()
            .contains("notify_dead_letter_oldest_held_seconds 0")
    );
    let a = a_text;
    assert!(
        a.contains(r#"notify_jobs_total{channel="sms",outcome="sent"} 1"#),
        "{a}"
    );
    assert!(a.contains(r#"notify_dead_letters_total{channel="email",error_code="other"} 1"#));
    assert!(
        !a.contains("sk_live_x"),
        "free-text codes never become labels"
    );
    assert!(
        a.contains(r#"notify_provider_paused{provider="migosmtp",reason="invalid_api_key"} 1"#)
    );
    assert!(a.contains(r#"notify_provider_paused{provider="migosmtp",reason="outage"} 0"#));
    assert!(a.contains("# HELP notify_jobs_total"));
    // The other worker saw none of it, yet shows every series at zero.
    let b = b.render();
    assert!(
        b.contains(r#"notify_jobs_total{channel="sms",outcome="sent"} 0"#),
        "{b}"
    );
    assert!(
        b.contains(r#"notify_provider_paused{provider="migosmtp",reason="invalid_api_key"} 0"#)
    );
}
