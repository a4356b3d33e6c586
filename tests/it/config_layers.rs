//! Layering and validation of the configuration (CONTRACT §3), through
//! `Settings::load_from` with a temporary directory and an explicit environment.

use std::path::Path;

use scriptd::secret::Secret;
use scriptd::settings::{Origin, Settings, SettingsError};

use crate::support::write_file;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Loads and expects exactly one problem; returns its (key, origin, message).
fn one_problem(dir: &Path, vars: &[(&str, &str)]) -> (String, Origin, String) {
    match Settings::load_from(dir, env(vars)) {
        Err(SettingsError::Invalid(ps)) => {
            assert_eq!(ps.len(), 1, "{ps:?}");
            let p = ps.into_iter().next().expect("one problem");
            (p.key, p.origin, p.message)
        }
        other => panic!("expected one problem, got {other:?}"),
    }
}

#[test]
fn an_empty_directory_gives_the_built_in_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, sources) = Settings::load_from(dir.path(), env(&[])).expect("loads");
    assert_eq!(s, Settings::default());
    assert!(sources.files.is_empty());
    assert_eq!(s.mqtt.port, 1883);
    assert_eq!(s.api.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(s.timezone.tz(), chrono_tz::UTC);
}

#[test]
fn the_shipped_default_toml_loads_and_turns_the_embedded_broker_on() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let (s, sources) = Settings::load_from(&dir, env(&[])).expect("config/default.toml loads");
    assert!(s.mqtt.embedded_broker);
    assert_eq!(sources.files, vec![dir.join("default.toml")]);
    // Apart from the embedded broker (and the MQTT version it speaks), default.toml
    // restates the built-in defaults.
    let mut expected = Settings::default();
    expected.mqtt.embedded_broker = true;
    expected.mqtt.protocol = scriptd::settings::MqttProtocol::V311;
    assert_eq!(s, expected);
}

#[test]
fn the_production_example_validates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.example.toml");
    std::fs::copy(example, dir.path().join("default.toml")).expect("copy");
    let (s, _) = Settings::load_from(dir.path(), env(&[])).expect("example loads");
    assert!(!s.mqtt.embedded_broker);
    assert_eq!(s.database.path, Path::new("/var/lib/scriptd/scriptd.db"));
    assert_eq!(s.log.format, scriptd::settings::LogFormat::Json);
}

#[test]
fn local_toml_overrides_default_toml_and_env_overrides_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(
        dir.path(),
        "default.toml",
        "[mqtt]\nport = 1000\nhost = \"a\"\nclient_id = \"x\"\n",
    );
    write_file(dir.path(), "local.toml", "[mqtt]\nport = 2000\nhost = \"b\"\n");
    let (s, sources) =
        Settings::load_from(dir.path(), env(&[("SCRIPTD__MQTT__PORT", "3000")])).expect("loads");
    assert_eq!(s.mqtt.port, 3000, "env wins");
    assert_eq!(s.mqtt.host, "b", "local.toml beats default.toml");
    assert_eq!(s.mqtt.client_id, "x", "default.toml beats built-in defaults");
    assert_eq!(s.delivery.max_in_flight, 100, "built-in default");
    assert_eq!(sources.files.len(), 2);
    assert_eq!(sources.env_vars, vec!["SCRIPTD__MQTT__PORT".to_string()]);
}

#[test]
fn env_vars_set_nested_keys_secrets_and_the_top_level_timezone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, _) = Settings::load_from(
        dir.path(),
        env(&[
            ("SCRIPTD__MQTT__USERNAME", "u"),
            ("SCRIPTD__MQTT__PASSWORD", "007"),
            ("SCRIPTD__MQTT__EMBEDDED_BROKER", "true"),
            ("SCRIPTD__MQTT__PROTOCOL", "3.1.1"),
            ("SCRIPTD__TIMEZONE", "Asia/Tashkent"),
            ("SCRIPTD__LOG__LEVEL", "debug,scriptd=trace"),
        ]),
    )
    .expect("loads");
    // The embedded broker speaks 3.1.1 only: MQTT 5 (the default) with it names the key.
    let err = Settings::load_from(dir.path(), env(&[("SCRIPTD__MQTT__EMBEDDED_BROKER", "true")]))
        .expect_err("MQTT 5 with the embedded broker");
    assert!(format!("{err:?}").contains("mqtt.protocol"), "{err:?}");
    let err = Settings::load_from(dir.path(), env(&[("SCRIPTD__MQTT__PROTOCOL", "4")]))
        .expect_err("an unknown MQTT version");
    let err = format!("{err:?}");
    assert!(err.contains("mqtt.protocol") && err.contains("got \\\"4\\\""), "{err}");
    assert_eq!(s.mqtt.password, Some(Secret::new("007")), "leading zeros kept");
    assert!(s.mqtt.embedded_broker);
    assert_eq!(s.timezone.tz().name(), "Asia/Tashkent");
    assert_eq!(s.log.level, "debug,scriptd=trace");
}

#[test]
fn a_single_underscore_after_the_prefix_is_not_an_override() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, _) = Settings::load_from(dir.path(), env(&[("SCRIPTD_MQTT__PORT", "1")]))
        .expect("ignored, not an error");
    assert_eq!(s.mqtt.port, 1883);
}

#[test]
fn an_unknown_key_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(dir.path(), "default.toml", "[mqtt]\nport = 1883\n");
    write_file(dir.path(), "local.toml", "[mqtt]\nprot = 1884\n");
    let (key, origin, message) = one_problem(dir.path(), &[]);
    assert_eq!(key, "mqtt.prot");
    assert_eq!(origin, Origin::File(dir.path().join("local.toml")));
    assert!(message.contains("unknown key") && message.contains("port"), "{message}");
}

#[test]
fn an_unknown_section_and_an_unknown_top_level_key_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(dir.path(), "default.toml", "timezon = \"UTC\"\n[mqqt]\nport = 1\n");
    match Settings::load_from(dir.path(), env(&[])) {
        Err(SettingsError::Invalid(ps)) => {
            let keys: Vec<&str> = ps.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(keys, vec!["mqqt", "timezon"], "{ps:?}");
            assert!(ps.iter().all(|p| p.origin == Origin::File(dir.path().join("default.toml"))));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unknown_key_from_the_environment_names_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, origin, _) = one_problem(dir.path(), &[("SCRIPTD__DELIVERY__MAX_INFLIGHT", "5")]);
    assert_eq!(key, "delivery.max_inflight");
    assert_eq!(origin, Origin::Env("SCRIPTD__DELIVERY__MAX_INFLIGHT".into()));
}

#[test]
fn a_wrong_type_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(dir.path(), "default.toml", "[mqtt]\nport = 1883\n");
    write_file(dir.path(), "local.toml", "[mqtt]\nport = \"abc\"\n");
    let (key, origin, message) = one_problem(dir.path(), &[]);
    assert_eq!(key, "mqtt.port");
    assert_eq!(origin, Origin::File(dir.path().join("local.toml")));
    assert!(message.contains("integer"), "{message}");
}

#[test]
fn a_section_given_as_a_value_is_a_type_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(dir.path(), "default.toml", "mqtt = 5\n");
    let (key, origin, message) = one_problem(dir.path(), &[]);
    assert_eq!(key, "mqtt");
    assert_eq!(origin, Origin::File(dir.path().join("default.toml")));
    assert!(message.contains("table"), "{message}");
}

#[test]
fn a_wrong_type_from_the_environment_names_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(dir.path(), "default.toml", "[mqtt]\nport = 1883\n");
    let (key, origin, _) = one_problem(dir.path(), &[("SCRIPTD__MQTT__PORT", "eighty")]);
    assert_eq!(key, "mqtt.port");
    assert_eq!(origin, Origin::Env("SCRIPTD__MQTT__PORT".into()));
}

#[test]
fn a_port_out_of_range_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(dir.path(), "local.toml", "[mqtt]\nport = 70000\n");
    let (key, origin, _) = one_problem(dir.path(), &[]);
    assert_eq!(key, "mqtt.port");
    assert_eq!(origin, Origin::File(dir.path().join("local.toml")));

    write_file(dir.path(), "local.toml", "[mqtt]\nport = 0\n");
    let (key, _, message) = one_problem(dir.path(), &[]);
    assert_eq!(key, "mqtt.port");
    assert!(message.contains("1–65535"), "{message}");
}

#[test]
fn out_of_range_and_malformed_values_are_all_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(
        dir.path(),
        "local.toml",
        r#"timezone = "Mars/Olympus"
[api]
bind = "localhost"
[delivery]
max_in_flight = 0
[log]
format = "xml"
"#,
    );
    // serde stops at the first type problem, so check them one by one.
    let (key, origin, message) = one_problem(dir.path(), &[]);
    assert_eq!(origin, Origin::File(dir.path().join("local.toml")));
    assert!(["timezone", "api.bind", "log.format"].contains(&key.as_str()), "{key}: {message}");

    let cases: &[(&str, &str, &str)] = &[
        ("timezone = \"Mars/Olympus\"\n", "timezone", "IANA"),
        ("[api]\nbind = \"localhost\"\n", "api.bind", ""),
        ("[log]\nformat = \"xml\"\n", "log.format", "xml"),
        ("[log]\nlevel = \"warning\"\n", "log.level", "not a level"),
        ("[log]\nlevel = \"info,scriptd=loud\"\n", "log.level", ""),
        ("[delivery]\nmax_in_flight = 0\n", "delivery.max_in_flight", "1–10000"),
        ("[delivery]\nmax_in_flight = 10001\n", "delivery.max_in_flight", "1–10000"),
        ("[events]\nmax_age_seconds = -1\n", "events.max_age_seconds", ""),
        ("[telegram]\napi_url = \"api.telegram.org\"\n", "telegram.api_url", "http"),
        ("[mqtt]\nevents_topic = \"a/#/b\"\n", "mqtt.events_topic", "#"),
        ("[mqtt]\nreconnect_min_ms = 500\nreconnect_max_ms = 100\n", "mqtt.reconnect_max_ms", ""),
        ("[delivery]\nbackoff_initial_ms = 0\n", "delivery.backoff_initial_ms", ""),
        ("[mqtt]\npassword = \"p\"\n", "mqtt.password", "username"),
    ];
    for (text, want_key, want_msg) in cases {
        write_file(dir.path(), "local.toml", text);
        let (key, origin, message) = one_problem(dir.path(), &[]);
        assert_eq!(&key, want_key, "{text}: {message}");
        assert_eq!(origin, Origin::File(dir.path().join("local.toml")), "{text}");
        assert!(message.contains(want_msg), "{text}: {message}");
    }
}

#[test]
fn several_range_problems_are_reported_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(dir.path(), "default.toml", "[delivery]\nmax_in_flight = 0\n[mqtt]\ninflight = 0\n");
    match Settings::load_from(dir.path(), env(&[])) {
        Err(e @ SettingsError::Invalid(_)) => {
            let lines = e.lines();
            assert_eq!(lines.len(), 2, "{lines:?}");
            assert!(lines.iter().all(|l| l.contains("default.toml")), "{lines:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_toml_syntax_error_names_the_file_on_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(dir.path(), "local.toml", "[mqtt\nport = 1\n");
    match Settings::load_from(dir.path(), env(&[])) {
        Err(e @ SettingsError::Syntax { .. }) => {
            let text = e.to_string();
            assert!(text.contains("local.toml"), "{text}");
            assert!(text.contains("line 1"), "{text}");
            assert!(!text.contains('\n'), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_explicit_directory_must_exist_and_the_fallbacks_apply_in_order() {
    use scriptd::settings::resolve_config_dir_with;
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope");
    assert!(matches!(
        resolve_config_dir_with(Some(&missing), None, Path::new("config")),
        Err(SettingsError::MissingDir(_))
    ));
    assert!(resolve_config_dir_with(None, Some(missing.clone()), Path::new("config")).is_err());
    let got = resolve_config_dir_with(Some(dir.path()), Some(missing.clone()), &missing);
    assert_eq!(got.ok().as_deref(), Some(dir.path()), "--config beats the variable");
    let got = resolve_config_dir_with(None, Some(dir.path().into()), &missing);
    assert_eq!(got.ok().as_deref(), Some(dir.path()), "variable beats ./config");
    let got = resolve_config_dir_with(None, None, dir.path());
    assert_eq!(got.ok().as_deref(), Some(dir.path()), "./config when it exists");
    let got = resolve_config_dir_with(None, None, &missing);
    assert_eq!(got.ok().as_deref(), Some(Path::new("/etc/scriptd")));
}

#[test]
fn settings_debug_never_shows_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, _) = Settings::load_from(
        dir.path(),
        env(&[("SCRIPTD__MQTT__USERNAME", "u"), ("SCRIPTD__MQTT__PASSWORD", "pw-4f1c9a7e")]),
    )
    .expect("loads");
    assert!(!format!("{s:?}").contains("pw-4f1c9a7e"));
    assert!(!format!("{s:#?}").contains("pw-4f1c9a7e"));
    assert!(!s.to_masked_toml().contains("pw-4f1c9a7e"));
    assert!(!format!("{:?}", s.live_part()).contains("pw-4f1c9a7e"));
    assert_eq!(s.mqtt.password.as_ref().map(Secret::expose), Some("pw-4f1c9a7e"));
}

#[test]
fn default_toml_documents_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let text = std::fs::read_to_string(path).expect("read default.toml");
    let value = serde_json::to_value(Settings::default()).expect("serialize");
    let serde_json::Value::Object(top) = value else { panic!("settings is a table") };
    let mut section = String::new();
    let mut seen = std::collections::BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            seen.insert(section.clone());
        } else if let Some((key, _)) = line.trim_start_matches("# ").split_once(" = ") {
            let dotted =
                if section.is_empty() { key.to_string() } else { format!("{section}.{key}") };
            seen.insert(dotted);
        }
    }
    for (name, v) in &top {
        match v {
            serde_json::Value::Object(fields) => {
                for (key, sub) in fields {
                    assert!(
                        seen.contains(&format!("{name}.{key}")),
                        "{name}.{key} not in default.toml"
                    );
                    // A sub-table written as its own section: each of its keys too.
                    if let serde_json::Value::Object(subs) = sub
                        && text.contains(&format!("[{name}.{key}]"))
                    {
                        for k in subs.keys() {
                            assert!(
                                seen.contains(&format!("{name}.{key}.{k}")),
                                "{name}.{key}.{k} not in default.toml"
                            );
                        }
                    }
                }
            }
            _ => assert!(seen.contains(name), "{name} not in default.toml"),
        }
    }
}
