//! The operator commands, run as the real binary in a temporary working directory:
//! migrate, users add, tokens create, scripts list/export/import (all or nothing).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

fn scriptd(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scriptd"))
        .args(args)
        .current_dir(dir)
        .env_remove("SCRIPTD_CONFIG_DIR")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = scriptd(dir, args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    stdout(&o)
}

#[test]
fn operator_commands_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["migrate"]);
    ok(d, &["migrate"]);
    assert!(d.join("data/scriptd.db").exists());
    assert_eq!(ok(d, &["users", "add", "--login", "boss@mail.com", "--name", "Boss"]), "1");
    assert_eq!(
        ok(
            d,
            &[
                "users",
                "add",
                "--login",
                "sub@mail.com",
                "--name",
                "Sub",
                "--parent",
                "1",
                "--id",
                "7"
            ]
        ),
        "7"
    );
    // A taken login, an unknown parent: exit 1 with a one-line cause.
    for args in [
        &["users", "add", "--login", "boss@mail.com", "--name", "Again"][..],
        &["users", "add", "--login", "x@mail.com", "--name", "X", "--parent", "99"][..],
        &["tokens", "create", "--user", "99"][..],
    ] {
        let o = scriptd(d, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let token = ok(d, &["tokens", "create", "--user", "1"]);
    assert!(token.len() >= 64 && !token.contains(char::is_whitespace), "{token}");

    // Usage errors are exit code 2.
    assert_eq!(scriptd(d, &["users", "add", "--login", "only"]).status.code(), Some(2));
    assert_eq!(scriptd(d, &["bogus"]).status.code(), Some(2));

    let file = d.join("in.json");
    std::fs::write(
        &file,
        json!([
            {"title": "gate", "event_id": 3, "reaction_id": 2, "status": "active", "cameras": [4],
             "users": [1], "timetable": {"days": [{"type": "weekdays", "from": "08:00", "to": "18:00"}]}},
            {"title": "hook", "event_id": 6, "reaction_id": 5, "status": false, "users": [7],
             "timetable": {"intervals": [{"from": "2026-01-01 00:00:00", "to": "2027-01-01 00:00:00"}]},
             "extra": {"url": "https://example.com/hook", "secret": "s3cret"}}
        ])
        .to_string(),
    )
    .unwrap();
    // New scripts need an owner: from the file, else --owner.
    let o = scriptd(d, &["scripts", "import", "in.json"]);
    assert_eq!(o.status.code(), Some(1));
    let body: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(body["errors"]["0.owner_id"].is_array(), "{body}");
    assert_eq!(ok(d, &["scripts", "import", "in.json", "--owner", "1"]), "imported 2 scripts");
    let list = ok(d, &["scripts", "list"]);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(
        list.lines()
            .next()
            .unwrap()
            .starts_with("1\tactive\tplate_recognized\tshow-camera-sidebar\tgate")
    );

    // Export (API shape), edit, re-import: ids are kept, nothing is duplicated.
    ok(d, &["scripts", "export", "out.json"]);
    let mut exported: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("out.json")).unwrap()).unwrap();
    assert_eq!(exported.as_array().unwrap().len(), 2);
    assert_eq!(exported[0]["users"][0]["login"], "boss@mail.com");
    assert_eq!(exported[1]["extra"]["secret"], "s3cret");
    assert_eq!(exported[0]["owner_id"], 1);
    assert_eq!(exported[0]["cameras"], json!([4]));
    exported[0]["title"] = json!("gate 2");
    std::fs::write(d.join("out.json"), exported.to_string()).unwrap();
    assert_eq!(ok(d, &["scripts", "import", "out.json"]), "imported 2 scripts");
    let list = ok(d, &["scripts", "list"]);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(list.contains("gate 2"));
    let stdout_export: Value = serde_json::from_str(&ok(d, &["scripts", "export"])).unwrap();
    assert_eq!(stdout_export[0]["title"], "gate 2");

    // One invalid script: nothing is imported, the 422 object is printed with indexed keys.
    std::fs::write(
        &file,
        json!([
            {"title": "fine", "event_id": 1, "reaction_id": 3, "status": "active", "users": [1],
             "timetable": {"days": [{"type": "monday", "from": "08:00", "to": "09:00"}]}},
            {"title": "", "event_id": 1, "reaction_id": 1, "status": "active", "users": [1],
             "timetable": {"days": [{"type": "monday", "from": "08:00", "to": "08:00"}]}}
        ])
        .to_string(),
    )
    .unwrap();
    let o = scriptd(d, &["scripts", "import", "in.json", "--owner", "1"]);
    assert_eq!(o.status.code(), Some(1));
    let body: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let mut keys: Vec<&String> = body["errors"].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["1.extra.bot_token", "1.extra.chat_id", "1.timetable.days.0.to", "1.title"]);
    assert_eq!(ok(d, &["scripts", "list"]).lines().count(), 2, "nothing imported");

    // Not JSON: exit 1.
    std::fs::write(&file, "{").unwrap();
    assert_eq!(scriptd(d, &["scripts", "import", "in.json"]).status.code(), Some(1));
}
