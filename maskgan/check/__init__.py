"""`maskgan check`: will this mask protect this person? A wearer's own photos, scored by real recognisers.

Rooms: `photos` (a wearer's folders -> faces: full-head crops and 68 landmarks, found by dlib or taken from the
face box with the person's unmasked geometry), `recognisers` (every recogniser check runs, as one interface:
embeddings, the aligned chip it saw, its documented operating point if it has one), `verdicts` (pure: scores,
crowd-calibrated thresholds, ranks, verdicts), `tryon` (a design worn on the person's unmasked photos, printed
and photographed under held-out transforms), `runner` (all of it -> a CheckReport, written whole or not at
all). The page is maskgan.reporting.pages.check_page; the command is cli/check_cmd.py. What a verdict means: docs/check.md.
"""
