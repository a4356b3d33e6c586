//! The subscriber's side: every push seen, matched to what was expected.

use super::*;

/// What the subscriber saw.
#[derive(Default)]
pub(super) struct Collected {
    pub(super) seen: HashSet<Box<str>>,
    /// The deliveries expected from the measured run, and how many of them were seen.
    pub(super) expected: HashSet<Box<str>>,
    pub(super) hits: u64,
    pub(super) received: u64,
    pub(super) latencies_ns: Vec<u64>,
    pub(super) last_ns: u64,
    pub(super) warm: u64,
    pub(super) ceiling_seen: HashSet<u64>,
    pub(super) ceiling_latencies_ns: Vec<u64>,
    pub(super) ceiling_last_ns: u64,
}

#[derive(Clone)]
pub(super) struct Collector {
    pub(super) inner: Arc<Mutex<Collected>>,
    pub(super) clock: Instant,
    pub(super) run: String,
}

impl Collector {
    pub(super) fn lock(&self) -> MutexGuard<'_, Collected> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn now_ns(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn on_message(&self, topic: &str, payload: &[u8]) {
        #[derive(Deserialize)]
        struct Data {
            t_ns: u64,
        }
        #[derive(Deserialize)]
        struct Push<'a> {
            #[serde(borrow, default)]
            delivery_id: Option<&'a str>,
            #[serde(borrow, default)]
            occurrence_id: Option<&'a str>,
            #[serde(borrow, default)]
            id: Option<&'a str>,
            data: Option<Data>,
        }
        let now = self.now_ns();
        let Ok(p) = serde_json::from_slice::<Push<'_>>(payload) else { return };
        let Some(t) = p.data.map(|d| d.t_ns) else { return };
        let latency = now.saturating_sub(t);
        let mut c = self.lock();
        if topic.contains("/ceiling/") {
            if let Some(seq) = p.id.and_then(|id| id.rsplit('-').next()?.parse::<u64>().ok())
                && c.ceiling_seen.insert(seq)
            {
                c.ceiling_latencies_ns.push(latency);
                c.ceiling_last_ns = now;
            }
            return;
        }
        let occurrence = p.occurrence_id.unwrap_or_default();
        if occurrence.starts_with("warm-") {
            c.warm += 1;
            return;
        }
        let Some(id) = p.delivery_id else { return };
        c.received += 1;
        if c.seen.insert(id.into()) {
            c.latencies_ns.push(latency);
            if c.expected.contains(id) {
                c.hits += 1;
            }
        }
        c.last_ns = now;
    }
}
