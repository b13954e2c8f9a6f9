//! # A Stateright model of sa-Scribe
//!
//! sa-Scribe (SIP-aware Scribe, Panagiotou & Devlic) replaces a central SIP presence server with a
//! Pastry overlay: the group of a resource and event package has id `gid`, the peer numerically
//! closest to `gid` is the group's root, and a multicast tree is built from reverse-path JOINs.
//! This crate is an abstract, independent specification of the protocol, small enough to check
//! exhaustively; the production peer in `impl/` is a separate program, and traces bridge the two.
//!
//! ## What is modelled
//! - **Overlay** ([`topology`]): the 10-bit ids and base-4 Pastry routing of the paper's Fig. 3.
//! - **Join** (§III.E): a SUBSCRIBE at a first-contact peer becomes a JOIN routed toward `gid`;
//!   each hop grafts its predecessor as a child and answers pACK; the JOIN always travels on to
//!   the root, which answers ACK with its latest committed state (the first NOTIFY), or with
//!   "nothing published yet" (seq 0) when it has none: **a deviation from the paper**, whose root
//!   answers nACK there, so that a watcher that subscribes before its contact publishes is
//!   accepted and notified later, as a central presence server does; the answer retraces the
//!   reverse path, and each hop learns the state it carries.
//! - **Publish** (§III.D, RFC 3903): a PUBLISH is routed to the root, which holds one event
//!   state per entity tag (several publishers of one presentity each hold their own). Without
//!   SIP-If-Match it creates a state; with one it refreshes, modifies or (`Expires: 0`) removes
//!   the state that tag names, and answers 412, changing nothing, when it names no live state.
//!   The root stamps the next seq on every change, mints a new ETag, clamps the expiry
//!   ([`protocol::MAX_EXPIRES`]) and replicates its state to its k nearest peers. Once every
//!   replica holds it, the publication is **committed**: the root multicasts it down the tree and
//!   answers 200 with ETag and expiry. A root commits one publication at a time: publishes that
//!   arrive meanwhile are held and served in order. Each change of the root state is sent to
//!   every replica behind it; a replica that knows a live peer closer to the group than the
//!   sender keeps the state but does not acknowledge, and the root's replication retry resends
//!   it.
//! - **Latest-state sync**: what members and subscribers hold is the group's *composed* state
//!   (seq, the values of every live event state); a member passes an entry to its subscribers
//!   only if it is newer than their last NOTIFY, and only after their 200.
//! - **Re-JOIN reconciliation** (§III.F): an orphaned member (its parent crashed) re-JOINs
//!   carrying its latest state; a root keeps the higher seq. An orphan that no longer needs the
//!   group (no subscriber, no child left) leaves the tree instead, as production does, and so
//!   does a peer whose last child died (`validate-run` found the model re-JOINing for a
//!   peer that no longer needed the group, where production's timer did nothing); a
//!   re-JOIN is retransmitted through the parent that acknowledged it (pACK) while it lives.
//!   An active root with no commit pending whose own member view hears a newer state (a
//!   late NOTIFY or ACK of a root that died with every replica, passing through it or
//!   answering its own re-JOIN) takes it in at once, as one anonymous state, and replicates
//!   it; with a commit pending, once that commit is done (production `root_absorb_latest`,
//!   at `drain_queue`). Otherwise its next change would be stamped at or below what members
//!   were told, and they would drop it (`stamp-above-view`, mutant `no-absorb`). Found by
//!   the conformance traces of the `carried` family: production did so, the model did not.
//! - **Root replication** (§III.F): replicas hold the root state (seq, every event state with its
//!   ETag and expiry, and the last result per publisher, so a retransmitted publish is not applied
//!   twice); when the root crashes the closest live peer takes over, so publishers' ETags
//!   survive failover. A state adopted from the tree (a re-JOIN carrying a newer composed
//!   entry) becomes one anonymous event state whose ETag nobody holds.
//! - **A new root's fetch** (production `takeover.rs`): a peer that takes the root role over
//!   sends `FetchState` to its replica set (its k nearest live peers) and holds every JOIN and
//!   PUBLISH, in order, until each peer asked answered (`FetchReply` with its record) or was
//!   declared dead (the failure detector stands for production's fetch timeout). A peer of
//!   its replica set it has not asked in the round (the next nearest, once one asked died) is
//!   asked as the round progresses (production `fetch_progress`). It then
//!   *activates*: it keeps the highest record of its own replica, the replies and its
//!   member view, re-replicates it to its replicas, passes it down the tree (a re-commit of
//!   that seq, unchanged, to children that had not learnt it from this peer as a member) and
//!   serves what it held. Whenever a root can be replaced (a crash budget, or the restarts,
//!   joins and suspicions below) records carry the **epoch** of the root that stamped them
//!   (the group's first root is in epoch 1, as production's, which fetches lazily when the
//!   first request reaches it; each fetch round's epoch is above every one the root knows,
//!   and above one per closer peer the root declared dead, each of which may have served the
//!   group before it in an epoch it never heard of: a successor whose copy of the first
//!   root's REPLICATE was lost no longer shares epoch 1 with it, where a late record of the
//!   first root tied with its own on (epoch, seq), which production broke by record
//!   revision and the model by arrival; `validate-run` found it) and are ordered by (epoch,
//!   seq), as production orders them, so a late REPLICATE of a failed root never overwrites
//!   its successor's record of the same seq ([`Setup::epochs`]); promises, leases and fencing
//!   come with suspicions, restarts and joins only. These three points were found by
//!   `sascribe-conformance validate-run`, the implementation → model direction (README,
//!   "Production runs checked against the model"). As in production, a peer takes the role over
//!   when its failure detector reports the root dead only if it holds something for the group
//!   (a record, a latest state, a subscriber or a child); otherwise the first JOIN or PUBLISH
//!   that reaches it as the closest peer makes it the root (and it fetches then). An old root
//!   that receives `FetchState` from a peer it knows is closer demotes itself before
//!   answering, so everything it acknowledged is in its reply. The group's first root holds
//!   the role from the start (production creates it lazily, fetching from replicas that hold
//!   nothing yet).
//! - **Expiry** (RFC 3903 §4.3): within an expiry budget (`--expiries`, default 0) one event
//!   state lapses at a time: the root removes it, stamps the next seq, commits it like a
//!   publication, and subscribers get a NOTIFY with the states that remain (none:
//!   [`protocol::NO_STATE`], production's `closed` document); a JOIN's ACK carries that seq (so a
//!   re-JOINing member learns the expiry) and a SIP-If-Match naming the expired ETag gets 412.
//! - **Unsubscribe** (RFC 6665 §4.1.2.3): the first `--unsubscribes` subscribers end their
//!   subscription once it was accepted (an un-SUBSCRIBE is an in-dialog request: a SIP user
//!   agent can send it only after its SUBSCRIBE got its 200); their peer sends them nothing more and, if
//!   it no longer needs the group, leaves the tree (forgets its parent, stops re-JOINing, and
//!   with tree maintenance tells its parent, below).
//! - **Moving a subscription** (`--moves M`, default 0; production: the final NOTIFY
//!   `terminated;reason=deactivated` of a peer that leaves in an orderly way, RFC 6665
//!   §4.2.2, or a refresh to a crashed peer that fails): a subscriber whose current peer
//!   crashed may subscribe again, a new dialog, through any live peer (`Timer::Move`, an
//!   environment choice, at most `M` times in all). Its new dialog's first NOTIFY must not be
//!   older than what its old one showed (`moved-no-rollback`, the seeded bug `local-answer`:
//!   an on-tree peer answering from its own state), and it counts again among the live
//!   subscribers that must converge. Moves have no trace form yet (the harness cannot move a
//!   user agent), so the corpus has none.
//! - **Handing a subscription over** (`--handovers H`, default 0; production: the orderly
//!   shutdown's dialog handover, `sip::handover`): a live peer gives one of its active local
//!   subscriptions (of a subscriber that never unsubscribes) to another live peer with the seq
//!   it last showed (`Timer::Handover`, an environment choice, at most `H` times; `Msg::Handover`).
//!   The taker JOINs for it (`SubPhase::Handed`) and, once the root answers, sends it a NOTIFY
//!   from its own address even when the state did not move on (the target refresh that tells
//!   the subscriber where its dialog went), never below that seq; the giver forgets it and leaves
//!   the tree if it no longer needs it. `notify-seq-increasing` holds across the handover (the
//!   retargeting NOTIFY may repeat the last state), and `subscribers-converge` asks that a
//!   handed-over subscriber was notified by its taker (mutants `handover-dropped`,
//!   `handover-silent`). Handovers have no trace form yet either.
//! - **Crash-restart and joins** (`--restarts R`, `--joins J`, default 0; production: a peer
//!   process restarted under the same node id keeps nothing on disk, and a new peer joins
//!   the overlay). A crashed peer restarts (Stateright's `Recover`, within the budget) once
//!   every live peer has declared it dead; with `--joins 1` the peer closest to the group id
//!   (the nominal root) starts outside the overlay, a farther peer is the group's first root,
//!   and the joiner comes in later the same way. Either comes back **empty**: no record, no
//!   tree edge, no subscriber, request ids of a new incarnation (Stateright storage), knowing
//!   the membership (its failure detector reports the peers that are still down). Each other
//!   peer hears from it (`Alive(x)`) and takes it back: a root to which it is closer demotes
//!   at once and hands it its record (witness `root-handed-to-closer`; production's
//!   `on_peer_revived`), re-JOINs if it still needs the group, and sends the requests it held
//!   on to it (those of changes applied but not committed first; held JOINs as an
//!   intermediate forwards them); a root that stays root fetches again (its
//!   lease lapses, production's `on_peer_revived`), and the new round's replica set takes
//!   the comer back if it is among the k nearest, which is sent the record before anything
//!   commits (production's periodic re-replication). The comer takes the root role only
//!   when a JOIN or PUBLISH reaches it as the closest peer, and fetches first (the seeded bug
//!   `restart-as-root`, serving at once from its empty record as the group's first root
//!   does, is caught: `no-rollback`). `--crashes` bounds the crashes of the whole run, and
//!   the properties bounded by k−1 failures (`no-rollback`, `acked-durable`) count every
//!   crash, restarted or not: a restarted peer lost its state. Restarts and joins run the
//!   epochs and promise rounds of the suspicion fix below (as production does with a finite
//!   root lease): without them, checking found that a REPLICATE the root sent before it
//!   crashed could overwrite a replica's newer record of the same seq (records ordered by seq
//!   alone), and that a root that had not heard from the restarted peer yet committed past
//!   it. With `--perfect-detector` (restarts only) there are no promises, leases or fencing,
//!   as in production under a failure detector that never suspects a live peer (the
//!   conformance harness's): records carry epochs, a replica that knows a closer peer does
//!   not acknowledge (production's `NotRoot`), a new root whose fetch found a record of a
//!   higher epoch than its own fetches again above it (a restarted peer knows no epoch: its
//!   commits would be ordered below that record), and a root acknowledges a REPLICATE only of
//!   a record it holds. These last two were found by the conformance traces of restarts
//!   (production sent the same record twice and never committed; a root acknowledged a
//!   restarted root's record it had not stored). It also found a root stuck without a lease: a replica that had not yet noticed the
//!   crash refused every promise round; now, as in production, its acknowledgements of the
//!   root's record grant the lease again. Abstractions: a restart takes longer than failure
//!   detection and than any message delay (what the crashed incarnation sent is delivered or
//!   lost before it comes back), and only peers no user agent uses restart (their dialogs
//!   would be lost, which the model's user agents cannot notice yet). Restarts have a trace
//!   form (steps `restart`, `alive`): with `--perfect-detector` the corpus family `restart`,
//!   without it the family `fenced` (trace format 9, `config.leases`: steps `lapse` and
//!   `reask`, messages `fetch_busy`, `fenced` and `not_root`). With fencing, the group's first
//!   root fetched from its replica set before the run starts (production's lazy first fetch,
//!   which the harness runs at `init`): each of its replicas promised it epoch 1 and confirms
//!   its lease. Joins have no trace form yet.
//!
//!   **Open: `--perfect-detector` is safe with one publication only.** CI checks it
//!   exhaustively with one publish, or one subscriber. With two publishes its state space
//!   does not close (depth past 90 after a minute), and `--strategy simulate` finds
//!   counterexamples to `single-committer` and `acked-durable` in seconds. The restarted
//!   root D and the interim root C both serve before C hears D is back; a replica that holds
//!   C's record of a higher epoch still acknowledges D's REPLICATE, which it does not store,
//!   and D commits a change that no replica keeps. Production has the same rule when
//!   `root_lease` is never, the harness's setting (`Scribe::replicate`: a non-root
//!   acknowledges whatever it keeps). With a finite lease, production's default, fencing
//!   refuses the older epoch instead. Making the replica acknowledge only a record it holds
//!   removes the safety counterexamples. Liveness then needs the declining replica to tell
//!   the root what it holds (`Fenced`), so that the root fetches again. Not done yet.
//!   Reproduce: `sascribe-model check --config small --subscribers 0 --publishes 2
//!   --crashes 1 --restarts 1 --perfect-detector --strategy simulate --timeout 30`.
//!
//!   **Liveness with fencing and two publications: a leaseless root's held requests.**
//!   Simulation (`--restarts 1` without `--perfect-detector`, `--publishes 2`) found, in 15
//!   steps and with no restart, a replica that had not yet noticed the root's crash refusing
//!   the new root's promise rounds four times (`MAX_ROUNDS`); the root then served without a
//!   lease and held, for good, the PUBLISH that reached it afterwards, with nothing left to
//!   start another round (`subscribers-converge` at a quiescent state; `model/nightly.sh`
//!   found the same with `--suspicions 1 --partition`). Production starts a new round
//!   whenever it would serve a held request without a lease (`drain_queue`: `reconfirm`),
//!   on each request and tick, for as long as requests wait. The model now does the same on
//!   the root's tick ([`Timer::Resend`](protocol::Timer::Resend)): a root without a lease that
//!   holds requests starts another round, enabled only once every replica it reaches would
//!   grant it (nothing in flight between them, no other root's lease confirmed there, no
//!   closer peer known there). Production's retries before that are refused and change
//!   nothing; bounding them so keeps the state graph finite, as each round raises the
//!   root's epoch. Mutant `leaseless-idle` (no such round) is caught in 15 steps and 93 k
//!   states (`small`, two publishes, a crash, a restart). The state spaces of CI's fencing
//!   configurations (one publication) are unchanged; the configuration above is checked to
//!   depth 22 (2.4 M states, no violation) and simulated by `model/nightly.sh`, which now
//!   finds only `eventually` properties unmet on cycles, along which the action that ends
//!   them (a confirmation's `Lapse`) is enabled all along. The same campaign, with
//!   `--tree-losses 1`, found a fetching root that never asked again a peer that had
//!   answered it busy once its re-ask was lost: [`Timer::Reask`](protocol::Timer::Reask) is
//!   now armed at every peer for good, re-armed when it fires, and enabled only while the
//!   root awaits that busy peer with nothing in flight between them (production's fetch
//!   timer asks every peer it still awaits again). A constant timer set also merges states
//!   that differed only by it: CI's suspicion and restart configurations shrank (370 k to
//!   338 k states paused, 255 k to 234 k with a restart).
//! - **Faults**: up to `crashes` peer crashes (crash-stop, unless `--restarts`; with
//!   `--crashes-after N`, only once N publications were committed, so that a crash takes
//!   what members were told rather than what nobody heard), optional loss of overlay
//!   request/response messages (bounded), optional duplication. A lost PUBLISH or its answer is
//!   retransmitted by the first-contact peer; the root answers a retransmission of an applied
//!   PUBLISH from the result it stored (`publish-applied-once`).
//!
//! - **False suspicion, healing and root fencing** (`--suspicions N`, default 0; production's
//!   fix for acknowledged PUBLISHes lost after a paused or partitioned root came back). An
//!   environment action `Suspect(x)`, within the budget and one at a time, cuts a live peer
//!   off: overlay messages to and from it are lost, and the others' `Detect(x)` fire as for a
//!   crash (takeover by the closest live peer, re-JOINs, replica-set repair). By default `x`
//!   is **paused**: it takes no step and what its user agents send it waits. With
//!   `--partition` it is **cut off and runs**: its user agents reach it, its own failure
//!   detector declares every other peer dead, and it acts on that (takes the root role over
//!   if it holds something, serves its side). `Heal(x)` (a protocol timer: a suspicion always
//!   heals) ends the cut; each peer that declared another dead takes it back with `Alive`
//!   (routing goes to it again); a root to which it is closer demotes and hands its record
//!   over, and a root that stays root fetches again before serving (production's
//!   `on_peer_revived`). With suspicions enabled, as in production (`takeover.rs`):
//!   - records carry the root **epoch** of the root that committed their last change, and
//!     are ordered by (epoch, seq); a root that only fetched raises no record's epoch. If the
//!     record a root activates with has a lower seq than one it heard of, it stamps a seq above
//!     it, so that every member takes the result as newer;
//!   - **a fetch is a promise round**: the root asks with an epoch above every one it knows;
//!     each peer grants it (and refuses lower epochs from then on) unless it promised another
//!     root as much, in which case the root starts over above that, at most
//!     [`protocol::MAX_ROUNDS`] times, then serves anyway. A reply to an earlier round is
//!     ignored (it promised that round's epoch);
//!   - **fencing**: a replica refuses (`Fenced`, with the epoch it knows and its record) a
//!     REPLICATE of a lower epoch than it holds or promised, or of the epoch it promised
//!     another root; a root fenced for its current epoch fetches again (or demotes), a fence of
//!     a REPLICATE of its earlier epoch is ignored;
//!   - a replica that knows a peer closer to the group than the sender answers `NotRoot`
//!     naming it *before* any fencing; the sender hands over if its own routing agrees (a
//!     peer it declared dead is not taken back on the replica's word: production's overlay
//!     ignores second-hand news of a dead peer);
//!   - **lease**: a root answers only while its replicas' lease holds. Abstraction: suspecting
//!     `x` lapses `x`'s lease *before* any failure detector reports it (the detector's timeout
//!     is longer than the lease): a paused root stops serving at `Suspect(x)` and fetches
//!     again at `Heal(x)`; a partitioned one fetches again at once (from peers it can no
//!     longer reach). A root whose last round ended with a refusal (after
//!     [`protocol::MAX_ROUNDS`]) holds no lease and answers nothing until a round is granted.
//!     A peer refuses its promise to a root when it knows a peer closer to the group;
//!   - **exclusive leases**: a peer that confirmed a root's lease (granted its fetch,
//!     acknowledged its REPLICATE) answers another root's fetch `FetchBusy` while that lease
//!     may run (production: `root_lease` from the confirmation): it promises nothing and the
//!     asking root keeps awaiting it, and its fetch timer (`Reask`) asks every peer it still
//!     awaits again once that lease lapsed, with nothing in flight to or from them (asked
//!     earlier, the peer would answer busy again; production waits the `busy_for` it named).
//!     A root that serves after [`protocol::MAX_ROUNDS`] refusals tries another round on its
//!     tick, not at once (production's `drain_queue` leaves it to `retry_replication`).
//!     Abstraction: the
//!     confirmation (for that root's epoch) lapses (`Lapse`) only once its root can no longer
//!     serve with it (it crashed, demoted, or started a new round), when the peer declares
//!     that root dead, or when the peer is itself suspected (its pause outlasts any lease). Mutant `lease-ignored`
//!     is caught (`no-rollback`, `small` with two publishes and a partition, 21 steps);
//!   - **replica quorum**: a root serves a request (applies a change, answers a JOIN) and
//!     commits only while it reaches a majority of its nominal replica group (itself and k
//!     replicas, counted whether reachable or not; [`Setup::quorum`]): the smaller side of a
//!     partition holds every request, so it acknowledges nothing and shows no watcher an
//!     older state than one it was shown before. A change applied before the quorum was lost
//!     waits, and is dropped when the root's lease lapses (production `reconfirm`). The model
//!     forgets no crashed peer (production forgets a tombstone after a while), so with
//!     suspicions `--crashes` must leave a majority of that group;
//!   - a peer that receives `FetchState` from a peer closer to the group than itself takes it
//!     back as alive (production's `Peer::dispatch`, with leases), and a root then demotes,
//!     handing its record over; a root that receives a REPLICATE from a live closer peer
//!     demotes too. A peer declared dead is not taken back on a REPLICATE (it may have been
//!     sent before it crashed) nor on a replica's `NotRoot` (production's overlay ignores
//!     second-hand news); a lease confirmed to a peer declared dead counts for nothing
//!     (`busy`, production's `busy_for`).
//!
//!   Mutants `no-fetch` and `no-lease` (a healed root serving its stale record) are caught
//!   (`no-rollback`), and `no-quorum` (a partitioned root committing alone) is caught on
//!   `--partition` (`single-committer`). The quorum holds a JOIN of the root's own local
//!   subscriber too: the model had answered it at once, and a peer cut off, root of its
//!   side alone, showed its new subscriber "nothing published" after the other side had
//!   acknowledged a publication (`first-notify-fresh`, found by `model/nightly.sh` on
//!   `small` with a subscriber, two publishes and a partition, beyond what CI checks
//!   exhaustively; production queues every request alike). Mutant `local-join-no-quorum`
//!   is caught there (10 steps). Two parts of the fix are defence in depth under
//!   this abstraction, and their removal is **not** caught: fencing and the seq raise at
//!   activation (both would matter with a lease that can outlive a suspicion: clock drift, a
//!   pause longer than the lease but noticed late).
//!
//!   Exclusive leases close what a depth-bounded search (`--partition`, two publishes, 23
//!   steps; the whole space is beyond CI) found in the model without them: a stale read, not
//!   a lost write. After a heal, a replica that confirmed one root's lease granted a newer
//!   root's fetch; the newer root committed while the older one's lease still held, so the
//!   older one could answer a JOIN from its older state. With them the same search finds no
//!   violation (`sascribe-model check --subscribers 0 --publishes 2 --crashes 0 --expiries 0
//!   --suspicions 1 --partition --depth 23`: 6.7 M states, 80 s on one thread, 6 GB).
//!   Production had the same window (at most `root_lease`), when the old root is not among
//!   the new one's fetch set (a partial heal: `impl/tests/false_suspicion.rs`, which checks
//!   that no two peers serve at once).
//!
//!   Checking the model with `--partition` found two production bugs (fixed with it, wire
//!   version 7): a fetch reply to an earlier round counted as a grant for the current one
//!   (the peer had promised the earlier, lower epoch, so a rival between the two could
//!   commit behind the root's back), and a fence of a REPLICATE from an earlier epoch made a
//!   root start a new round, possibly because of its own current promise, so that two roots
//!   outbid each other without end.
//!
//!   Production switches all of this off under a failure detector that never suspects a live
//!   peer (`root_lease` = `u64::MAX`, the conformance harness's setting), as the model does
//!   without suspicions. A pause has a trace form (trace format 10, steps `suspect` and
//!   `heal`; the corpus family `paused`, with `config.leases`: production with a finite
//!   lease); a partition (the cut-off peer runs on alone) has none yet (`--save-trace`
//!   refuses it).
//!
//! ## Abstractions (what is simplified, and why)
//! - **One group.** Groups are independent in sa-Scribe; every property is per group.
//! - **Membership.** Pastry's join protocol is not modelled: a peer that (re)joins knows the
//!   membership at once, and leaf-set repair after a detected crash is instantaneous (see
//!   [`topology`]); what sa-Scribe does when a peer joins or comes back is (above). The
//!   production core implements Pastry's join and repair.
//! - **Heartbeats and keep-alives as a failure detector.** Periodic messages would make the state
//!   graph cyclic and defeat liveness checking; instead a `Detect(x)` timeout fires, at any
//!   moment after `x` crashed, at each peer (a perfect failure detector: no false suspicion,
//!   unless `--suspicions` allows some, above).
//! - **Retransmission timeouts** fire only when a request is actually lost, and only after every
//!   live peer has detected every crash (timeouts longer than round trips and detection).
//! - **pACKs when checking.** `sascribe-model check` takes a pACK out of the network in the step
//!   that sends it (`--deliver-packs` keeps it in flight; [`SaScribe::eliding_packs`]). Its
//!   delivery changes no actor's state (production's joiner answers its user agent 100
//!   Trying, which is not modelled), so it commutes with every action, no guard or property
//!   reads an undelivered one, and a run that delivers pACKs has a run that delivers each at
//!   once with the same states apart from the network. Losing one only spends the loss budget.
//!   The reduction cuts the states of a configuration whose JOINs cross a hop by 33–71 %;
//!   `model/tests/mutants.rs` checks both ways on every mutant's configuration (same verdicts,
//!   same witnesses, every mutant caught). The corpus and `validate-run` deliver pACKs, so
//!   that production receives them.
//! - **Values and ETags.** A publication body is a small number, a composed state the set of the
//!   live states' numbers (production: a PIDF document composing their tuples); the ETag of a
//!   state is the seq of the change that last set it (unique as long as seqs never roll back). Expiry is a number the root clamps, and an
//!   `Expire` timeout at the root (enabled between commits, within the budget). Subscription
//!   refresh only restarts a local timer in production and is not modelled.
//! - **The root's periodic duties** (expiry check, replication retry) are timeouts enabled only
//!   when they change something: `Expire` as above, `Resend` when a replica the root waits for
//!   has nothing in flight and would now accept (it refused while it still saw the old root).
//! - **Commit before multicast.** The paper leaves open when the root multicasts relative to
//!   replication. Committing only after all replicas hold the state is what makes acknowledged
//!   publications survive failover without a new root ever reusing a seq; with it, the state a
//!   re-JOIN carries is never newer than a replica's within the fault bound, so that mechanism is
//!   exercised (witness `rejoin-carried-state`) but its removal cannot be told apart there.
//!   The same holds for a new root's fetch under a perfect failure detector: every committed
//!   state is at every replica, and a new root is one of them or fetches from them; the fetch
//!   is told apart by the traces (production stamps after the fetched record) and, with false
//!   suspicions, by the checker (mutant `no-fetch`).
//! - **Loss** (`--losses`) of overlay request/response messages (JOIN, pACK, ACK, publish and
//!   its result), which retransmission recovers; and (`--tree-losses`) of multicasts,
//!   REPLICATEs and their acknowledgements, fetches and their replies, and the tree's own
//!   maintenance messages, which the tree's heartbeat round and the root's replication retry
//!   (at a root still fetching: its fetch timeout, asking the peers it awaits again)
//!   recover.
//! - **Tree maintenance** ([`Setup::tree_maintenance`], with `--tree-losses`, and with
//!   `--partition` when there are subscribers), as production
//!   runs it: the heartbeat round ([`protocol::Timer::Heartbeat`]) runs an active root's
//!   duties first, as production's tick does (its record resent to every replica behind
//!   it: the harness runs production's whole tree round for this step), then sends each
//!   child a [`protocol::Msg::Beat`] with the parent's latest seq; a child whose parent it is pushes
//!   a newer state up (a multicast to the parent, so that a root keeps the highest) and
//!   answers [`protocol::Msg::BeatAck`] with its own seq, any other peer answers
//!   [`protocol::Msg::Leave`]; the parent sends a child that is behind its latest state (the
//!   mutant `heartbeat-without-seq`, a parent ignoring the acknowledgement's seq, is caught).
//!   A peer that no longer needs the group, or becomes the root, sends its parent a LEAVE;
//!   the parent drops the branch and leaves in turn if nothing else needs the group there.
//!   A LEAVE can be overtaken by the same peer's later JOIN through the same parent (the
//!   parent then drops the branch it just grafted); the child repairs that with its
//!   **parent timeout** ([`protocol::Timer::ParentTimeout`]: no beat comes; it leaves the
//!   parent and re-JOINs). `validate-run` found the race: without the parent timeout the
//!   model, following a production run on `fig3`, violated `tree-connected`. A partition
//!   breaks tree edges the same way: the cut-off peer declares its children dead and drops
//!   them, and after the heal a child that never noticed the cut still names it as parent.
//!   Without tree maintenance nothing regrafted it (`model/nightly.sh`, `small` with a
//!   subscriber, two publishes and a partition: `tree-connected` and
//!   `subscribers-converge` at a quiescent state, 18 steps), so `--partition` with
//!   subscribers brings tree maintenance, as production always runs it. The round fires only once a multicast or a round's message was lost (a
//!   child behind its parent, nothing in flight between them), the parent timeout only
//!   when the parent no longer holds the child, like every retry here. Without tree
//!   maintenance a parent keeps a branch that left, as if its LEAVE were still on its way.
//!   Production sends the beats of every group a parent shares with a child in one
//!   `Heartbeats` datagram per round (and the acknowledgements in one `HeartbeatAcks`); each
//!   beat is handled as its own group's heartbeat, so the model's per-group round is exact for
//!   one group, and batching only shares datagrams between groups.
//!   NOTIFY delivery to a user agent is assumed reliable: SIP's transaction layer
//!   retransmits a NOTIFY over UDP until it is answered, and a subscription whose NOTIFY
//!   times out ends (RFC 6665 §4.2.2), which the model's user agents cannot notice yet.
//!
//! ## Properties
//! See [`model::PROPERTIES`]. Every safety property, and the liveness of the paper (convergence),
//! is an `always`; only "every request is eventually answered" is an `eventually`.
//! A `sometimes` whose event needs an option the configuration leaves off (a suspicion, an
//! expiry, a handover, a (re)join, a lost multicast: [`model::applicable`]) is not handed to
//! the checker, which evaluates every property at every state it explores; the report calls
//! it "not applicable here".
//! **Beyond k−1 crashes** (`--crashes` at least `--k`, e.g. `--k 1 --crashes 2`) the root
//! and every replica that held a committed state can die with it, and the properties of
//! [`model::DURABILITY_BOUND`] are broken by design: a new root stamps a seq again
//! (`single-committer`), a state members were told is lost (`removal-keeps-others`,
//! `subscribers-converge`, `first-notify-fresh`), and so are the tags and stored results
//! the answers rest on (`central-notifier`, `modify-not-refused`, `publish-applied-once`).
//! `stamp-above-view` is about that case: what survives in the tree is taken in, not
//! undercut. Such a configuration does not claim the bound ones ([`model::claimed`]): the
//! checker is not handed them (nor, fused, their flags), `check` reports them "not claimed
//! here" and judges the others, and `validate-run` checks the others at every step.
//! `tests/mutants.rs` checks the others exhaustively on `no-absorb`'s configuration, and CI
//! on the same.
//!
//! Fourteen safety properties each say that the history never gets one violation flag
//! ([`model::FLAG_PROPERTIES`]). Stateright looks every property's name up in a map shared by
//! its threads at every state, which costs more than testing a bit, so `sascribe-model check`
//! hands it their conjunction, [`model::FLAGS_CLEAN`], instead
//! ([`SaScribe::fusing_flag_properties`]), and the conjunction of the five that read the
//! state ([`model::STATE_PROPERTIES`]), [`model::STATE_CLEAN`], which tests quiescence once
//! for the two that need it: if both hold, each of them does; if one fails, the search runs
//! again with each apart, to name the ones that fail and give each its own counterexample. (A
//! search that may time out checks them apart from the start.) The flags' conjunction made a
//! search that finds nothing about 7 % faster.
//!
//! For the same reason `check` tests a sometimes-property only until its first witness
//! ([`SaScribe::witnessing_once`]): Stateright would otherwise test it at every state, and
//! record a new witness (a write to the shared map, a copy of the path) at each where its
//! flag is set, which, once a failover has happened, is most of them. The verdicts are the
//! same; the witness `check` reports is the first found.
//!
//! **Liveness as the paper means it: at every quiescent state.** A state is *quiescent*
//! ([`SaScribe::quiescent`]) when nothing is in flight to a live actor and no protocol timer is
//! enabled: no crash left to detect, no retransmission due, no replication retry that would
//! make progress. What can still happen there is up to the environment — a crash, an event
//! state's expiry, a user agent subscribing or unsubscribing — and each of these starts new
//! protocol activity. `subscribers-converge` is `always (quiescent ⇒ every publisher's requests
//! at a live peer are answered, every subscriber that sent its SUBSCRIBE to a live peer and did
//! not unsubscribe was accepted and holds the latest committed state)`; `tree-connected` is
//! `always (quiescent ⇒ every accepted live subscriber's peer reaches the live root by parent
//! links whose parents hold the child)`. Being `always` properties they are checked at every
//! reachable quiescent state, not only at terminal ones: a run that converged, then lost a
//! member to a crash or a state to an expiry, must converge again at its next quiescent state
//! (Stateright's `eventually` would be met by the first convergence and never look again).
//!
//! **Where `eventually` is kept.** `subscribe-answered` and `publish-answered` say that each
//! request is *eventually* answered by the root (not by a timeout), which is what is meant: a
//! request answered once stays answered. Stateright reports an `eventually` counterexample only
//! at a terminal state (no enabled action) reached with the property unmet, and misses
//! violations that only show in cycles. The guards above make every behaviour finite: crashes
//! are bounded and never recover, `Detect` fires once per crash, retries fire only after a loss
//! (bounded), expiry is budgeted, a replication retry only fires when it makes progress, and no
//! timer is periodic — so the state graph is acyclic and every maximal path ends in a terminal
//! state, where each `eventually` property is checked. A depth-bounded search (`--depth`) or a
//! simulation reports no `eventually` counterexample on paths it cuts (the quiescent `always`
//! forms are checked on every state they reach).
//!
//! **Refinement of a central notifier (partial).** What user agents see should be what one
//! central RFC 3903/6665 server, applying the committed changes in seq order, would show them.
//! For subscribers that is `notified-was-published` (each NOTIFY is a committed state),
//! `notify-seq-increasing` (in commit order) and `first-notify-fresh` (not older than what was
//! acknowledged before the SUBSCRIBE), with `subscribers-converge` at quiescence; for publishers
//! it is `central-notifier`: a 200 is the commit of that very PUBLISH (its ETag or removal seq,
//! applied by a root and committed), and a 412 names no event state live after the latest
//! commit. Not checked: that a 200's expiry or a NOTIFY's timing matches one central run
//! (the model has no clock), and histories across user agents beyond the shared commit order.
//!
//! **Non-vacuity.** Each safety and liveness property has a mutant the checker catches, on a
//! configuration where the correct model satisfies every property (beyond k−1 crashes, every
//! property not in [`model::DURABILITY_BOUND`]; see [`mutant`] and `tests/mutants.rs`);
//! `k = 0` is refused, so the properties bounded by k−1 crashes
//! (`no-rollback`, `acked-durable`) always say something.
//!
//! ## Traces and their coverage
//! The committed corpus ([`corpus`]) is exported from this model: mutant-directed paths,
//! witnesses, seeded random walks, and **coverage-directed** traces ([`coverage`]). A
//! transition is labelled by what happens (the message delivered or lost, refined where the
//! receiver branches on it; the timer; a crash), the role of the peer that takes it (root, a
//! root still fetching, replica, member, off the tree; with or without local subscribers) and
//! its context (a commit pending at that root, a crash or a loss before). A bounded BFS of each
//! corpus configuration, then seeded walks, lists the labels it can take; every label no trace
//! takes yet gets one, the shortest path found to it. `traces` prints the coverage figure, with
//! and without those traces.

#![warn(missing_docs)]

pub mod cli;
pub mod corpus;
pub mod coverage;
pub mod history;
pub mod model;
pub mod mutant;
pub mod progress;
pub mod protocol;
pub mod setup;
pub mod topology;
pub mod trace;

pub use model::SaScribe;
pub use mutant::Mutant;
pub use setup::{Options, Preset, Setup};
