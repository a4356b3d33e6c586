//! The event and reaction catalogs (the seed's "statistics") and their default contents.

use serde::Serialize;

use super::StoreError;
use super::sql::{Dialect, Row, Sql};
use crate::args;

/// One kind of analytics result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Catalog id (`event_id` in scripts and occurrences).
    pub id: i64,
    /// Inner key, e.g. `face_recognized`.
    pub name: String,
    /// Human-readable name.
    pub description: String,
    /// Display colour, `#RRGGBB`.
    pub color: String,
    /// The analytics module that produces it.
    pub analytic_type: String,
}

/// One kind of action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reaction {
    /// Catalog id (`reaction_id` in scripts).
    pub id: i64,
    /// Inner key: `telegram-message`, `show-camera-sidebar`, `show-camera`, `sound`, `webhook`.
    pub name: String,
    /// Human-readable name.
    pub description: String,
    /// Whether clients preselect it.
    pub is_default: bool,
    /// How it is delivered, from `name` (not part of the API's object).
    #[serde(skip)]
    pub kind: crate::delivery::ReactionKind,
}

/// The default events: (id, name, description, color, analytic_type).
pub const DEFAULT_EVENTS: &[(i64, &str, &str, &str, &str)] = &[
    (1, "face_recognized", "Face recognised", "#07D4F0", "face_recognition"),
    (2, "face_unknown", "Unknown face", "#F0A107", "face_recognition"),
    (3, "plate_recognized", "Licence plate recognised", "#2E86DE", "plate_recognition"),
    (4, "plate_unknown", "Unknown licence plate", "#E67E22", "plate_recognition"),
    (5, "line_crossing", "Line crossing", "#8E44AD", "video_analytics"),
    (6, "intrusion", "Intrusion into a zone", "#E74C3C", "video_analytics"),
    (7, "loitering", "Loitering", "#D35400", "video_analytics"),
    (8, "motion", "Motion detected", "#27AE60", "motion_detection"),
    (9, "abandoned_object", "Abandoned object", "#C0392B", "video_analytics"),
    (10, "smoke_fire", "Smoke or fire", "#FF3B30", "fire_detection"),
    (11, "camera_tamper", "Camera tampering", "#7F8C8D", "camera_health"),
    (12, "camera_offline", "Camera offline", "#34495E", "camera_health"),
    (13, "crowd", "Crowd gathering", "#16A085", "video_analytics"),
];

/// The default reactions: (id, name, description, is_default).
pub const DEFAULT_REACTIONS: &[(i64, &str, &str, bool)] = &[
    (1, "telegram-message", "Send a Telegram message", false),
    (2, "show-camera-sidebar", "Show the camera in the sidebar", true),
    (3, "show-camera", "Open the camera full screen", false),
    (4, "sound", "Play an alarm sound", false),
    (5, "webhook", "Call a webhook", false),
];

/// The default user permissions: (id, name, display_name).
pub const DEFAULT_PERMISSIONS: &[(i64, &str, &str)] = &[
    (240, "scripts.manage", "Manage events and reactions"),
    (241, "scripts.view", "View events and reactions"),
    (242, "cameras.view", "View cameras"),
    (243, "archive.view", "View the archive"),
];

/// Inserts the default catalog rows that are missing; existing rows (by id or name) are
/// kept as the operator left them. On PostgreSQL the identity sequences of the three
/// tables are then moved past their largest ids, so rows added later without an id do not
/// collide with the seeded ones.
pub fn seed_defaults(conn: &dyn Sql) -> Result<(), StoreError> {
    for (id, name, description, color, analytic) in DEFAULT_EVENTS {
        conn.execute(
            "INSERT INTO events (id, name, description, color, analytic_type)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            args![*id, *name, *description, *color, *analytic],
        )?;
    }
    for (id, name, description, is_default) in DEFAULT_REACTIONS {
        conn.execute(
            "INSERT INTO reactions (id, name, description, is_default)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            args![*id, *name, *description, *is_default],
        )?;
    }
    for (id, name, display_name) in DEFAULT_PERMISSIONS {
        conn.execute(
            "INSERT INTO permissions (id, name, display_name) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
            args![*id, *name, *display_name],
        )?;
    }
    if conn.dialect() == Dialect::Postgres {
        for table in ["events", "reactions", "permissions"] {
            super::postgres::sync::follow_explicit_ids(conn, table)?;
        }
    }
    Ok(())
}

/// Every event, by id.
pub fn events(conn: &dyn Sql) -> Result<Vec<Event>, StoreError> {
    conn.query("SELECT id, name, description, color, analytic_type FROM events ORDER BY id", &[])?
        .iter()
        .map(event_of)
        .collect()
}

fn event_of(r: &Row) -> Result<Event, StoreError> {
    Ok(Event {
        id: r.get(0)?,
        name: r.text(1),
        description: r.text(2),
        color: r.text(3),
        analytic_type: r.text(4),
    })
}

/// Every reaction, by id.
pub fn reactions(conn: &dyn Sql) -> Result<Vec<Reaction>, StoreError> {
    conn.query("SELECT id, name, description, is_default FROM reactions ORDER BY id", &[])?
        .iter()
        .map(reaction_of)
        .collect()
}

fn reaction_of(r: &Row) -> Result<Reaction, StoreError> {
    let name = r.text(1);
    Ok(Reaction {
        id: r.get(0)?,
        kind: crate::delivery::ReactionKind::of(&name),
        name,
        description: r.text(2),
        is_default: r.truthy(3),
    })
}
