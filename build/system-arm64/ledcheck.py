#!/usr/bin/env python3
"""Judges the four gpio-sim line values the rig sampled against what
`hl7edge status --json` says each LED shows (device/leds patterns):

  ledcheck.py STATUS.json SAMPLES.txt    prints "PASS ..." or "FAIL ..."

SAMPLES holds "uptime sys link act fault" at every change. ACT is judged
on its own: messages were sent while sampling, so it must have flashed.
Timing is judged loosely (TCG under load): a blink must change level at
about its rate, and a fault code must show complete bursts of N flashes
separated by the long pause (at least one burst of exactly N, none longer;
the sampling window may cut the first and last).
"""
import json
import re
import sys


def pulses(rows, i):
    """(start, end) of each high period of column i."""
    out, start = [], None
    for t, vals in rows:
        if vals[i] == "1" and start is None:
            start = t
        elif vals[i] == "0" and start is not None:
            out.append((start, t))
            start = None
    return out


def main():
    status = json.load(open(sys.argv[1]))
    readings = {r["led"]: r["shows"] for r in status.get("leds", [])}
    rows = []
    for line in open(sys.argv[2]):
        f = line.split()
        if len(f) == 5:
            rows.append((float(f[0]), f[1:]))
    if not rows:
        print("FAIL no samples")
        return
    span = rows[-1][0] - rows[0][0]
    ok, parts = True, []
    for i, name in enumerate(["sys", "link", "act", "fault"]):
        shows = readings.get(name, "?")
        seen = {v[i] for _, v in rows}
        ps = pulses(rows, i)
        if name == "act":
            good, what = len(ps) >= 1, "%d flashes while messages passed" % len(ps)
        elif shows == "off":
            good, what = seen == {"0"}, "always %s" % "/".join(sorted(seen))
        elif shows == "on":
            good, what = seen == {"1"}, "always %s" % "/".join(sorted(seen))
        elif shows.startswith("blinking"):
            hz = float(re.search(r"([0-9.]+)Hz", shows).group(1)) if "Hz" in shows else 1.0
            want = span * hz
            good = want * 0.5 <= len(ps) <= want * 1.5 + 1
            what = "%d pulses in %.1f s (want about %.0f)" % (len(ps), span, want)
        elif "flash" in shows:
            n = int(shows.split()[0])
            # Bursts: pulses closer than 1 s (a code's pause is 1.5 s, its
            # flashes 0.5 s apart); the first and last may be cut off.
            bursts, cur = [], []
            for p in ps:
                if cur and p[0] - cur[-1][1] > 1.0:
                    bursts.append(cur)
                    cur = []
                cur.append(p)
            if cur:
                bursts.append(cur)
            # A burst cut by the start or end of sampling has fewer.
            counts = [len(b) for b in bursts]
            good = n in counts and max(counts) == n
            what = "bursts of %s flashes (want %d)" % ([len(b) for b in bursts], n)
        else:
            good, what = False, "unknown pattern"
        ok &= good
        parts.append("%s '%s': %s" % (name.upper(), shows, what))
    print(("PASS " if ok else "FAIL ") + "; ".join(parts))


main()
