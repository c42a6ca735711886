"""One progress line per ~10 % of a long loop, with its rate and the time left, so no step is silent for long.

    p = Progress("synth", identities, "identities", log=print)
    for i in range(identities):
        ...
        p.update(i + 1)        # prints "synth: 12/40 identities (30 %), 3.1 identities/s, about 9 s left"

A line is printed when the count crosses the next tenth of the total (and at the end), but not more often than
every `min_interval_s` seconds, so short loops print little and long ones never go quiet for a tenth of their
run.
"""

from __future__ import annotations

import time


class Progress:
    def __init__(self, what: str, total: int, unit: str, log=print, min_interval_s: float = 1.0):
        self.what, self.total, self.unit = what, max(int(total), 1), unit
        self.log = log or (lambda line: None)
        self.min_interval_s = min_interval_s
        self.start = self.last = time.monotonic()
        self.next_tenth = 1

    def update(self, done: int, note: str = "") -> None:
        """Count `done` of the total so far; `note` (e.g. "loss 1.23") ends the line when one is printed."""
        now = time.monotonic()
        tenth = done * 10 // self.total
        final = done >= self.total
        if not final and (tenth < self.next_tenth or now - self.last < self.min_interval_s):
            return
        self.next_tenth, self.last = tenth + 1, now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        left = (self.total - done) / rate if rate > 0 else float("inf")
        tail = f"done in {elapsed:.0f} s" if final else f"about {left:.0f} s left"
        self.log(f"{self.what}: {done}/{self.total} {self.unit} ({100 * done // self.total} %), "
                 f"{rate:.3g} {self.unit}/s, {tail}" + (f"; {note}" if note else ""))
