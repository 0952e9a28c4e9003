"""Reconciliation: the journal's positions and open orders against a venue's own reports.

``compare`` takes what the journal holds for one venue (positions, the orders it believes
working) and what the venue reported (positions; working orders when the venue's report
lists them) and returns the differences, one line each. No difference is *reconciled*;
any difference is a mismatch, and stays one until a later comparison agrees
(fail-closed). ``ReconcileState`` keeps, per venue, whether it is reconciled and since
when, so status can say "unreconciled since 12:03:07"; ``mark_unreconciled`` makes a venue
unreconciled without a comparison, when the journal applied a trade bust or correction or
a fill for an order it never sent, until the venue's positions agree again.
``ReconcileSchedule`` says when each venue is next due for a periodic comparison. Time is passed in.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from messages import VenuePosition

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Comparison:
    """The outcome of one comparison with a venue."""

    venue: str
    differences: tuple[str, ...]
    """One line per symbol or order that disagrees; empty when reconciled."""
    orders_compared: bool
    """True when the venue's report listed its working orders and they were compared."""

    @property
    def reconciled(self) -> bool:
        """True when nothing disagrees."""
        return not self.differences


def net_positions(reported: Iterable[VenuePosition]) -> dict[str, Decimal]:
    """The venue's quantity per symbol (several lines for one symbol are summed)."""
    net: dict[str, Decimal] = {}
    for position in reported:
        net[position.symbol] = net.get(position.symbol, ZERO) + position.quantity
    return net


ORDER_PREFIX = "order "
"""How every line of a difference about an order begins (lines about positions begin with
the symbol)."""


def compare(venue: str, journal_positions: Mapping[str, Decimal], reported: Iterable[VenuePosition],
            journal_working: Collection[str] = (),
            venue_working: Collection[str] | None = None,
            unsettled: Collection[str] = ()) -> Comparison:
    """Compare one venue. ``journal_positions``: signed quantity per symbol as the journal
    holds it; ``reported``: the venue's positions (a symbol absent is flat);
    ``journal_working``: client order ids the journal believes working there;
    ``venue_working``: the ids the venue reports working, or None when its report does not
    list them (the orders are then not compared); ``unsettled``: orders whose journal state
    changed too recently to be compared (see ``unsettled_orders``), skipped on both sides.

    An order working on one side only is a difference either way: working at the venue
    while the journal holds it ended (or has never heard of it: an order placed elsewhere),
    or working in the journal while the venue does not know it (ended there unseen, or never
    received)."""
    venue_net = net_positions(reported)
    differences = [
        f"{symbol}: journal {journal_positions.get(symbol, ZERO)}, venue {venue_net.get(symbol, ZERO)}"
        for symbol in sorted(set(venue_net) | set(journal_positions))
        if journal_positions.get(symbol, ZERO) != venue_net.get(symbol, ZERO)
    ]
    if venue_working is not None:
        skipped = set(unsettled)
        ours, theirs = set(journal_working) - skipped, set(venue_working) - skipped
        differences += [f"{ORDER_PREFIX}{coid}: working in the journal, not at the venue"
                        for coid in sorted(ours - theirs)]
        differences += [f"{ORDER_PREFIX}{coid}: working at the venue, not in the journal"
                        for coid in sorted(theirs - ours)]
    return Comparison(venue=venue, differences=tuple(differences), orders_compared=venue_working is not None)


def order_differences(differences: Iterable[str]) -> tuple[str, ...]:
    """The lines of a comparison's differences that are about orders."""
    return tuple(line for line in differences if line.startswith(ORDER_PREFIX))


def unsettled_orders(changed_ns: Mapping[str, int], compared_ns: int, settle_ns: int) -> frozenset[str]:
    """The orders not to compare at ``compared_ns``: those whose journal state changed
    (submitted, acknowledged, filled, ended) less than ``settle_ns`` before it, or after it.

    A venue's list of working orders is a snapshot taken a moment before it reaches the
    journal's side: an order submitted just before may not be at the venue yet, and one
    ended just before may still be listed. Such an order is compared at the next report,
    once it has settled."""
    return frozenset(coid for coid, ns in changed_ns.items() if ns > compared_ns - settle_ns)


def prune_changes(changed_ns: dict[str, int], now_ns: int, settle_ns: int) -> None:
    """Forget the changes that no longer make an order unsettled at ``now_ns`` (in place)."""
    for coid in [coid for coid, ns in changed_ns.items() if ns <= now_ns - settle_ns]:
        del changed_ns[coid]


@dataclass(slots=True)
class VenueReconciliation:
    """One venue's standing."""

    reconciled: bool | None = None
    """None before the first comparison."""
    since_ns: int = 0
    """When the venue entered its current standing (wall clock ns)."""
    last_ns: int = 0
    """When it was last compared."""
    differences: tuple[str, ...] = ()
    new_mismatch: bool = False
    """The last comparison disagreed, and not with the same differences as the one before
    (raise it once: the same mismatch found again is the same incident)."""
    streak: int = 0
    """Consecutive comparisons that disagreed."""
    pending: bool = False
    """The last comparison disagreed but the disagreement is not confirmed yet: the standing
    is unchanged and the venue is to be asked again soon."""
    amended: bool = False
    """Unreconciled by an event the journal applied (a trade bust or correction, a fill for
    an order never sent), not by a comparison: until the venue's positions are compared
    again, a disagreement is confirmed as for a reconciled venue (it may be a report on its
    way), and an agreement reconciles it."""


@dataclass(slots=True)
class ReconcileState:
    """Every venue's standing, updated by each comparison.

    A venue that was reconciled (or not compared yet) becomes unreconciled only when
    ``confirmations`` comparisons in a row disagree: a fill the venue has made and that is
    still on its way to the journal makes one comparison disagree, and is no incident. The
    caller asks the venue again soon while a disagreement is ``pending``. A venue already
    unreconciled stays so on the first disagreement, and any agreement reconciles it.
    """

    confirmations: int = 1
    venues: dict[str, VenueReconciliation] = field(default_factory=dict)

    def record(self, comparison: Comparison, now_ns: int) -> VenueReconciliation:
        """Apply a comparison made at ``now_ns``; the venue's new standing."""
        standing = self.venues.setdefault(comparison.venue, VenueReconciliation())
        standing.streak = 0 if comparison.reconciled else standing.streak + 1
        standing.pending = (not comparison.reconciled
                            and (standing.reconciled is not False or standing.amended)
                            and standing.streak < self.confirmations)
        if standing.pending:
            standing.new_mismatch = False
            return standing
        standing.new_mismatch = not comparison.reconciled and not (
            standing.reconciled is False and standing.differences == comparison.differences)
        if standing.reconciled is not comparison.reconciled:
            standing.since_ns = now_ns
        standing.reconciled = comparison.reconciled
        standing.last_ns = now_ns
        standing.differences = comparison.differences
        standing.amended = False
        return standing

    def mark_unreconciled(self, venue: str, reason: str, now_ns: int) -> VenueReconciliation:
        """The journal applied something the venue's positions must confirm (a trade bust
        or correction, a fill for an order never sent): ``venue`` is unreconciled from
        ``now_ns`` until a comparison agrees. ``reason`` is one line; several such events add their lines."""
        standing = self.venues.setdefault(venue, VenueReconciliation())
        if standing.reconciled is not False:
            standing.since_ns = now_ns
            standing.differences = ()
        standing.reconciled = False
        standing.amended = True
        standing.pending = False
        standing.new_mismatch = False
        standing.streak = 0
        if reason not in standing.differences:
            standing.differences = (*standing.differences, reason)
        return standing


@dataclass(slots=True)
class ReconcileSchedule:
    """When each venue is next due for a periodic comparison: ``interval_s`` after its last
    one, whatever triggered that one (a reconnect, a failsafe round, the period)."""

    interval_s: float
    due_at: dict[str, float] = field(default_factory=dict)
    """Next due time per venue (monotonic seconds)."""

    def compared(self, venue: str, now: float) -> None:
        """``venue`` was compared at ``now``."""
        self.due_at[venue] = now + self.interval_s

    def forget(self, venue: str) -> None:
        """``venue`` cannot be asked (its connector is down) until ``compared`` or ``due``."""
        self.due_at.pop(venue, None)

    def due(self, venues: Iterable[str], now: float) -> list[str]:
        """The venues among ``venues`` due at ``now`` (never compared ones included); each
        is pushed one interval on, so an unanswered request is asked again a period later."""
        due = [venue for venue in venues if self.due_at.get(venue, now) <= now]
        for venue in due:
            self.due_at[venue] = now + self.interval_s
        return due

    def next_due(self) -> float | None:
        """The earliest due time, None when no venue is scheduled."""
        return min(self.due_at.values(), default=None)
