//! Routing: each event taken from the producers' queue is encoded once per format its live
//! subscribers use and put in each subscriber's queue, or into the target's open coalesced
//! datagram or GSO run.

use std::time::{Duration, Instant};

use super::outbox::Bound;
use super::pool::{BufRef, Pool};
use super::round::{GSO_MAX_BYTES, GSO_MAX_SEGMENTS};
use super::{log_limited, Conn, Open, OpenKind, Queued, Reactor, SendBackend, Slot};
use crate::encode::{Format, MAX_DATAGRAM};
use crate::error::EncodeError;
use crate::publisher::Raised;
use crate::registry::{Coalesce, Route, Snapshot};
use crate::EventName;

/// Counts an event that `slot`'s format could not encode: too large, or (params decoded from
/// `jsonrpc` and raised again) a name the line format cannot carry.
fn count_encode_failure(slot: &mut Slot, e: &EncodeError) {
    match e {
        EncodeError::TooLarge { .. } => slot.counters.failed_oversize += 1,
        _ => slot.counters.failed_other += 1,
    }
}

impl<B: SendBackend> Reactor<B> {
    /// Encodes `msg` once per format its live subscribers use and queues it for each.
    pub(super) fn route(&mut self, snapshot: &Snapshot, msg: &Raised, now: Duration) {
        self.events.dispatched += 1;
        self.batch_left = self.batch_left.saturating_sub(1);
        let index = msg.event.index() as usize;
        let routes = snapshot.routes.get(index).map_or(&[][..], Vec::as_slice);
        if let [route] = routes {
            if let Some(slot_index) = self.sole_slot(route, now) {
                let name = &snapshot.names[index];
                let taken = match route.coalesce {
                    Some(c) => self.append_to_open(slot_index, route.format, c, name, msg),
                    None => self.route_one(slot_index, route.format, name, msg),
                };
                if taken {
                    return;
                }
            }
        }
        let mut encoded: [Option<Result<(BufRef, u32), EncodeError>>; 2] = [None, None];
        let mut live = 0;
        for route in routes.iter().filter(|r| r.is_live(now)) {
            live += 1;
            let slot_index = self.route_slots[route.target as usize];
            let fmt = route.format as usize;
            if encoded[fmt].is_none() {
                encoded[fmt] = Some(self.encode(route.format, &snapshot.names[index], msg, 1));
            }
            let slot = self.slots[slot_index as usize]
                .as_mut()
                .expect("routed slots exist");
            slot.counters.raised += 1;
            match encoded[fmt].as_ref().expect("encoded above") {
                Err(e) => {
                    count_encode_failure(slot, e);
                    log_limited(&mut slot.last_log, &slot.target, e);
                }
                Ok(_) if matches!(slot.conn, Conn::Down { .. }) => {
                    slot.counters.failed_unreachable += 1
                }
                Ok(_) if !slot.queue.below(self.queue_bound) => {
                    slot.counters.dropped_retry_overflow += 1
                }
                Ok((buf, len)) => {
                    let coalesce = route.coalesce.filter(|c| *len as usize <= c.max_bytes());
                    // An open datagram takes this event only if it is coalesced, of the same
                    // format, and fits; otherwise it goes out first, which keeps the order.
                    let fits = slot.open.as_ref().is_some_and(|o| match coalesce {
                        Some(c) => o.format == route.format && o.len + len <= o.room_for(c),
                        None => false,
                    });
                    if slot.open.is_some() && !fits {
                        self.seal_at(slot_index);
                    }
                    match coalesce {
                        None => {
                            let q = Queued::single(self.pool.retain(buf), *len);
                            self.enqueue_at(slot_index, q);
                        }
                        Some(c) => {
                            let slot = self.slots[slot_index as usize]
                                .as_mut()
                                .expect("routed slots exist");
                            if slot.open.is_none() {
                                slot.open = Some(Open {
                                    buf: self.pool.alloc(c.max_bytes()),
                                    len: 0,
                                    events: 0,
                                    format: route.format,
                                    kind: OpenKind::Coalesced {
                                        max_bytes: c.max_bytes() as u32,
                                        deadline: self.batch_time + c.max_delay(),
                                    },
                                });
                                note_open(&mut self.open_slots, slot_index);
                            }
                            let open = slot.open.as_mut().expect("opened above");
                            self.pool
                                .copy(&open.buf, open.len as usize, buf, 0, *len as usize);
                            open.len += len;
                            open.events += 1;
                            open.abide_by(c, self.batch_time);
                        }
                    }
                }
            }
        }
        if live == 0 {
            self.events.unsubscribed += 1;
        }
        for (buf, _) in encoded.into_iter().flatten().flatten() {
            self.pool.release(buf);
        }
    }

    /// The slot of an event's only subscriber, if the fast paths may take the event: the
    /// subscription is live, and its target connected with room in its queue.
    fn sole_slot(&self, route: &Route, now: Duration) -> Option<u32> {
        if !route.is_live(now) {
            return None;
        }
        let slot_index = self.route_slots[route.target as usize];
        let slot = self.slots[slot_index as usize].as_ref()?;
        let ready = matches!(slot.conn, Conn::Up(_)) && slot.queue.below(self.queue_bound);
        ready.then_some(slot_index)
    }

    /// The common case without coalescing, for the event's only subscriber's
    /// [`sole_slot`](Self::sole_slot). Its buffer goes to that queue as it is, with no second
    /// reference to count and release; or, for a UDP target with GSO, the event joins a run
    /// (see [`add_to_run`](Self::add_to_run)). Returns false, having changed nothing, when the
    /// slot holds an open coalesced datagram: [`route`](Self::route) then does it all.
    fn route_one(
        &mut self,
        slot_index: u32,
        format: Format,
        name: &EventName,
        msg: &Raised,
    ) -> bool {
        let slot = self.slots[slot_index as usize]
            .as_mut()
            .expect("routed slots exist");
        if slot.open.as_ref().is_some_and(|o| !o.is_run()) {
            return false;
        }
        let routed = if slot.gso {
            self.add_to_run(slot_index, format, name, msg)
        } else {
            // An open run (GSO just turned off) goes first, in order.
            self.seal_at(slot_index);
            self.encode(format, name, msg, 1)
                .map(|(buf, len)| self.enqueue_at(slot_index, Queued::single(buf, len)))
        };
        let slot = self.slots[slot_index as usize]
            .as_mut()
            .expect("routed slots exist");
        slot.counters.raised += 1;
        if let Err(e) = routed {
            count_encode_failure(slot, &e);
            log_limited(&mut slot.last_log, &slot.target, &e);
        }
        true
    }

    /// Encodes an event for a UDP target with GSO straight into the target's open run if it
    /// continues it (same format, and the same size or shorter, which ends the run); otherwise
    /// the open run is queued and, if this batch holds more events, the event starts a new
    /// one, or else goes alone. So a batch of equal-size events for one target leaves as a few
    /// GSO messages, with no buffer, queue entry or round item per event.
    fn add_to_run(
        &mut self,
        slot_index: u32,
        format: Format,
        name: &EventName,
        msg: &Raised,
    ) -> Result<(), EncodeError> {
        let slot = self.slots[slot_index as usize]
            .as_mut()
            .expect("routed slots exist");
        if let Some(open) = slot.open.as_mut().filter(|o| o.format == format) {
            if let OpenKind::Run {
                segment,
                max_events,
            } = open.kind
            {
                let at = open.len as usize;
                // In the buffer: `max_events` were fitted to it.
                let room = &mut self.pool.bytes_mut(&open.buf)[at..at + segment as usize];
                if let Ok(n) = format.encode_validated(name, &msg.params, room) {
                    self.batch_bytes += n;
                    open.len += n as u32;
                    open.events += 1;
                    if n < segment as usize || open.events == max_events {
                        self.seal_at(slot_index);
                    }
                    return Ok(());
                }
            }
        }
        self.seal_at(slot_index);
        // A run's buffer has room for a full run, whatever the batch holds: its size then
        // depends on the event's size only, so a steady load reuses the same buffers.
        let copies = if self.batch_left > 0 {
            GSO_MAX_SEGMENTS
        } else {
            1
        };
        let (buf, len) = self.encode(format, name, msg, copies)?;
        let capacity = self.pool.get(buf.index()).len();
        let size = len as usize;
        let max_events = (capacity / size)
            .min(GSO_MAX_BYTES / size)
            .min(GSO_MAX_SEGMENTS);
        if max_events < 2 {
            self.enqueue_at(slot_index, Queued::single(buf, len));
        } else {
            let slot = self.slots[slot_index as usize]
                .as_mut()
                .expect("routed slots exist");
            slot.open = Some(Open {
                buf,
                len,
                events: 1,
                format,
                kind: OpenKind::Run {
                    segment: len,
                    max_events: max_events as u32,
                },
            });
            note_open(&mut self.open_slots, slot_index);
        }
        Ok(())
    }

    /// The common case under load of a coalesced subscription, for its only subscriber's
    /// [`sole_slot`](Self::sole_slot): the slot has an open datagram of its format with room.
    /// The event is encoded straight into that datagram (no buffer of its own, no copy).
    /// Returns false, having changed nothing that counts, when that is not the case or the
    /// event does not fit: [`route`](Self::route) then does it all.
    fn append_to_open(
        &mut self,
        slot_index: u32,
        format: Format,
        coalesce: Coalesce,
        name: &EventName,
        msg: &Raised,
    ) -> bool {
        let slot = self.slots[slot_index as usize]
            .as_mut()
            .expect("routed slots exist");
        let Some(open) = slot.open.as_mut().filter(|o| o.format == format) else {
            return false;
        };
        let limit = open.room_for(coalesce);
        if open.len >= limit {
            return false;
        }
        let room = &mut self.pool.bytes_mut(&open.buf)[open.len as usize..limit as usize];
        match format.encode_validated(name, &msg.params, room) {
            Ok(n) => {
                self.batch_bytes += n;
                open.len += n as u32;
                open.events += 1;
                open.abide_by(coalesce, self.batch_time);
                slot.counters.raised += 1;
                true
            }
            Err(_) => false,
        }
    }

    /// Queues a datagram for a slot, or drops it (counted) when the slot's queue is full.
    fn enqueue(
        slot: &mut Slot,
        index: u32,
        q: Queued,
        pool: &mut Pool,
        active: &mut Vec<u32>,
        bound: Bound,
    ) {
        if !slot.queue.below(bound) {
            slot.counters.dropped_retry_overflow += u64::from(q.events);
            pool.release(q.buf);
            return;
        }
        slot.queue.push_back(q);
        if !slot.active && !slot.blocked && matches!(slot.conn, Conn::Up(_)) {
            slot.active = true;
            active.push(index);
        }
    }

    /// Queues a slot's open coalesced datagram or GSO run.
    fn seal(slot: &mut Slot, index: u32, pool: &mut Pool, active: &mut Vec<u32>, bound: Bound) {
        if let Some(o) = slot.open.take() {
            let mut q = Queued::from(o);
            if !slot.queue.is_empty() || slot.blocked {
                // It will wait behind others: in a buffer of its size, not the one made for
                // the most it could have held (64 KB for a coalesced datagram of 15 bytes), so
                // that what a slow receiver holds is bounded by the queue's bytes.
                q.buf = pool.fit(q.buf, q.len as usize);
            }
            Self::enqueue(slot, index, q, pool, active, bound);
        }
    }

    /// [`enqueue`](Self::enqueue) for the slot at `index`.
    fn enqueue_at(&mut self, index: u32, q: Queued) {
        let slot = self.slots[index as usize]
            .as_mut()
            .expect("routed slots exist");
        Self::enqueue(
            slot,
            index,
            q,
            &mut self.pool,
            &mut self.active,
            self.queue_bound,
        );
    }

    /// [`seal`](Self::seal) for the slot at `index`.
    fn seal_at(&mut self, index: u32) {
        let slot = self.slots[index as usize]
            .as_mut()
            .expect("routed slots exist");
        Self::seal(
            slot,
            index,
            &mut self.pool,
            &mut self.active,
            self.queue_bound,
        );
    }

    /// Queues the coalesced datagrams whose time is up, and the GSO runs (all of them when
    /// shutting down).
    pub(super) fn seal_due(&mut self, now: Instant) {
        let all = self.shutdown_deadline.is_some();
        let mut open_slots = std::mem::take(&mut self.open_slots);
        open_slots.retain(|&i| {
            let Some(slot) = self.slots[i as usize].as_mut() else {
                return false;
            };
            match &slot.open {
                Some(o) if all || o.deadline().is_none_or(|d| now >= d) => {
                    Self::seal(slot, i, &mut self.pool, &mut self.active, self.queue_bound);
                    false
                }
                Some(_) => true,
                None => false,
            }
        });
        self.open_slots = open_slots;
    }

    /// The earliest deadline of an open coalesced datagram.
    pub(super) fn next_seal(&self) -> Option<Instant> {
        self.open_slots
            .iter()
            .filter_map(|&i| self.slots[i as usize].as_ref()?.open.as_ref()?.deadline())
            .min()
    }

    /// Encodes into a pooled buffer of the size the params suggest, with room for `copies`
    /// of that (a GSO run); exactly as needed when that was too small (values with many
    /// escapes).
    fn encode(
        &mut self,
        format: Format,
        name: &EventName,
        msg: &Raised,
        copies: usize,
    ) -> Result<(BufRef, u32), EncodeError> {
        /// Framing beyond the event name and the packed params (`jsonrpc`'s is the larger).
        const FRAMING: usize = 64;
        let estimate = name.as_str().len() + msg.params.packed_len() + FRAMING;
        let buf = self
            .pool
            .alloc((estimate * copies).min(GSO_MAX_BYTES).max(estimate));
        let (buf, encoded) =
            match format.encode_validated(name, &msg.params, self.pool.bytes_mut(&buf)) {
                Err(EncodeError::TooLarge { len, .. }) if len <= MAX_DATAGRAM => {
                    // Larger than the estimate, not than a datagram: again, in its own size.
                    self.pool.release(buf);
                    let buf = self.pool.alloc(len);
                    let encoded =
                        format.encode_validated(name, &msg.params, self.pool.bytes_mut(&buf));
                    (buf, encoded)
                }
                encoded => (buf, encoded),
            };
        match encoded {
            Ok(n) => {
                self.batch_bytes += n;
                Ok((buf, n as u32))
            }
            Err(e) => {
                self.pool.release(buf);
                Err(e)
            }
        }
    }
}

/// Lists a slot as having an open datagram or run (once).
fn note_open(open_slots: &mut Vec<u32>, slot_index: u32) {
    if !open_slots.contains(&slot_index) {
        open_slots.push(slot_index);
    }
}
