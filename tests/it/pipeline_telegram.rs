//! The Telegram sender against a local Bot API stub: chat and text, sendPhoto, order and
//! spacing per chat, 429 with retry_after, permanent 400/401/403 without retries, a bad
//! token that is not hammered, a hung server that does not block other chats, and no
//! token in any error text.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::telegram_stub::{Answer, TelegramStub};
use crate::support::within;
use scriptd::delivery::message_text;
use scriptd::dispatch::SendError;
use scriptd::dispatch::telegram::{RateLimits, TelegramSender};
use scriptd::secret::Secret;

const TOKEN: &str = "123456:ABC-secret-token";

fn token() -> Secret {
    Secret::new(TOKEN)
}

fn fast_limits() -> RateLimits {
    RateLimits { per_chat_interval: Duration::from_millis(200), ..RateLimits::default() }
}

fn sender(stub: &TelegramStub, timeout: Duration, limits: RateLimits) -> Arc<TelegramSender> {
    // A trailing slash must not produce `//bot...`.
    Arc::new(TelegramSender::new(&format!("{}/", stub.api_url()), timeout, limits).unwrap())
}

fn assert_no_token(e: &SendError) {
    assert!(!e.reason().contains(TOKEN), "token leaked: {e}");
    assert!(!format!("{e:?}").contains(TOKEN), "token leaked: {e:?}");
}

#[tokio::test]
async fn sends_the_text_to_the_chat() {
    let stub = TelegramStub::start().await;
    let s = sender(&stub, Duration::from_secs(5), fast_limits());
    let text = message_text("Gate", "Line crossing", 17, "2026-11-27 16:30:05 +05", None);
    within(10, "send", s.send(&token(), "123", &text, None)).await.unwrap();
    let got = stub.recorded();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method.to_ascii_lowercase(), "sendmessage");
    assert_eq!(got[0].token, TOKEN);
    assert_eq!(got[0].chat_id, "123");
    assert_eq!(got[0].text.as_deref(), Some(text.as_str()));
}

#[tokio::test]
async fn a_snapshot_becomes_send_photo_with_a_caption() {
    let stub = TelegramStub::start().await;
    let s = sender(&stub, Duration::from_secs(5), fast_limits());
    let url = "https://vms.local/snapshots/abc.jpg";
    within(10, "send", s.send(&token(), "-1001", "caption text", Some(url))).await.unwrap();
    let got = stub.recorded();
    assert_eq!(got[0].method.to_ascii_lowercase(), "sendphoto");
    assert_eq!(got[0].chat_id, "-1001");
    assert_eq!(got[0].photo.as_deref(), Some(url));
    assert_eq!(got[0].caption.as_deref(), Some("caption text"));
}

#[tokio::test]
async fn a_refused_snapshot_falls_back_to_the_text_with_the_link() {
    let stub = TelegramStub::start().await;
    let s = sender(&stub, Duration::from_secs(5), fast_limits());
    stub.answer_for_chat("8", Answer::BadPhoto);
    let url = "https://vms.local/snapshots/gone.jpg";
    within(10, "send", s.send(&token(), "8", "Gate", Some(url))).await.unwrap();
    let got = stub.recorded();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].method.to_ascii_lowercase(), "sendphoto");
    assert_eq!(got[1].method.to_ascii_lowercase(), "sendmessage");
    assert_eq!(got[1].text.as_deref(), Some(format!("Gate\n{url}").as_str()));
}

#[tokio::test]
async fn messages_to_one_chat_leave_in_order_and_spaced() {
    let stub = TelegramStub::start().await;
    let s = sender(&stub, Duration::from_secs(5), fast_limits());
    for i in 0..5 {
        within(10, "send", s.send(&token(), "77", &format!("m{i}"), None)).await.unwrap();
    }
    let got = stub.recorded();
    let texts: Vec<_> = got.iter().map(|r| r.text.clone().unwrap()).collect();
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4"]);
    // Paced 200 ms apart when sent; measured on arrival, where a loaded machine may delay
    // one request more than the next (unpaced, they would arrive ~1 ms apart).
    for w in got.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(gap >= Duration::from_millis(150), "messages to one chat {gap:?} apart");
    }
}

#[tokio::test]
async fn retry_after_is_returned_and_honoured_for_that_chat() {
    let stub = TelegramStub::start().await;
    let s = sender(&stub, Duration::from_secs(5), fast_limits());
    stub.answer_for_chat("5", Answer::RetryAfter(2));
    let r = within(10, "send", s.send(&token(), "5", "first", None)).await;
    match &r {
        Err(SendError::Retryable { after: Some(after), .. }) => {
            assert_eq!(*after, Duration::from_secs(2))
        }
        other => panic!("expected retryable after 2 s, got {other:?}"),
    }
    assert_no_token(r.as_ref().unwrap_err());
    // The retry waits for retry_after instead of hitting the server again at once.
    within(10, "retry", s.send(&token(), "5", "first", None)).await.unwrap();
    let got = stub.recorded();
    assert_eq!(got.len(), 2);
    assert!(got[1].at - got[0].at >= Duration::from_millis(1900), "{:?}", got[1].at - got[0].at);
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let stub = TelegramStub::start().await;
    let s = sender(&stub, Duration::from_secs(5), fast_limits());
    stub.answer_for_chat("400", Answer::ChatNotFound);
    stub.answer_for_chat("403", Answer::Blocked);
    for chat in ["400", "403"] {
        let r = within(10, "send", s.send(&token(), chat, "x", None)).await;
        match &r {
            Err(e @ SendError::Permanent { .. }) => assert_no_token(e),
            other => panic!("chat {chat}: expected permanent, got {other:?}"),
        }
    }
    assert_eq!(stub.recorded().len(), 2, "one request each, no retries inside the sender");
}

#[tokio::test]
async fn a_bad_token_is_not_hammered() {
    let stub = TelegramStub::start().await;
    let s = sender(&stub, Duration::from_secs(5), fast_limits());
    stub.answer_next(Answer::Unauthorized);
    let first = within(10, "send", s.send(&token(), "1", "x", None)).await;
    assert!(matches!(first, Err(SendError::Permanent { .. })), "{first:?}");
    assert_no_token(first.as_ref().unwrap_err());
    for chat in ["1", "2", "3", "4", "5"] {
        let r = within(2, "send", s.send(&token(), chat, "x", None)).await;
        assert!(matches!(r, Err(SendError::Permanent { .. })), "{r:?}");
    }
    assert_eq!(stub.recorded().len(), 1, "the rejected token was asked once");
    // Another token of another script is unaffected.
    within(10, "send", s.send(&Secret::new("999:other"), "1", "x", None)).await.unwrap();
}

#[tokio::test]
async fn a_hung_server_times_out_and_does_not_block_other_chats() {
    let stub = TelegramStub::start().await;
    let s = sender(&stub, Duration::from_millis(800), fast_limits());
    stub.answer_for_chat("10", Answer::Hang);
    let hung = {
        let s = s.clone();
        tokio::spawn(async move { s.send(&token(), "10", "stuck", None).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    within(10, "other chat", s.send(&token(), "11", "free", None)).await.unwrap();
    assert!(t0.elapsed() < Duration::from_millis(500), "other chat waited {:?}", t0.elapsed());
    let r = within(10, "hung send", hung).await.unwrap();
    match &r {
        Err(e @ SendError::Retryable { .. }) => assert_no_token(e),
        other => panic!("expected retryable timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_error_is_retryable_within_the_timeout() {
    let stub = TelegramStub::start().await;
    let s = sender(&stub, Duration::from_millis(800), fast_limits());
    stub.answer_next(Answer::ServerError);
    let t0 = Instant::now();
    let r = within(10, "send", s.send(&token(), "1", "x", None)).await;
    assert!(matches!(r, Err(SendError::Retryable { .. })), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
    // A server that stalls 10 s before its 500: the 800 ms request timeout ends the wait.
    stub.answer_next(Answer::LateServerError(Duration::from_secs(10)));
    let t0 = Instant::now();
    let r = within(10, "send to a stalled server", s.send(&token(), "1", "x", None)).await;
    assert!(matches!(r, Err(SendError::Retryable { .. })), "{r:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "the timeout did not end the stall: {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn an_unreachable_api_is_retryable_without_the_token() {
    let port = support::free_port();
    let s = TelegramSender::new(
        &format!("http://127.0.0.1:{port}"),
        Duration::from_secs(2),
        fast_limits(),
    )
    .unwrap();
    let r = within(10, "send", s.send(&token(), "1", "x", None)).await;
    match &r {
        Err(e @ SendError::Retryable { .. }) => assert_no_token(e),
        other => panic!("expected retryable, got {other:?}"),
    }
}
