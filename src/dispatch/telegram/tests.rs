use super::*;

fn sender(limits: RateLimits) -> TelegramSender {
    TelegramSender::new("http://127.0.0.1:9/", Duration::from_secs(1), limits).unwrap()
}

#[test]
fn debug_shows_no_token() {
    let s = sender(RateLimits::default());
    let _ = s.reserve("123:very-secret", "1", Instant::now()).unwrap();
    let d = format!("{s:?}");
    assert!(!d.contains("very-secret"), "{d}");
    assert!(d.contains("bots: 1"), "{d}");
}

#[test]
fn recipients() {
    assert!(matches!(recipient("123"), Ok(Recipient::Id(ChatId(123)))));
    assert!(matches!(recipient("-100123"), Ok(Recipient::Id(ChatId(-100123)))));
    assert!(matches!(recipient("@news"), Ok(Recipient::ChannelUsername(_))));
    assert!(recipient("news").is_err());
    assert!(recipient("").is_err());
}

#[test]
fn clip_keeps_short_text_and_cuts_long_text() {
    assert_eq!(clip_chars("héllo", 5), "héllo");
    let c = clip_chars(&"é".repeat(2000), 1024);
    assert_eq!(c.chars().count(), 1024);
    assert!(c.ends_with('…'));
}

#[tokio::test]
async fn per_chat_spacing_and_per_token_rate() {
    let s = sender(RateLimits::default());
    let t0 = Instant::now();
    let (_, a) = s.reserve("tok", "1", t0).unwrap();
    let (_, b) = s.reserve("tok", "1", t0).unwrap();
    let (_, c) = s.reserve("tok", "2", t0).unwrap();
    assert_eq!(a, t0);
    assert_eq!(b, t0 + Duration::from_secs(1), "1/s per chat");
    assert!(
        c > t0 && c < t0 + Duration::from_millis(100),
        "another chat only waits for the token budget"
    );
    let (_, d) = s.reserve("other", "1", t0).unwrap();
    assert_eq!(d, t0, "another token has its own budget");
    // 30 chats at once: spread over about a second, at least 1/30 s apart.
    let mut slots: Vec<Instant> =
        (0..30).map(|i| s.reserve("burst", &format!("{i}"), t0).unwrap().1).collect();
    slots.sort();
    for w in slots.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_secs(1) / 30);
    }
    assert!(slots[29] - t0 < Duration::from_secs(1));
}

#[tokio::test]
async fn groups_get_20_per_minute_and_long_waits_are_returned() {
    let limits = RateLimits {
        per_chat_interval: Duration::ZERO,
        max_wait: Duration::from_secs(120),
        ..RateLimits::default()
    };
    let s = sender(limits);
    let t0 = Instant::now();
    let mut last = t0;
    for _ in 0..20 {
        last = s.reserve("tok", "-42", t0).unwrap().1;
    }
    assert!(last < t0 + Duration::from_secs(1));
    let (_, next) = s.reserve("tok", "-42", t0).unwrap();
    assert!(next >= t0 + Duration::from_secs(60), "21st message waits for the window");

    let s = sender(RateLimits { per_chat_interval: Duration::ZERO, ..RateLimits::default() });
    for _ in 0..20 {
        let _ = s.reserve("tok", "-42", t0).unwrap();
    }
    match s.reserve("tok", "-42", t0) {
        Err(SendError::NotYet { after, .. }) => {
            assert!(after > Duration::from_secs(55), "{after:?}")
        }
        other => panic!("expected not yet with after, got {other:?}"),
    }
}

#[tokio::test]
async fn private_chats_follow_per_chat_per_minute() {
    let limits = RateLimits {
        per_chat_interval: Duration::ZERO,
        per_chat_per_minute: 5,
        max_wait: Duration::from_secs(120),
        ..RateLimits::default()
    };
    let s = sender(limits.clone());
    let t0 = Instant::now();
    for _ in 0..5 {
        let (_, at) = s.reserve("tok", "42", t0).unwrap();
        assert!(at < t0 + Duration::from_secs(1));
    }
    let (_, sixth) = s.reserve("tok", "42", t0).unwrap();
    assert!(sixth >= t0 + Duration::from_secs(60), "the 6th waits for the minute");
    // Another chat has its own window; a group gets the lower of the two limits.
    let (_, other) = s.reserve("tok", "43", t0).unwrap();
    assert!(other < t0 + Duration::from_secs(1));
    let s = sender(RateLimits { per_group_per_minute: 3, ..limits });
    for _ in 0..3 {
        let _ = s.reserve("tok", "-7", t0).unwrap();
    }
    let (_, fourth) = s.reserve("tok", "-7", t0).unwrap();
    assert!(fourth >= t0 + Duration::from_secs(60), "groups: min(per chat, per group)");
}
