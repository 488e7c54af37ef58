"""Exact checks of rate limits over arrival times, as the platform counts them.

A limit "count per window_s" holds when no half-open window [t, t + window_s)
holds more than `count` arrivals: two arrivals exactly window_s apart are not
in the same window (Telegram's 1 per second allows posts at 0.0 and 1.0).
Times are seconds on one clock (the fakes record time.monotonic(), which is
the same clock in every process of the machine).

    from limits_check import check_count, check_gap, budget_use, group_by
    for chat, recs in group_by(tg.arrivals(accepted=True), "chat_id").items():
        check_count([r["mono"] for r in recs], 20, 60.0, "group %s" % chat)

SlidingWindow is the same rule used the other way round, by the fakes, to
admit or refuse an arrival.
"""
import bisect
import collections
import math

from harness import TestFailure

Window = collections.namedtuple("Window", "count start end first last")
Window.__doc__ = """The fullest window: `count` arrivals in [start, end); they are
sorted_times[first:last]. start is None when there were no arrivals."""


def _sorted(times):
    return sorted(float(t) for t in times)


def max_in_window(times, window_s):
    """The largest number of arrivals in any half-open window [t, t + window_s).

    Some fullest window starts at an arrival, so a two-pointer pass over the
    sorted times is exact: O(n log n) for the sort, O(n) after. Returns a
    Window; of several fullest windows, the earliest."""
    if window_s <= 0:
        raise ValueError("window_s must be positive")
    ts = _sorted(times)
    best = Window(0, None, None, 0, 0)
    j = 0
    for i, t in enumerate(ts):
        if j < i:
            j = i
        while j < len(ts) and ts[j] < t + window_s:
            j += 1
        if j - i > best.count:
            best = Window(j - i, t, t + window_s, i, j)
    return best


def _fmt(ts, origin):
    return ", ".join("%+.3f" % (t - origin) for t in ts)


def check_count(times, count, window_s, what):
    """Fails (TestFailure) if any window [t, t + window_s) holds more than `count` arrivals.

    The message names the fullest window and its arrivals (seconds after the
    first arrival of all). Returns the fullest Window."""
    ts = _sorted(times)
    w = max_in_window(ts, window_s)
    if w.count > count:
        origin = ts[0]
        over = sum(1 for i in range(len(ts))
                   if bisect.bisect_left(ts, ts[i] + window_s) - i > count)
        raise TestFailure(
            "%s: %d arrivals in the window [%+.3f, %+.3f) s, limit %d per %g s "
            "(%d windows over the limit; times after the first arrival): %s"
            % (what, w.count, w.start - origin, w.end - origin, count, window_s, over,
               _fmt(ts[w.first:w.last], origin)))
    return w


def min_gap(times):
    """(smallest gap between two consecutive arrivals, (earlier, later)), or (None, None)."""
    ts = _sorted(times)
    best, pair = None, None
    for a, b in zip(ts, ts[1:]):
        if best is None or b - a < best:
            best, pair = b - a, (a, b)
    return best, pair


def check_gap(times, gap_s, what):
    """Fails if two arrivals are less than gap_s apart (exactly gap_s is allowed).

    Returns the smallest gap and its pair."""
    gap, pair = min_gap(times)
    if gap is not None and gap < gap_s:
        origin = min(times)
        raise TestFailure("%s: arrivals %.3f s apart (at %+.3f and %+.3f s after the first), "
                          "at least %g s required" % (what, gap, pair[0] - origin,
                                                      pair[1] - origin, gap_s))
    return gap, pair


def budget_use(times, count, window_s, start, end):
    """Posts made in [start, end) over the posts the limit allows there at its sustained rate.

    The allowance is count * (end - start) / window_s: exact when the span is
    a whole number of windows (a bursty sender can exceed it by up to `count`
    in a span that is not). 1.0 means the whole budget was used; a saturated
    pipeline should come close ("at least 0.95")."""
    if end <= start:
        raise ValueError("empty interval [%r, %r)" % (start, end))
    made = sum(1 for t in times if start <= t < end)
    return made / (count * (end - start) / window_s)


def group_by(records, key):
    """Records grouped by key: a field name, a tuple of field names, or a function.

    Returns {key value: [records in their order]}, keys in first-seen order."""
    if callable(key):
        fn = key
    elif isinstance(key, tuple):
        def fn(r):
            return tuple(r[k] for k in key)
    else:
        def fn(r):
            return r[key]
    out = {}
    for r in records:
        out.setdefault(fn(r), []).append(r)
    return out


def evenness(times, bucket_s, start=None, end=None):
    """Arrivals per bucket [start + k*bucket_s, start + (k+1)*bucket_s), in order.

    start defaults to the first arrival, end to just past the last; a limit
    kept by bursts shows as 21, 21, 0, 0 where an even one shows 10, 11, 10, 11."""
    if bucket_s <= 0:
        raise ValueError("bucket_s must be positive")
    ts = _sorted(times)
    if start is None:
        if not ts:
            return []
        start = ts[0]
    if end is None:
        last = ts[-1] if ts else start
        n = int((last - start) // bucket_s) + 1 if last >= start else 0
    else:
        n = max(0, math.ceil((end - start) / bucket_s))
    counts = [0] * n
    for t in ts:
        if t >= start and (end is None or t < end):
            k = int((t - start) // bucket_s)
            if k < n:
                counts[k] += 1
    return counts


class SlidingWindow:
    """A limit of `count` arrivals per half-open window of window_s, applied at arrival.

    admit(t) -> (True, 0.0) and t counted if every window holding t stays
    within the limit; else (False, wait): t is left out, and wait is the
    seconds from t until the oldest arrival in the way leaves the window
    (what a 429's retry_after rounds up). Arrivals may be offered slightly out of order (two request
    threads): the check covers every window t falls in, so the admitted
    times always pass check_count."""

    def __init__(self, count, window_s):
        self.count = count
        self.window = window_s
        self.times = []        # admitted, sorted

    def _at(self, i, t, k):
        """The k-th time of the list with t inserted at index i."""
        return self.times[k] if k < i else t if k == i else self.times[k - 1]

    def check(self, t):
        """(True, 0.0) if t would be admitted, else (False, wait); counts nothing."""
        ts, n = self.times, self.count
        i = bisect.bisect_right(ts, t)
        size = len(ts) + 1
        for j in range(max(0, i - n), i + 1):       # every run of n+1 that holds t
            if j + n >= size:
                return True, 0.0
            if self._at(i, t, j + n) - self._at(i, t, j) < self.window:
                break
        else:
            return True, 0.0
        if n == 0:
            return False, float("inf")
        lo = bisect.bisect_right(ts, t - self.window)   # admitted in (t - window, t]
        recent = ts[lo:i]
        if len(recent) >= n:
            return False, max(recent[len(recent) - n] + self.window - t, 0.0)
        return False, 0.0       # only later arrivals (offered first) are in the way

    def add(self, t):
        """Counts t (whatever check said: the caller admitted it)."""
        bisect.insort(self.times, t)

    def admit(self, t):
        ok, wait = self.check(t)
        if ok:
            self.add(t)
        return ok, wait

    def __len__(self):
        return len(self.times)


def retry_after_seconds(wait_s):
    """A wait as a platform states it: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait_s - 1e-9))
