#!/usr/bin/env python3
"""Unit tests of tests/limits_check.py: exact windows, off-by-one edges, and the
admission rule the fakes use, checked against brute force on random arrivals."""
import random

from harness import TestFailure, check, main
from limits_check import (SlidingWindow, budget_use, check_count, check_gap, evenness, group_by,
                          max_in_window, min_gap, retry_after_seconds)


def brute_max(times, window):
    """The fullest half-open window, by trying every arrival as its start."""
    return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


def raises(fn, *args):
    """The TestFailure message fn(*args) raised; fails if it raised none."""
    try:
        fn(*args)
    except TestFailure as e:
        return str(e)
    raise AssertionError("%s%r did not fail" % (fn.__name__, args))


def test_max_in_window_edges(_bin):
    check(max_in_window([], 1.0).count == 0, "empty")
    check(max_in_window([], 1.0).start is None, "empty has no window")
    w = max_in_window([5.0], 1.0)
    check((w.count, w.start, w.end) == (1, 5.0, 6.0), "one arrival: %s" % (w,))
    # Exactly a window apart: not in the same half-open window.
    check(max_in_window([0.0, 1.0], 1.0).count == 1, "0 and 1 share [0, 1)")
    check(max_in_window([0.0, 1.0, 2.0, 3.0], 1.0).count == 1, "a 1 s cadence")
    check(max_in_window([0.0, 0.999], 1.0).count == 2, "0 and 0.999 not together")
    check(max_in_window([0.0, 0.0, 0.0], 1.0).count == 3, "equal times")
    # Unsorted input; the window reported is the fullest, earliest one.
    w = max_in_window([9.0, 3.5, 1.0, 3.0, 3.9, 1.5], 1.0)
    check((w.count, w.start, w.end) == (3, 3.0, 4.0), "window %s" % (w,))
    check((w.first, w.last) == (2, 5), "indices %s" % (w,))
    # 20 per 60 s at exactly 3 s spacing: 21 posts fit in 60 s... but never 21 in a window.
    cadence = [3.0 * i for i in range(41)]
    check(max_in_window(cadence, 60.0).count == 20, "3 s cadence in 60 s windows")
    check(max_in_window([2.999 * i for i in range(41)], 60.0).count == 21,
          "2.999 s cadence should put 21 in a window")
    for bad in (0, -1):
        try:
            max_in_window([1.0], bad)
            raise TestFailure("window %r accepted" % bad)
        except ValueError:
            pass


def test_max_in_window_matches_brute_force(_bin):
    rng = random.Random(7)
    for trial in range(300):
        n = rng.randrange(0, 40)
        # Quarter seconds are exact in binary: many arrivals fall exactly on window edges.
        times = [rng.randrange(0, 40) * 0.25 for _ in range(n)]
        window = rng.choice([0.25, 0.5, 1.0, 1.25, 3.0])
        w = max_in_window(times, window)
        want = brute_max(times, window)
        check(w.count == want, "trial %d: %d, brute force %d (%s, %s)"
              % (trial, w.count, want, times, window))
        if n:
            inside = [t for t in times if w.start <= t < w.end]
            check(len(inside) == w.count, "trial %d: the window reported holds %d, not %d"
                  % (trial, len(inside), w.count))


def test_check_count_and_its_message(_bin):
    check(check_count([3.0 * i for i in range(41)], 20, 60.0, "group").count == 20,
          "a 3 s cadence is within 20 per 60 s")
    check_count([], 1, 1.0, "nothing")
    check_count([0.0, 1.0, 2.0], 1, 1.0, "private chat at exactly 1 s")
    msg = raises(check_count, [0.0, 0.5, 1.0, 1.2], 2, 1.0, "bot 7")
    check("bot 7" in msg and "3 arrivals" in msg and "[+0.500, +1.500)" in msg
          and "limit 2 per 1 s" in msg and "+0.500, +1.000, +1.200" in msg,
          "message: %s" % msg)
    # One too many is caught; the count of windows over is given.
    msg = raises(check_count, [0.0, 0.1, 0.2, 0.3], 3, 1.0, "x")
    check("4 arrivals" in msg and "(1 windows over" in msg, "message: %s" % msg)
    msg = raises(check_count, [0.0, 0.0], 1, 0.001, "same instant")
    check("2 arrivals" in msg, msg)


def test_check_gap(_bin):
    check(min_gap([]) == (None, None) and min_gap([1.0]) == (None, None), "no pairs")
    gap, pair = check_gap([0.0, 45.0, 90.0], 45.0, "philosopher")
    check(gap == 45.0 and pair == (0.0, 45.0), "exactly the gap is allowed: %s %s" % (gap, pair))
    msg = raises(check_gap, [10.0, 0.0, 55.0, 44.9], 45.0, "philosopher")
    check("philosopher" in msg and "10.000 s apart" in msg and "+10.000" in msg
          and "+0.000" in msg, "message: %s" % msg)
    msg = raises(check_gap, [0.0, 100.0, 144.99], 45.0, "p")
    check("44.990 s apart" in msg and "+100.000 and +144.990" in msg, msg)


def test_budget_use(_bin):
    even = [3.0 * i for i in range(20)]                 # 20 in [0, 60)
    check(budget_use(even, 20, 60.0, 0.0, 60.0) == 1.0, "a full minute")
    check(budget_use(even, 20, 60.0, 0.0, 120.0) == 0.5, "half of two minutes")
    # Half-open: an arrival at `end` is not counted, one at `start` is.
    check(budget_use([0.0, 60.0], 1, 60.0, 0.0, 60.0) == 1.0, "edges")
    check(budget_use([60.0], 1, 60.0, 0.0, 60.0) == 0.0, "end excluded")
    check(abs(budget_use([3.0 * i for i in range(19)], 20, 60.0, 0.0, 60.0) - 0.95) < 1e-12,
          "19 of 20")
    try:
        budget_use(even, 20, 60.0, 5.0, 5.0)
        raise TestFailure("an empty interval accepted")
    except ValueError:
        pass


def test_group_by(_bin):
    recs = [{"bot": "a", "chat": 1, "n": 0}, {"bot": "b", "chat": 1, "n": 1},
            {"bot": "a", "chat": 2, "n": 2}, {"bot": "a", "chat": 1, "n": 3}]
    g = group_by(recs, "bot")
    check(list(g) == ["a", "b"] and [r["n"] for r in g["a"]] == [0, 2, 3], "by field: %s" % g)
    g = group_by(recs, ("bot", "chat"))
    check(sorted(g) == [("a", 1), ("a", 2), ("b", 1)] and len(g[("a", 1)]) == 2, "by tuple")
    g = group_by(recs, lambda r: r["n"] % 2)
    check([r["n"] for r in g[0]] == [0, 2], "by function")
    check(group_by([], "bot") == {}, "empty")


def test_evenness(_bin):
    burst = [0.0] * 21 + [60.0] * 21
    check(evenness(burst, 30.0) == [21, 0, 21], "bursts: %s" % evenness(burst, 30.0))
    even = [60.0 / 21 * i for i in range(42)]
    counts = evenness(even, 30.0)
    check(max(counts) - min(counts) <= 1 and sum(counts) == 42, "even: %s" % counts)
    # Given bounds: half-open buckets, arrivals outside ignored, empty buckets kept.
    check(evenness([0.0, 1.0, 1.5, 5.0, 6.0], 1.0, start=0.0, end=6.0) == [1, 2, 0, 0, 0, 1],
          "bounded: %s" % evenness([0.0, 1.0, 1.5, 5.0, 6.0], 1.0, start=0.0, end=6.0))
    check(evenness([], 1.0) == [] and evenness([], 1.0, start=0.0, end=2.0) == [0, 0], "empty")
    check(evenness([4.0], 1.0) == [1], "one arrival")


def test_sliding_window_admission(_bin):
    private = SlidingWindow(1, 1.0)
    check(private.admit(10.0) == (True, 0.0), "first")
    ok, wait = private.admit(10.3)
    check(not ok and abs(wait - 0.7) < 1e-9, "0.3 s later: %s %s" % (ok, wait))
    check(private.admit(11.0)[0], "exactly a window later is admitted")
    group = SlidingWindow(20, 60.0)
    for i in range(20):
        check(group.admit(float(i))[0], "post %d" % i)
    ok, wait = group.admit(30.0)
    check(not ok and wait == 30.0, "the 21st: %s %s" % (ok, wait))
    check(retry_after_seconds(wait) == 30, "retry_after %d" % retry_after_seconds(wait))
    check(not group.admit(59.999)[0] and group.admit(60.0)[0], "frees at 60.0 exactly")
    check(len(group) == 21, "21 admitted")
    # Out of order (two request threads): a later arrival admitted first still counts.
    w = SlidingWindow(2, 1.0)
    check(w.admit(0.0)[0] and w.admit(0.8)[0], "two")
    check(not w.admit(0.5)[0], "0.5 between 0 and 0.8 makes three in [0, 1)")
    check(w.admit(1.5)[0], "1.5: [0.8, 1.5] holds two")
    check(SlidingWindow(0, 1.0).admit(1.0) == (False, float("inf")), "a zero limit")


def test_sliding_window_against_the_checker(_bin):
    # Whatever is offered, the admitted times pass check_count; and each refusal's
    # wait is exact: an offer at t + wait is admitted (if nothing else came).
    rng = random.Random(11)
    for trial in range(200):
        count, window = rng.choice([(1, 1.0), (3, 1.0), (5, 2.5), (20, 60.0)])
        w = SlidingWindow(count, window)
        t = 0.0
        for _ in range(60):
            t += rng.choice([0.0, 0.25, 0.5, rng.random() * window / count])
            jitter = -rng.choice([0.0, 0.0, 0.25]) * rng.random()     # slightly out of order
            ok, wait = w.admit(t + jitter)
            if not ok and wait > 0:
                probe = SlidingWindow(count, window)
                probe.times = list(w.times)
                check(not probe.admit(t + jitter + wait - 1e-6)[0],
                      "trial %d: admitted before the wait ended" % trial)
                # (1e-9: t + wait - window need not give back the arrival's float exactly)
                probe.times = [x for x in w.times if x <= t + jitter]
                check(probe.admit(t + jitter + wait + 1e-9)[0],
                      "trial %d: refused at the end of the wait %.4f" % (trial, wait))
        check(brute_max(w.times, window) <= count, "trial %d: admitted %d in a window"
              % (trial, brute_max(w.times, window)))
        check_count(w.times, count, window, "trial %d" % trial)


def test_retry_after_seconds(_bin):
    for wait, want in ((0.0, 1), (0.2, 1), (1.0, 1), (1.0000001, 2), (29.5, 30), (30.0, 30)):
        check(retry_after_seconds(wait) == want, "%r -> %d" % (wait, retry_after_seconds(wait)))


if __name__ == "__main__":
    main([test_max_in_window_edges,
          test_max_in_window_matches_brute_force,
          test_check_count_and_its_message,
          test_check_gap,
          test_budget_use,
          test_group_by,
          test_evenness,
          test_sliding_window_admission,
          test_sliding_window_against_the_checker,
          test_retry_after_seconds])
