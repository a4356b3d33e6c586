use super::validate::{check_http_url, check_topic_filter};
use super::*;

#[test]
fn levels() {
    assert!(check_level("info").is_ok());
    assert!(check_level("warn,scriptd::dispatch=debug").is_ok());
    assert!(check_level("scriptd=trace").is_ok());
    assert!(check_level("warning").is_err());
    assert!(check_level("info,scriptd=loud").is_err());
}

#[test]
fn defaults_validate() {
    assert_eq!(Settings::default().validate(), Vec::<(String, String)>::new());
}

#[test]
fn channel_budgets_split_max_in_flight_unless_set() {
    let d = |m, p, t, w| DeliverySettings {
        max_in_flight: m,
        push_max_in_flight: p,
        telegram_max_in_flight: t,
        webhook_max_in_flight: w,
        ..DeliverySettings::default()
    };
    let b = |push, telegram, webhook| Ok(ChannelBudgets { push, telegram, webhook });
    assert_eq!(d(100, 0, 0, 0).budgets(), b(50, 25, 25));
    assert_eq!(d(3, 0, 0, 0).budgets(), b(1, 1, 1));
    let seven = d(7, 0, 0, 0).budgets().unwrap();
    assert_eq!(seven.push + seven.telegram + seven.webhook, 7);
    assert_eq!(d(100, 0, 0, 10).budgets(), b(60, 30, 10));
    assert_eq!(d(100, 10, 20, 30).budgets(), b(10, 20, 30), "all set: the rest stays unused");
    let (key, why) = d(50, 40, 0, 20).budgets().unwrap_err();
    assert_eq!(key, "delivery.webhook_max_in_flight");
    assert!(why.contains("exceed delivery.max_in_flight (50)"), "{why}");
    let (key, _) = d(2, 0, 0, 0).budgets().unwrap_err();
    assert_eq!(key, "delivery.push_max_in_flight");
    let mut s = Settings::default();
    s.delivery.breaker_probe_seconds = 0;
    s.delivery.webhook_max_in_flight = 200;
    let keys: Vec<String> = s.validate().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["delivery.webhook_max_in_flight", "delivery.breaker_probe_seconds"]);
}

#[test]
fn lease_seconds_is_5_to_3600_and_named_when_not() {
    assert_eq!(Settings::default().delivery.lease(), Duration::from_secs(30));
    for (v, ok) in [(4, false), (5, true), (3600, true), (3601, false), (0, false)] {
        let mut s = Settings::default();
        s.delivery.lease_seconds = v;
        let errors = s.validate();
        if ok {
            assert!(errors.is_empty(), "{v}: {errors:?}");
        } else {
            assert_eq!(errors.len(), 1, "{v}: {errors:?}");
            assert_eq!(errors[0].0, "delivery.lease_seconds");
            assert!(errors[0].1.contains("5–3600"), "{}", errors[0].1);
        }
    }
}

#[test]
fn synchronous_is_normal_or_full() {
    let parse = |text: &str| {
        Config::builder()
            .add_source(File::from_str(text, FileFormat::Toml))
            .build()
            .and_then(Config::try_deserialize::<Settings>)
    };
    let s = parse("[database]\nsynchronous = \"full\"").unwrap();
    assert_eq!(s.database.synchronous, crate::store::Synchronous::Full);
    assert_eq!(parse("").unwrap().database.synchronous, crate::store::Synchronous::Normal);
    let e = parse("[database]\nsynchronous = \"off\"").unwrap_err().to_string();
    assert!(e.contains("off") && e.contains("database.synchronous"), "{e}");
}

#[test]
fn retry_policy_doubles_and_caps() {
    let p = DeliverySettings::default().retry_policy();
    assert_eq!(p.delay(1), Duration::from_millis(500));
    assert_eq!(p.delay(2), Duration::from_millis(1000));
    assert_eq!(p.delay(40), Duration::from_millis(300_000));
    assert!(!p.exhausted(1_000_000));
    let capped = RetryPolicy { max_attempts: 3, ..p };
    assert!(!capped.exhausted(2));
    assert!(capped.exhausted(3));
}

#[test]
fn topic_filters() {
    assert!(check_topic_filter("vms/analytics/events/#").is_ok());
    assert!(check_topic_filter("$share/scriptd/vms/+/events/#").is_ok());
    assert!(check_topic_filter("a/#/b").is_err());
    assert!(check_topic_filter("a/b+").is_err());
    assert!(check_topic_filter("").is_err());
}

#[test]
fn urls() {
    assert!(check_http_url("https://api.telegram.org").is_ok());
    assert!(check_http_url("http://127.0.0.1:8081").is_ok());
    assert!(check_http_url("ftp://x").is_err());
    assert!(check_http_url("https://").is_err());
    assert!(check_http_url("https://api.telegram.org/").is_err());
}

#[test]
fn live_keys() {
    assert!(is_live_key("log.level"));
    assert!(is_live_key("telegram.api_url"));
    assert!(is_live_key("delivery.backoff_max_ms"));
    assert!(!is_live_key("delivery.max_in_flight"));
    assert!(!is_live_key("log.format"));
    assert!(!is_live_key("mqtt.port"));
}

/// Settings where every key differs from the defaults.
fn all_changed() -> Settings {
    Settings {
        timezone: Timezone(chrono_tz::Europe::Berlin),
        database: DatabaseSettings {
            path: "x.db".into(),
            url: Some(DatabaseUrl::new("postgresql://u@h/d")),
            password: Some(Secret::new("p")),
            password_file: Some("pw".into()),
            ca_file: Some("ca.pem".into()),
            busy_timeout_ms: 1,
            synchronous: crate::store::Synchronous::Full,
        },
        mqtt: MqttSettings {
            host: "h".into(),
            port: 2,
            client_id: "c".into(),
            username: Some("u".into()),
            password: Some(Secret::new("p")),
            password_file: Some("pw".into()),
            events_topic: "e/#".into(),
            push_topic_prefix: "p".into(),
            embedded_broker: true,
            keep_alive_seconds: 6,
            reconnect_min_ms: 1,
            reconnect_max_ms: 2,
            inflight: 3,
            protocol: MqttProtocol::V311,
            tls: MqttTlsSettings {
                enabled: true,
                ca_file: Some("ca.pem".into()),
                client_cert_file: Some("c.pem".into()),
                client_key_file: Some("k.pem".into()),
                server_name: Some("broker".into()),
            },
        },
        api: ApiSettings {
            bind: SocketAddr::from(([127, 0, 0, 1], 9)),
            max_connections: 40,
            max_streams: 30,
            max_streams_per_token: 2,
            header_read_timeout_seconds: 4,
            request_timeout_seconds: 5,
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            auth_failures_per_minute: 0,
            auth_block_seconds: 6,
            tls: ApiTlsSettings::default(),
        },
        telegram: TelegramSettings {
            api_url: "http://t".into(),
            request_timeout_seconds: 1,
            per_chat_per_second: 2,
            per_chat_per_minute: 3,
            per_token_per_second: 4,
            per_group_per_minute: 5,
        },
        webhook: WebhookSettings { timeout_seconds: 1 },
        events: EventsSettings { max_age_seconds: 1, max_payload_bytes: 2048 },
        delivery: DeliverySettings {
            max_in_flight: 1,
            max_attempts: 2,
            backoff_initial_ms: 3,
            backoff_max_ms: 4,
            retention_hours: 5,
            shutdown_deadline_seconds: 6,
            push_max_in_flight: 7,
            telegram_max_in_flight: 8,
            webhook_max_in_flight: 9,
            per_target_max_in_flight: 10,
            breaker_after_timeouts: 11,
            breaker_probe_seconds: 12,
            lease_seconds: 13,
            expire_after_seconds: ExpireAfter { push: 7, telegram: 8, webhook: 9 },
        },
        log: LogSettings { format: LogFormat::Json, level: "debug".into() },
    }
}

#[test]
fn with_live_from_copies_exactly_the_live_keys() {
    let old = Settings::default();
    let new = all_changed();
    let all = old.changed_keys(&new);
    assert_eq!(all.len(), 1 + 7 + 19 + 9 + 6 + 1 + 2 + 13 + 3 + 2, "{all:?}");
    let running = old.with_live_from(&new);
    let applied = old.changed_keys(&running);
    let pending = running.changed_keys(&new);
    assert!(applied.iter().all(|k| is_live_key(k)), "{applied:?}");
    assert!(pending.iter().all(|k| !is_live_key(k)), "{pending:?}");
    assert_eq!(applied.len() + pending.len(), all.len());
    assert_eq!(running.live_part(), new.live_part());
}

#[test]
fn masked_toml_reparses_to_the_same_settings() {
    // Every number and flag of every section off its default, so a key the TOML left out
    // (which would reparse to its default) shows.
    fn shift(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(fields) => fields.values_mut().for_each(shift),
            serde_json::Value::Bool(b) => *b = !*b,
            serde_json::Value::Number(n) => {
                *v = match (n.as_u64(), n.as_f64()) {
                    (Some(u), _) => serde_json::json!(u + 1),
                    (None, Some(f)) => serde_json::json!(f + 0.5),
                    _ => return,
                }
            }
            _ => {}
        }
    }
    let mut value = serde_json::to_value(Settings::default()).unwrap();
    shift(&mut value);
    let mut s: Settings = serde_json::from_value(value).unwrap();
    s.timezone = Timezone(chrono_tz::Europe::Berlin);
    s.mqtt.username = Some("user \"quoted\"".into());
    s.mqtt.password = Some(Secret::new("hunter2"));
    assert_ne!(s.delivery, Settings::default().delivery);
    let text = s.to_masked_toml();
    assert!(!text.contains("hunter2"), "{text}");
    let back: Settings = Config::builder()
        .add_source(File::from_str(&text, FileFormat::Toml))
        .build()
        .and_then(Config::try_deserialize)
        .map_err(|e| e.to_string())
        .unwrap();
    let mut expected = s.clone();
    expected.mqtt.password = Some(Secret::new(crate::secret::MASK));
    assert_eq!(back, expected, "{text}");
}

#[test]
fn masked_toml_with_mqtt_tls_reparses() {
    let mut s = Settings::default();
    s.mqtt.tls.enabled = true;
    s.mqtt.tls.ca_file = Some("/etc/scriptd/ca.pem".into());
    let text = s.to_masked_toml();
    assert!(text.contains("tls = { ca_file = \"/etc/scriptd/ca.pem\", enabled = true }"), "{text}");
    assert!(text.contains("# tls: unset client_cert_file, client_key_file, server_name"), "{text}");
    let back: Settings = Config::builder()
        .add_source(File::from_str(&text, FileFormat::Toml))
        .build()
        .and_then(Config::try_deserialize)
        .map_err(|e| e.to_string())
        .unwrap();
    assert_eq!(back.mqtt.tls, s.mqtt.tls);
}

#[test]
fn the_password_file_loses_one_trailing_newline_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw");
    let mut m = MqttSettings { password_file: Some(path.clone()), ..MqttSettings::default() };
    for (content, expected) in
        [("s3cret\n", "s3cret"), ("s3cret\r\n", "s3cret"), (" a b \n\n", " a b \n")]
    {
        std::fs::write(&path, content).unwrap();
        assert_eq!(m.read_password_file().unwrap().unwrap().expose(), expected);
    }
    std::fs::write(&path, "\n").unwrap();
    assert!(m.read_password_file().unwrap_err().contains("is empty"));
    m.password_file = Some(dir.path().join("missing"));
    let e = m.read_password_file().unwrap_err();
    assert!(e.contains("cannot read") && e.contains("missing"), "{e}");
}
