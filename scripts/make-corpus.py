#!/usr/bin/env python3
"""Writes Sentinel's own labelled anomaly corpus in NAB's layout.

    scripts/make-corpus.py [OUT]        (default: lab/corpus)

OUT/data/FAMILY/NAME.csv holds `timestamp,value` rows; OUT/labels/
combined_windows.json maps each file to its anomaly windows. Every series is
generated from a fixed seed, and labelled by construction: the anomalies are
the faults this script injects, nothing else. What a tired SRE would not want
a page for is injected too and *not* labelled: deploy-induced level shifts,
single-sample blips, regime changes in noise, gaps in the data.

Windows follow NAB's convention: centred on the fault's onset, 10 % of the
file's length divided among its faults; no fault in the first 15 % (the
probationary period).

Standard library only; the same seed writes the same bytes.
"""

import json
import math
import os
import random
import sys
from datetime import datetime, timedelta, timezone

SEED = 20261206
START = datetime(2026, 3, 2, 0, 0, tzinfo=timezone.utc)  # a Monday


def stamp(t):
    return t.strftime("%Y-%m-%d %H:%M:%S")


class Series:
    """One file: values on a regular grid, faults recorded as onsets."""

    def __init__(self, rng, n, step_minutes):
        self.rng = rng
        self.n = n
        self.step = timedelta(minutes=step_minutes)
        self.steps_per_hour = 60 / step_minutes
        self.values = [0.0] * n
        self.onsets = []
        self.dropped = set()

    def hours(self, i):
        return i / self.steps_per_hour

    def seasonal(self, i, daily, weekly=0.0, peak_hour=14.0):
        h = self.hours(i)
        day = math.cos(2 * math.pi * (h - peak_hour) / 24.0)
        weekday = int(h // 24) % 7
        week = -1.0 if weekday >= 5 else 0.0
        return daily * day + weekly * week

    def onset(self, lo=0.2, hi=0.92):
        """An onset index after the probationary period, apart from the others."""
        for _ in range(200):
            i = int(self.rng.uniform(lo, hi) * self.n)
            if all(abs(i - o) > self.n // 12 for o in self.onsets):
                self.onsets.append(i)
                return i
        raise RuntimeError("no room for another fault")

    def free_index(self, lo=0.05, hi=0.97):
        """An index far from every fault (for the unlabelled events)."""
        for _ in range(200):
            i = int(self.rng.uniform(lo, hi) * self.n)
            if all(abs(i - o) > self.n // 15 for o in self.onsets):
                return i
        raise RuntimeError("no room")

    def gap(self, length):
        at = self.free_index()
        self.dropped.update(range(at, min(self.n, at + length)))

    def rows(self):
        for i, v in enumerate(self.values):
            if i not in self.dropped:
                yield stamp(START + i * self.step), v

    def windows(self):
        if not self.onsets:
            return []
        width = max(2, int(0.1 * self.n / len(self.onsets)))
        out = []
        for o in sorted(self.onsets):
            lo = max(0, o - width // 2)
            hi = min(self.n - 1, o + width // 2)
            out.append([stamp(START + lo * self.step) + ".000000", stamp(START + hi * self.step) + ".000000"])
        return out


def fmt(v):
    return f"{v:.6g}"


# ---- the families -------------------------------------------------------------


def request_rate(rng, variant):
    """Requests/s with daily and weekly seasonality; an outage, a surge or a slow bleed."""
    s = Series(rng, 4032, 5)  # two weeks at 5 minutes
    base = rng.uniform(200, 2000)
    noise = rng.uniform(0.02, 0.06) * base
    for i in range(s.n):
        s.values[i] = base + s.seasonal(i, 0.45 * base, 0.3 * base) + rng.gauss(0, noise)
    kind = variant % 4
    o = s.onset()
    if kind == 0:  # outage: traffic collapses for 40 minutes
        for i in range(o, min(s.n, o + 8)):
            s.values[i] *= rng.uniform(0.05, 0.2)
    elif kind == 1:  # retry storm: triples for an hour
        for i in range(o, min(s.n, o + 12)):
            s.values[i] *= rng.uniform(2.5, 3.5)
    elif kind == 2:  # a slow bleed: traffic lost gradually to a bad route, then stays low
        for i in range(o, s.n):
            s.values[i] *= max(0.45, 1.0 - 0.01 * (i - o))
    else:  # a second fault later: two outages
        for i in range(o, min(s.n, o + 6)):
            s.values[i] *= 0.1
        o2 = s.onset()
        for i in range(o2, min(s.n, o2 + 6)):
            s.values[i] *= 0.1
    # A deploy that shifts the level by a few percent: not an incident.
    d = s.free_index()
    shift = rng.uniform(-0.08, 0.08) * base
    for i in range(d, s.n):
        s.values[i] += shift
    for i in range(s.n):
        s.values[i] = max(0.0, s.values[i])
    return s


def latency(rng, variant):
    """p99 latency in ms: daily swell, heavy-tailed noise; a sustained spike or a creeping regression."""
    s = Series(rng, 4032, 5)
    base = rng.uniform(80, 400)
    for i in range(s.n):
        tail = rng.expovariate(1.0) * 0.08 * base
        s.values[i] = base + s.seasonal(i, 0.2 * base) + tail
    o = s.onset()
    if variant % 3 == 0:  # a dependency slows down: 3-6x for 30-60 minutes
        for i in range(o, min(s.n, o + rng.randint(6, 12))):
            s.values[i] *= rng.uniform(3, 6)
    elif variant % 3 == 1:  # a regression that creeps up over hours and stays
        for i in range(o, s.n):
            s.values[i] *= 1.0 + min(1.5, 0.01 * (i - o))
    else:  # GC pauses: latency doubles for two hours
        for i in range(o, min(s.n, o + 24)):
            s.values[i] *= rng.uniform(1.8, 2.4)
    # Single-sample blips: not incidents.
    for _ in range(6):
        b = s.free_index()
        s.values[b] *= rng.uniform(3, 8)
    return s


def cpu(rng, variant):
    """CPU utilisation in %: daily load; a saturation or a runaway process."""
    s = Series(rng, 4032, 5)
    base = rng.uniform(20, 45)
    for i in range(s.n):
        s.values[i] = base + s.seasonal(i, 0.35 * base, 0.2 * base) + rng.gauss(0, 2.5)
    o = s.onset()
    if variant % 2 == 0:  # pinned at the ceiling for an hour and a half
        for i in range(o, min(s.n, o + 18)):
            s.values[i] = rng.uniform(94, 100)
    else:  # a runaway loop: climbs steadily until restarted a day later
        for i in range(o, min(s.n, o + 288)):
            s.values[i] = min(100.0, s.values[i] + 0.25 * (i - o))
    # Deploy: a new build uses a little more CPU. Not an incident.
    d = s.free_index()
    for i in range(d, s.n):
        s.values[i] += rng.uniform(2, 5)
    for i in range(s.n):
        s.values[i] = min(100.0, max(0.0, s.values[i]))
    return s


def memory(rng, variant):
    """Working set in MiB: a saw-tooth of a cache filling and being evicted (normal); a leak."""
    s = Series(rng, 4032, 5)
    base = rng.uniform(300, 900)
    period = rng.randint(60, 150)
    for i in range(s.n):
        s.values[i] = base + 0.3 * base * ((i % period) / period) + rng.gauss(0, 0.01 * base)
    o = s.onset(0.3, 0.8)
    if variant % 2 == 0:  # the leak: no eviction any more, grows until the OOM kill
        top = s.values[o]
        for i in range(o, min(s.n, o + 400)):
            s.values[i] = top + 0.004 * base * (i - o) + rng.gauss(0, 0.01 * base)
    else:  # a leak twice as fast, killed and restarted, then again
        for k in range(2):
            start = o + k * 150
            for i in range(start, min(s.n, start + 120)):
                s.values[i] = base + 0.012 * base * (i - start) + rng.gauss(0, 0.01 * base)
    return s


def queue_lag(rng, variant):
    """Consumer lag in messages: near zero with short bursts (normal); a stuck consumer."""
    s = Series(rng, 2016, 10)  # two weeks at 10 minutes
    for i in range(s.n):
        burst = rng.expovariate(1.0) * 40 if rng.random() < 0.04 else 0.0
        s.values[i] = abs(rng.gauss(5, 3)) + burst
    o = s.onset()
    rate = rng.uniform(50, 400)
    length = rng.randint(12, 36)
    for i in range(o, min(s.n, o + length)):  # the consumer is stuck: lag grows
        s.values[i] += rate * (i - o + 1)
    return s


def error_ratio(rng, variant):
    """Error ratio near zero, with sparse single errors; an error-rate spike."""
    s = Series(rng, 4032, 5)
    floor = rng.uniform(0.0005, 0.003)
    for i in range(s.n):
        s.values[i] = max(0.0, rng.gauss(floor, floor / 3)) + (0.01 if rng.random() < 0.01 else 0.0)
    o = s.onset()
    for i in range(o, min(s.n, o + rng.randint(6, 15))):
        s.values[i] = rng.uniform(0.03, 0.2)
    return s


def counter(rng, variant):
    """A request counter's per-interval increase with a daily cycle; the rate halves when a shard drops."""
    s = Series(rng, 2016, 10)
    base = rng.uniform(5000, 50000)
    for i in range(s.n):
        s.values[i] = max(0.0, base + s.seasonal(i, 0.3 * base, 0.15 * base) + rng.gauss(0, 0.03 * base))
    o = s.onset()
    for i in range(o, min(s.n, o + rng.randint(6, 18))):
        s.values[i] *= 0.5
    return s


def flat_then_change(rng, variant):
    """A gauge that sits at an exact value for hours (idle workers, a zero queue), then moves."""
    s = Series(rng, 2016, 10)
    level = [0.0, 1.0, 4.0][variant % 3]
    for i in range(s.n):
        s.values[i] = level
    # Normal: occasional half-hour of activity.
    for _ in range(5):
        b = s.free_index()
        for i in range(b, min(s.n, b + 3)):
            s.values[i] = level + rng.choice([1.0, 2.0])
    o = s.onset()
    for i in range(o, min(s.n, o + rng.randint(10, 30))):
        s.values[i] = level + rng.uniform(20, 60)
    return s


def noisy_regime(rng, variant):
    """A noisy signal whose noise level changes between regimes (normal); a burst of wild values."""
    s = Series(rng, 4032, 5)
    base = rng.uniform(50, 150)
    sigma = 0.05 * base
    for i in range(s.n):
        if i % 700 == 0:
            sigma = rng.uniform(0.03, 0.12) * base
        s.values[i] = base + rng.gauss(0, sigma)
    o = s.onset()
    for i in range(o, min(s.n, o + 10)):
        s.values[i] = base + rng.gauss(0, 0.8 * base)
    return s


def drift(rng, variant):
    """Disk usage in %: a steady slow fill (normal, with weekly cleanups); a fill rate that jumps."""
    s = Series(rng, 2016, 10)
    level = rng.uniform(30, 50)
    for i in range(s.n):
        if i % 1008 == 0 and i > 0:
            level -= 10
        level += 0.003
        s.values[i] = level + rng.gauss(0, 0.05)
    o = s.onset(0.3, 0.85)
    for i in range(o, s.n):
        s.values[i] += 0.08 * (i - o)
    for i in range(s.n):
        s.values[i] = min(100.0, s.values[i])
    return s


def deploy_only(rng, variant):
    """A latency series with three deploys that move its level, and no incident at all."""
    s = Series(rng, 2016, 10)
    base = rng.uniform(50, 200)
    level = base
    shifts = sorted(rng.sample(range(int(0.2 * s.n), int(0.95 * s.n)), 3))
    for i in range(s.n):
        if i in shifts:
            level *= rng.uniform(0.85, 1.2)
        s.values[i] = level + s.seasonal(i, 0.1 * base) + rng.gauss(0, 0.03 * base)
    return s


FAMILIES = [
    ("request_rate", request_rate, 8),
    ("latency", latency, 6),
    ("cpu", cpu, 5),
    ("memory", memory, 5),
    ("queue_lag", queue_lag, 4),
    ("error_ratio", error_ratio, 5),
    ("counter", counter, 4),
    ("flat_then_change", flat_then_change, 3),
    ("noisy_regime", noisy_regime, 4),
    ("drift", drift, 3),
    ("deploy_only", deploy_only, 3),
]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "lab", "corpus")
    labels = {}
    rng = random.Random(SEED)
    for family, make, count in FAMILIES:
        os.makedirs(os.path.join(out, "data", family), exist_ok=True)
        for k in range(count):
            s = make(random.Random(rng.getrandbits(64)), k)
            if k % 3 == 2:
                s.gap(rng.randint(3, 30))  # missing data: the exporter was down
            name = f"{family}/{family}_{k + 1:02d}.csv"
            with open(os.path.join(out, "data", name), "w", newline="\n") as f:
                f.write("timestamp,value\n")
                for t, v in s.rows():
                    f.write(f"{t},{fmt(v)}\n")
            labels[name] = s.windows()
    os.makedirs(os.path.join(out, "labels"), exist_ok=True)
    with open(os.path.join(out, "labels", "combined_windows.json"), "w") as f:
        json.dump(labels, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"{len(labels)} series, {sum(len(w) for w in labels.values())} anomaly windows in {os.path.normpath(out)}")


if __name__ == "__main__":
    main()
