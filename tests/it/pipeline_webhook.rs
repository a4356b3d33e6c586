//! The webhook sender against a real HTTP receiver on 127.0.0.1.

use crate::support;

use std::time::Duration;

use crate::support::webhook_receiver::WebhookReceiver;
use crate::support::within;
use scriptd::dispatch::SendError;
use scriptd::dispatch::webhook::WebhookSender;
use scriptd::secret::Secret;
use serde_json::json;

fn payload() -> serde_json::Value {
    json!({"reaction": "webhook", "delivery_id": "occ-1:7:hook", "camera_id": 17, "text": "Zoë ✓"})
}

/// The per-attempt deadline of the ordinary cases.
const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn signed_post_arrives_and_verifies() {
    let rx = WebhookReceiver::start(Some("s3cret")).await;
    let sender = WebhookSender::new(Duration::from_secs(5)).unwrap();
    let secret = Secret::new("s3cret");
    within(10, "send", sender.send(&rx.url(), Some(&secret), &payload(), T)).await.unwrap();
    let got = rx.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].signature_valid, "signature {:?}", got[0].signature);
    assert_eq!(got[0].json(), payload());
}

#[tokio::test]
async fn without_a_secret_there_is_no_signature() {
    let rx = WebhookReceiver::start(None).await;
    let sender = WebhookSender::new(Duration::from_secs(5)).unwrap();
    within(10, "send", sender.send(&rx.url(), None, &payload(), T)).await.unwrap();
    let got = rx.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].signature, None);
}

#[tokio::test]
async fn a_500_then_200_is_retryable_then_delivered() {
    let rx = WebhookReceiver::start(Some("k")).await;
    rx.push_status(500);
    let sender = WebhookSender::new(Duration::from_secs(5)).unwrap();
    let secret = Secret::new("k");
    let first = within(10, "first", sender.send(&rx.url(), Some(&secret), &payload(), T)).await;
    assert!(matches!(first, Err(SendError::Retryable { .. })), "{first:?}");
    within(10, "retry", sender.send(&rx.url(), Some(&secret), &payload(), T)).await.unwrap();
    let got = rx.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got.iter().map(|r| r.status).collect::<Vec<_>>(), vec![500, 200]);
    assert!(got.iter().all(|r| r.signature_valid));
}

#[tokio::test]
async fn client_errors_are_permanent() {
    let rx = WebhookReceiver::start(None).await;
    rx.push_status(404);
    let sender = WebhookSender::new(Duration::from_secs(5)).unwrap();
    let r = within(10, "send", sender.send(&rx.url(), None, &payload(), T)).await;
    assert!(matches!(r, Err(SendError::Permanent { .. })), "{r:?}");
}

#[tokio::test]
async fn a_dead_endpoint_is_retryable_without_the_url() {
    let port = support::free_port();
    let sender = WebhookSender::new(Duration::from_secs(2)).unwrap();
    let url = format!("http://127.0.0.1:{port}/hook?token=topsecret");
    let r = within(10, "send", sender.send(&url, None, &payload(), T)).await;
    match r {
        Err(SendError::Retryable { reason, .. }) => {
            assert!(!reason.contains("topsecret"), "{reason}")
        }
        other => panic!("expected retryable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_hung_endpoint_times_out_as_retryable() {
    // A listener that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    // The deadline given per attempt (`webhook.timeout_seconds`, live) bounds the request,
    // whatever the client was built with.
    let sender = WebhookSender::new(Duration::from_secs(60)).unwrap();
    let url = format!("http://127.0.0.1:{port}/h");
    let started = std::time::Instant::now();
    let r =
        within(10, "send", sender.send(&url, None, &payload(), Duration::from_millis(500))).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    hold.abort();
    assert!(matches!(r, Err(SendError::Retryable { .. })), "{r:?}");
}
