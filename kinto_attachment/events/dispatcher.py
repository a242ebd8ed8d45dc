"""The dispatcher: daemon threads in each server process that deliver the outbox, one per
destination (a *lane*): a destination that hangs (a webhook that never answers costs
``timeout_seconds`` an attempt) holds up its own events, never another's.

A lane wakes when a transaction that recorded events commits, and every ``poll_seconds`` (rows
of other nodes, retries that came due, leases that ran out). Each round claims its
destination's due rows (:mod:`.claims`), delivers each and marks it: ``delivered`` (its blob held
``min(fetch_grace_seconds, url_expires_seconds)`` more), or retried after a delay doubling at
each attempt (``retry_seconds``, up to an hour, or what a webhook's ``Retry-After`` asks up to
that hour), or ``dead`` after ``max_attempts``, or once its next attempt would come after
``max_age_seconds`` (a long ``Retry-After`` once kept an event pending for as long as it
asked, past its max age, and the next events of its subject behind it). Delivered rows are
removed once their hold is over, by whichever lane finds it due, which also fails the rows of
destinations no longer configured (to their death, as retries). A crash anywhere leaves the
row pending: it is delivered again (at least once).
"""

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import transaction
from kinto.core.utils import msec_time

from ..state import outbox
from . import claims, cloudevents, urls
from .amqp import Amqp
from .failures import Failed
from .redis import Redis
from .webhook import Webhook


logger = logging.getLogger(__name__)

KINDS = {kind.name: kind for kind in (Webhook, Redis, Amqp)}
#: Rows claimed at once.
BATCH = 50
#: Longest delay between two attempts, whatever a ``Retry-After`` asks.
MAX_DELAY = 3600
#: Seconds between removals of delivered rows (and observations of the pending ones).
HOUSEKEEPING = 30
#: Shortest time between the starts of two rounds, in seconds. An idle dispatcher delivers at
#: once; under a stream of uploads, a round takes the events of the commits of the last tenth
#: of a second together (one claim, one mark), instead of two transactions per event in the
#: process that serves the uploads.
ROUND_INTERVAL = 0.1
#: Seconds of a claim's lease besides three delivery timeouts: what a crashed dispatcher's
#: rows wait before another one takes them.
LEASE_MARGIN = 10


class Unmeasured:
    """What the dispatcher reports without metrics: nothing (with them:
    :class:`kinto_attachment.metrics.EventMeasures`)."""

    def delivered(self, destination, latency_seconds):
        pass

    def failed(self, destination, dead):
        pass

    def pending(self, destination, count):
        pass


class Dispatcher:
    def __init__(self, registry):
        self._registry = registry
        self._options = registry.attachment_settings.events
        self._claims = claims.for_storage(registry.storage)
        self._destinations = {}
        #: Each lane's wake-up, and thread (by destination).
        self._woken = {name: threading.Event() for name in self._options.used}
        self._lanes = {}
        self._stopped = threading.Event()
        self._housekeeping = threading.Lock()
        self._housekept = 0.0
        #: Told of each delivery, failure and count of pending events.
        self.measures = Unmeasured()

    def wake(self):
        for woken in self._woken.values():
            woken.set()

    @contextlib.contextmanager
    def _bookkeeping(self):
        """A transaction of the dispatcher's marks, which need not wait for the disk
        (:data:`.claims.UNSYNCED`)."""
        with transaction.manager:
            self._claims.unsynced()
            yield

    def start(self):
        for name in self._options.used:
            thread = threading.Thread(
                target=self._run, args=(name,), name=f"attachment-events-{name}", daemon=True
            )
            thread.start()
            self._lanes[name] = thread

    def stop(self):
        """Stop the lanes (each ends the round under way), then close the connections of the
        destinations whose lane has ended (a lane's round lasts its lease at most)."""
        self._stopped.set()
        self.wake()
        for lane in self._lanes.values():
            lane.join(timeout=3 * self._options.timeout_seconds + LEASE_MARGIN)
        for name, destination in self._destinations.items():
            lane = self._lanes.get(name)
            if lane is None or not lane.is_alive():
                destination.close()

    def _run(self, name):
        """The lane of the destination ``name``."""
        woken = self._woken[name]
        # Not at once: a process that only builds the app (``kinto migrate`` on a database
        # without tables yet, a command) is gone before the first round. A commit's wake, or
        # the first poll, starts it.
        woken.wait(self._options.poll_seconds)
        woken.clear()
        while not self._stopped.is_set():
            started = time.monotonic()
            try:
                busy = self.run_once(destination=name) >= BATCH
                self._housekeep_if_due()
            except Exception:  # The storage is down, say: try again at the next round.
                logger.exception("Events: dispatch to %s failed", name)
                busy = False
            if not busy:
                woken.wait(self._options.poll_seconds)
                woken.clear()
            self._stopped.wait(ROUND_INTERVAL - (time.monotonic() - started))

    def _housekeep_if_due(self):
        """:meth:`housekeep`, in one lane at a time, every :data:`HOUSEKEEPING` seconds."""
        if time.monotonic() - self._housekept < HOUSEKEEPING:
            return
        if self._housekeeping.acquire(blocking=False):
            try:
                if time.monotonic() - self._housekept >= HOUSEKEEPING:
                    self.housekeep()
            finally:
                self._housekeeping.release()

    def run_once(self, now=None, destination=None):
        """Claim and deliver the due rows of ``destination`` (None: of every destination in
        use, each in a thread of its own, as their lanes do); return how many were claimed.

        A row is only delivered while its lease has time left for a whole attempt (a slow
        destination makes a batch long) and for its mark: past that, another dispatcher could
        claim it and deliver it too, and the next event of its subject before this copy. What
        is left is released at once, for the next round of any dispatcher. The rows delivered
        are marked together at the end of the round (a crash before leaves them to be
        delivered again); a batch never holds two rows of one subject and destination, since a
        claim takes the oldest pending row of each."""
        if destination is None:
            names = self._options.used
            if len(names) == 1:
                return self.run_once(now, names[0])
            with ThreadPoolExecutor(len(names), thread_name_prefix="attachment-events") as lanes:
                return sum(lanes.map(lambda name: self.run_once(now, name), names))
        now = now or msec_time()
        timeout = self._options.timeout_seconds
        until = now + int((3 * timeout + LEASE_MARGIN) * 1000)
        claimed = self._claims.claim(now, until, BATCH, destination)
        delivered = []

        def in_time():
            return msec_time() + (2 * timeout + 5) * 1000 <= until

        for position, row in enumerate(claimed):
            outcome = self._deliver(row, in_time)
            if outcome is None:
                self._release(claimed[position:])
                break
            if outcome:
                delivered.append(row)
        if delivered:
            self._delivered(delivered)
        return len(claimed)

    def _release(self, rows):
        with self._bookkeeping():
            for row in rows:
                self._claims.change(row, claimed_until=0)

    def housekeep(self):
        """Remove the delivered rows whose hold is over; observe the pending ones; fail the
        due rows of destinations no longer configured (no lane claims them)."""
        self._housekept = time.monotonic()
        storage = self._registry.storage
        with self._bookkeeping():
            outbox.remove(storage, outbox.DELIVERED, before=msec_time())
            for destination in self._options.used:
                pending = outbox.count(storage, destination, outbox.PENDING)
                self.measures.pending(destination, pending)
        for name in KINDS.keys() - set(self._options.used):
            self.run_once(destination=name)

    def _destination(self, name):
        if name not in self._destinations:
            if name not in self._options.used:
                raise Failed(f"{name}: no longer configured")
            self._destinations[name] = KINDS[name](self._options)
        return self._destinations[name]

    def _deliver(self, row, in_time):
        """Send ``row`` to its destination: True once it took it, False when the row is
        marked for a retry (or dead); None, untried, when the lease has no time left for an
        attempt (``in_time()`` false). Its fetch URL is made first: a store's signing may take
        long (a credentials refresh, an IAM call), and a copy sent once another dispatcher
        claimed the row could come after the subject's next event; made past the time for
        an attempt, it counts as a failed one (retried, dead in the end, not stalled)."""
        if not in_time():
            return None
        event = row["event"]
        try:
            if row.get("key"):
                started = time.monotonic()
                store = self._registry.attachment_store
                event = cloudevents.with_url(
                    event, urls.fetch_url(store, self._options, event, row["key"])
                )
                if not in_time():
                    took = time.monotonic() - started
                    raise Failed(f"its fetch URL took {took:.1f}s: no time left to send it")
            self._destination(row["destination"]).deliver(cloudevents.dumps(event), event)
        except Failed as failure:
            self._failed(row, str(failure), failure.retry_after)
        except Exception as e:  # A store that cannot presign, a bug: retried all the same.
            logger.exception("Events: delivery of %s failed", row["id"])
            self._failed(row, f"{type(e).__name__}: {e}", None)
        else:
            return True
        return False

    def _delivered(self, rows):
        """Mark ``rows`` delivered, the blobs of ``stored`` events held
        ``min(fetch_grace_seconds, url_expires_seconds)`` more."""
        now = msec_time()
        hold = min(self._options.fetch_grace_seconds, self._options.url_expires_seconds)
        with self._bookkeeping():
            marked = self._claims.delivered(rows, now, hold * 1000)
        for row in rows:
            if row["id"] in marked:
                self.measures.delivered(row["destination"], (now - row["created"]) / 1000)
            else:
                _lease_lost(row, "delivered")

    def _expires(self, row):
        """When ``row`` dies undelivered: ``max_age_seconds`` after its creation, or after
        the operator revived it."""
        born = max(row["created"], row.get("revived_at") or 0)
        return born + self._options.max_age_seconds * 1000

    def _failed(self, row, error, retry_after):
        """Mark ``row`` for a retry, or dead: after ``max_attempts``, or when the retry would
        come at or after its max age. Dead at once, not when that retry comes, it lets the
        next row of its subject go now."""
        now = msec_time()
        attempts = row["attempts"] + 1
        delay = self._options.retry_seconds * 2 ** min(attempts - 1, 32)
        delay = min(max(delay, retry_after or 0), MAX_DELAY)
        next_attempt_at = now + int(delay * 1000)
        dead = attempts >= self._options.max_attempts or next_attempt_at >= self._expires(row)
        logger.warning(
            "Events: %s to %s failed (attempt %d%s): %s",
            row["event"]["id"],
            row["destination"],
            attempts,
            ", dead" if dead else f", next in {delay:.1f}s",
            error,
        )
        with self._bookkeeping():
            changed = self._claims.change(
                row,
                state=outbox.DEAD if dead else outbox.PENDING,
                attempts=attempts,
                last_error=error[:1000],
                next_attempt_at=next_attempt_at,
                claimed_until=0,
            )
        if changed:
            self.measures.failed(row["destination"], dead)
        else:
            _lease_lost(row, "failed")


def _lease_lost(row, outcome):
    logger.warning(
        "Events: %s to %s %s after its lease ran out: left as the dispatcher that claimed it"
        " since makes it",
        row["event"]["id"],
        row["destination"],
        outcome,
    )
