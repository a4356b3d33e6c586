//! What readers of the live snapshot see.

use super::*;

/// A script's reaction-specific data, secrets masked in `Debug`.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// Telegram bot token (`telegram-message`).
    pub bot_token: Option<Secret>,
    /// Telegram chat id, as text (`telegram-message`).
    pub chat_id: Option<String>,
    /// Webhook URL (`webhook`).
    pub url: Option<String>,
    /// Webhook signing secret (`webhook`).
    pub secret: Option<Secret>,
    /// Seconds after a firing on a camera during which the script stays silent on that
    /// camera (any reaction); 0 = no cooldown.
    pub cooldown_seconds: u32,
}

impl Extra {
    /// True when no field is set (most reactions have no extra data).
    pub(super) fn is_empty(&self) -> bool {
        self.bot_token.is_none()
            && self.chat_id.is_none()
            && self.url.is_none()
            && self.secret.is_none()
            && self.cooldown_seconds == 0
    }
}

/// A valid script, ready for delivery. Its timetable lives in the snapshot's
/// [`ScheduleIndex`] only, compiled; its camera filter and users in [`Scripts`]' shared id
/// array ([`Scripts::cameras`], [`Scripts::users`]).
#[derive(Debug, Clone)]
pub struct ScriptRecord {
    /// Script id.
    pub id: i64,
    /// Title.
    pub title: String,
    /// `status` = active.
    pub enabled: bool,
    /// The event it reacts to.
    pub event: Arc<Event>,
    /// The reaction to perform.
    pub reaction: Arc<Reaction>,
    /// Where its cameras are in [`Scripts`]' id array (empty: every camera).
    pub(super) cameras: (u32, u32),
    /// Where its users are in [`Scripts`]' id array.
    pub(super) users: (u32, u32),
    /// Reaction data; one shared empty value for the scripts without any.
    pub extra: Arc<Extra>,
}

/// The valid scripts of a snapshot by id: one array sorted by id, looked up by binary search
/// (a map would cost a hash bucket and an allocation per script), and every script's camera
/// filter and users in one shared array of ids (most scripts have one user and a few
/// cameras: a heap block each would cost more than the ids).
#[derive(Debug, Default)]
pub struct Scripts {
    pub(super) records: Box<[ScriptRecord]>,
    pub(super) ids: Box<[i64]>,
}

/// Collects the records of a [`Scripts`].
#[derive(Debug, Default)]
pub(super) struct ScriptsBuilder {
    pub(super) records: Vec<ScriptRecord>,
    pub(super) ids: Vec<i64>,
}

impl ScriptsBuilder {
    /// Adds a record with its camera filter (`None`: every camera) and users.
    pub(super) fn push(
        &mut self,
        mut record: ScriptRecord,
        cameras: Option<&[i64]>,
        users: &[i64],
    ) {
        record.cameras = self.ids(cameras.unwrap_or_default());
        record.users = self.ids(users);
        self.records.push(record);
    }

    /// Appends `ids` to the shared array and returns where they are. Past 2³² ids in one
    /// snapshot nothing is appended (an empty range).
    pub(super) fn ids(&mut self, ids: &[i64]) -> (u32, u32) {
        let (Ok(start), Ok(len)) = (u32::try_from(self.ids.len()), u32::try_from(ids.len())) else {
            return (0, 0);
        };
        if start.checked_add(len).is_none() {
            return (0, 0);
        }
        self.ids.extend_from_slice(ids);
        (start, len)
    }

    /// The records sorted by id; a repeated id keeps its first record.
    pub(super) fn finish(mut self) -> Scripts {
        if !self.records.is_sorted_by_key(|r| r.id) {
            self.records.sort_by_key(|r| r.id);
        }
        self.records.dedup_by_key(|r| r.id);
        Scripts { records: self.records.into_boxed_slice(), ids: self.ids.into_boxed_slice() }
    }
}

impl Scripts {
    pub(super) fn ids(&self, (start, len): (u32, u32)) -> &[i64] {
        self.ids.get(start as usize..start as usize + len as usize).unwrap_or_default()
    }

    /// The cameras of the script with this id: `None` when there is no such script,
    /// `Some(None)` when it watches every camera.
    pub fn cameras(&self, id: &i64) -> Option<Option<&[i64]>> {
        let cameras = self.ids(self.get(id)?.cameras);
        Some((!cameras.is_empty()).then_some(cameras))
    }

    /// The users listed on a script of this snapshot (see [`Snapshot::recipients`] for
    /// sub-users).
    pub fn users(&self, script: &ScriptRecord) -> &[i64] {
        self.ids(script.users)
    }

    /// The script with this id.
    pub fn get(&self, id: &i64) -> Option<&ScriptRecord> {
        self.records.binary_search_by_key(id, |r| r.id).ok().map(|i| &self.records[i])
    }

    /// True when a valid script has this id.
    pub fn contains_key(&self, id: &i64) -> bool {
        self.get(id).is_some()
    }

    /// Number of valid scripts.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when there is no valid script.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The ids, ascending.
    pub fn keys(&self) -> Keys<'_> {
        Keys(self.records.iter())
    }

    /// The records, by ascending id.
    pub fn iter(&self) -> std::slice::Iter<'_, ScriptRecord> {
        self.records.iter()
    }
}

impl std::ops::Index<&i64> for Scripts {
    type Output = ScriptRecord;

    /// The script with this id.
    ///
    /// # Panics
    /// When there is none (like a map's index).
    fn index(&self, id: &i64) -> &ScriptRecord {
        match self.get(id) {
            Some(r) => r,
            None => panic!("no valid script {id} in the snapshot"),
        }
    }
}

/// The ids of [`Scripts`], ascending.
#[derive(Clone)]
pub struct Keys<'a>(std::slice::Iter<'a, ScriptRecord>);

impl<'a> Iterator for Keys<'a> {
    type Item = &'a i64;

    fn next(&mut self) -> Option<&'a i64> {
        self.0.next().map(|r| &r.id)
    }
}

impl fmt::Debug for Keys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

/// One consistent view of the scripts.
#[derive(Debug)]
pub struct Snapshot {
    /// `(event, camera, instant) → script ids`.
    pub index: ScheduleIndex,
    /// Valid scripts by id.
    pub scripts: Scripts,
    /// Scripts skipped because their row is invalid, with the reasons.
    pub invalid: BTreeMap<i64, FieldErrors>,
    /// Every user's parent, for sub-user expansion.
    pub parents: HashMap<i64, Option<i64>>,
    /// Users disabled by `scriptd users disable`: they get no deliveries.
    pub disabled: HashSet<i64>,
    /// The event catalog by id.
    pub events: HashMap<i64, Event>,
    /// Counts rebuilds: a higher generation is a newer snapshot.
    pub generation: u64,
    /// What it was built from: the database file's epoch ([`crate::store::Conn::epoch`])
    /// and its scripts version (`None` before the first load).
    pub source: Option<(u64, i64)>,
}

impl Snapshot {
    /// An empty snapshot (before the first load).
    pub fn empty() -> Snapshot {
        Snapshot {
            index: ScheduleIndex::build(Vec::new()),
            scripts: Scripts::default(),
            invalid: BTreeMap::new(),
            parents: HashMap::new(),
            disabled: HashSet::new(),
            events: HashMap::new(),
            generation: 0,
            source: None,
        }
    }

    /// The given users and all their sub-users, breadth-first, each once.
    pub fn descendants(&self, user_ids: &[i64]) -> Vec<i64> {
        descendants(&self.parents, user_ids)
    }

    /// The users a script's reaction goes to: its users, plus every sub-user below them
    /// for the client-side reactions (`show-camera-sidebar`, `show-camera`, `sound`);
    /// disabled users included (the intake's gate leaves them out, explain names them).
    pub fn audience(&self, script: &ScriptRecord) -> Vec<i64> {
        match script.reaction.kind {
            ReactionKind::Client => self.descendants(self.scripts.users(script)),
            ReactionKind::Telegram | ReactionKind::Webhook | ReactionKind::Other => {
                self.scripts.users(script).to_vec()
            }
        }
    }

    /// [`Self::audience`] without the disabled users (their sub-users still get theirs).
    pub fn recipients(&self, script: &ScriptRecord) -> Vec<i64> {
        let mut users = self.audience(script);
        if !self.disabled.is_empty() {
            users.retain(|u| !self.disabled.contains(u));
        }
        users
    }
}
