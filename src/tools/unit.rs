//! The systemd template unit `scriptd@.service` for several instances on one host
//! (docs/deployment.md), derived from the packaged `scriptd.service` so that the two never
//! drift apart: the same hardening, restart policy and limits, plus per instance
//!
//! - `mqtt.client_id` = `scriptd-%i` (overridable in the instance's file),
//! - `/etc/scriptd/instance-%i.env`, required, for what must differ on one host (at least
//!   `SCRIPTD__API__BIND`),
//! - its own state folder `/var/lib/scriptd/%i`.
//!
//! `scriptd generate-assets` writes it next to the man pages; the package installs it.

/// The packaged unit.
pub const MAIN_UNIT: &str = include_str!("../../packaging/systemd/scriptd.service");

/// Lines of the main unit replaced in the template, with their replacements.
const REPLACED: &[(&str, &str)] = &[
    (
        "Description=scriptd rules engine (analytics events in, scheduled reactions out)",
        "Description=scriptd instance %i (one of several on one PostgreSQL database)",
    ),
    (
        "Documentation=file:///usr/share/doc/scriptd/operations.md man:scriptd(1)",
        "Documentation=file:///usr/share/doc/scriptd/deployment.md man:scriptd(1)",
    ),
    ("StateDirectory=scriptd", "StateDirectory=scriptd/%i"),
    ("WorkingDirectory=/var/lib/scriptd", "WorkingDirectory=/var/lib/scriptd/%i"),
    (
        "EnvironmentFile=-/etc/scriptd/env",
        "EnvironmentFile=-/etc/scriptd/env\n\
         # Per instance: its MQTT client id (overridable below) and, required, its own file\n\
         # with what must differ between instances on one host, at least the API's address:\n\
         # /etc/scriptd/instance-%i.env: SCRIPTD__API__BIND=127.0.0.1:8081\n\
         Environment=SCRIPTD__MQTT__CLIENT_ID=scriptd-%i\n\
         EnvironmentFile=/etc/scriptd/instance-%i.env",
    ),
];

/// `scriptd@.service`, from [`MAIN_UNIT`]; fails naming a line of the main unit that is
/// no longer there to replace.
pub fn template_unit() -> Result<String, String> {
    let mut lines: Vec<String> = [
        "# scriptd@.service: several scriptd instances on one host, sharing one",
        "# PostgreSQL database (docs/deployment.md, \"Several instances\"). Start",
        "# them with `systemctl enable --now scriptd@1 scriptd@2`. Written by",
        "# `scriptd generate-assets` from scriptd.service, whose comments follow.",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut found = vec![false; REPLACED.len()];
    for line in MAIN_UNIT.lines() {
        match REPLACED.iter().position(|(from, _)| line.trim() == *from) {
            Some(i) => {
                found[i] = true;
                lines.extend(REPLACED[i].1.lines().map(str::to_owned));
            }
            None => lines.push(line.to_owned()),
        }
    }
    if let Some(i) = found.iter().position(|f| !f) {
        return Err(format!("scriptd.service has no line {:?} to adapt", REPLACED[i].0));
    }
    Ok(lines.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_keeps_every_line_of_the_unit_but_the_per_instance_ones() {
        let t = template_unit().unwrap();
        let lines: Vec<&str> = t.lines().map(str::trim).collect();
        for line in MAIN_UNIT.lines().map(str::trim) {
            if REPLACED.iter().any(|(from, _)| *from == line) {
                continue;
            }
            assert!(lines.contains(&line), "missing {line:?}");
        }
        for line in [
            "StateDirectory=scriptd/%i",
            "WorkingDirectory=/var/lib/scriptd/%i",
            "Environment=SCRIPTD__MQTT__CLIENT_ID=scriptd-%i",
            "EnvironmentFile=/etc/scriptd/instance-%i.env",
            "ExecStart=/usr/bin/scriptd --config /etc/scriptd run",
        ] {
            assert!(lines.contains(&line), "missing {line:?}");
        }
        // The instance's file is read after the shared one, so it wins.
        let shared = lines.iter().position(|l| *l == "EnvironmentFile=-/etc/scriptd/env");
        let own = lines.iter().position(|l| *l == "EnvironmentFile=/etc/scriptd/instance-%i.env");
        assert!(shared < own, "{t}");
        assert!(!lines.contains(&"StateDirectory=scriptd"));
    }
}
