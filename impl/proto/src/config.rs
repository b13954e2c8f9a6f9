//! Tunables of a peer. All durations are milliseconds of the caller's clock.

/// Configuration of one peer (Pastry + sa-Scribe). [`Config::default`] gives sensible values
/// for a LAN deployment and for the simulator.
#[derive(Clone, Debug)]
pub struct Config {
    /// Leaf-set size `L` (half on each side of the peer).
    pub leaf_set_size: usize,
    /// Number `k` of leaf-set peers the root replicates group state to.
    pub replicas: usize,
    /// Interval of the overlay maintenance tick (keep-alives, failure detection).
    pub keepalive_interval: u64,
    /// A leaf-set peer not heard from for this long is declared dead.
    pub leaf_fail_timeout: u64,
    /// A routing-table peer not heard from for this long is declared dead.
    pub table_fail_timeout: u64,
    /// Routing-table entries (that are not leaf-set members) which routing uses are pinged
    /// when not heard from for this long; so is, at each tick, an entry already probed.
    /// Any datagram from a peer counts as an answer.
    pub table_ping_interval: u64,
    /// Routing-table entries nothing uses are pinged only when not heard from for this long
    /// (lazy routing-table checks, as in MSPastry: an entry is checked when used, and rarely
    /// otherwise). A probed entry is declared dead once silent for `table_fail_timeout` and
    /// unanswered for `table_fail_timeout - table_ping_interval`. Equal to
    /// `table_ping_interval`: every entry is checked eagerly.
    pub table_probe_interval: u64,
    /// Interval of leaf-set exchanges with a random leaf-set member.
    pub leaf_exchange_interval: u64,
    /// How long a peer declared dead is remembered: ignored when learnt second-hand, and
    /// probed every `dead_probe_interval` (a direct answer brings it back).
    pub tombstone_ttl: u64,
    /// Probe interval of peers declared dead (heals partitions, finds restarted peers).
    pub dead_probe_interval: u64,
    /// Retry interval of an overlay join through the bootstrap peer.
    pub bootstrap_retry: u64,
    /// Interval of the sa-Scribe tree round: every group's tick (heartbeats to children,
    /// expiry, replication retries), with the heartbeats of all groups a parent shares with a
    /// child in one datagram.
    pub heartbeat_interval: u64,
    /// A child declares its parent dead (and re-JOINs) after this long without a heartbeat.
    pub parent_timeout: u64,
    /// A parent drops a child after this long without a heartbeat acknowledgement.
    pub child_timeout: u64,
    /// Retry interval of JOIN and PUBLISH requests.
    pub request_retry: u64,
    /// A subscription or publication request fails after this long without a final answer.
    pub request_timeout: u64,
    /// How long a new root waits for replicas' state before serving a group.
    pub fetch_timeout: u64,
    /// How many times in a row a new root asks a silent peer for its record (one ask per
    /// `fetch_timeout`) before it serves without that peer's grant (its lease then does not
    /// hold, and its first request starts another round).
    pub fetch_attempts: u8,
    /// After a peer declared dead turns out alive (a healed partition, a resumed pause), how
    /// long this peer's fetch rounds wait for the other peers it declared dead to answer
    /// before they settle, even once every peer asked has answered: one of them may be the
    /// root that served meanwhile.
    pub heal_window: u64,
    /// The root re-sends its record to all replicas at this interval (in the first tree round
    /// due, packed with its other records for the same replica).
    pub replica_refresh: u64,
    /// A root's lease (ms): it answers from its record (a publication's 412 or 200, a JOIN's
    /// first state) only within this long of a moment every current replica confirmed it
    /// (acknowledged a REPLICATE, or granted its FetchState); past it, it asks its replicas
    /// again first. A replica takes over only after `leaf_fail_timeout` of silence from the
    /// root, so this must stay below it: a root that was paused or cut off then never answers
    /// from a record another root has moved past. `u64::MAX` turns the lease and the replica
    /// quorum off, for a driver whose failure detector never suspects a live peer (the
    /// conformance harness, whose model has crash-stop failures only).
    pub root_lease: u64,
    /// Minimum publication expiry (seconds); shorter requests get `IntervalTooBrief`.
    pub pub_min_expires: u32,
    /// Maximum publication expiry (seconds); longer requests are clamped.
    pub pub_max_expires: u32,
    /// Publication expiry used when the request gives none (seconds).
    pub pub_default_expires: u32,
    /// Minimum subscription expiry (seconds).
    pub sub_min_expires: u32,
    /// Maximum subscription expiry (seconds).
    pub sub_max_expires: u32,
    /// Subscription expiry used when a SUBSCRIBE gives none (seconds; RFC 3856 §6.4: 3600).
    pub sub_default_expires: u32,
    /// Maximum size of a publication body in bytes (larger: 413).
    pub max_body: usize,
    /// Maximum number of event states (entity tags) one presentity may hold at once (RFC 3903
    /// §4: one per publication without `SIP-If-Match`); a PUBLISH that would create one more
    /// is refused (403, reason phrase naming the limit).
    pub max_states: usize,
    /// Maximum size in bytes of a presentity's event states (their bodies added up) and of
    /// their composed document (what NOTIFYs carry); a PUBLISH that would exceed it is refused
    /// (413). Both travel in one overlay datagram (`wire::MAX_DATAGRAM_LEN`, 16 KiB), so keep
    /// it well below that.
    pub max_document: usize,
    /// Optional cluster key: every datagram carries an HMAC-SHA-256 tag under it.
    pub cluster_key: Option<Vec<u8>>,
    /// Seeded bug to enable (conformance non-vacuity tests only; feature `mutants`).
    #[cfg(feature = "mutants")]
    pub mutant: Option<crate::mutants::Mutant>,
}

impl Config {
    /// Whether seeded bug `m` is enabled: always `false` unless the crate is built with the
    /// `mutants` feature and `Config::mutant` (a field only that feature adds) selects `m`.
    #[inline]
    pub fn mutant_on(&self, m: crate::mutants::Mutant) -> bool {
        #[cfg(feature = "mutants")]
        {
            self.mutant == Some(m)
        }
        #[cfg(not(feature = "mutants"))]
        {
            let _ = m;
            false
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            leaf_set_size: 16,
            replicas: 3,
            keepalive_interval: 1_000,
            leaf_fail_timeout: 3_500,
            table_fail_timeout: 6_500,
            table_ping_interval: 2_000,
            table_probe_interval: 10_000,
            leaf_exchange_interval: 4_000,
            tombstone_ttl: 300_000,
            dead_probe_interval: 5_000,
            bootstrap_retry: 1_000,
            heartbeat_interval: 1_000,
            parent_timeout: 3_500,
            child_timeout: 3_500,
            request_retry: 1_000,
            request_timeout: 20_000,
            fetch_timeout: 600,
            fetch_attempts: 3,
            heal_window: 600,
            replica_refresh: 10_000,
            root_lease: 2_500,
            pub_min_expires: 60,
            pub_max_expires: 3_600,
            pub_default_expires: 3_600,
            sub_min_expires: 60,
            sub_max_expires: 3_600,
            sub_default_expires: 3_600,
            max_body: 8 * 1024,
            max_states: 16,
            max_document: 8 * 1024,
            cluster_key: None,
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }
}
