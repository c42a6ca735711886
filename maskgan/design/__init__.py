"""The physical object: mask-space designs and the warp onto a face (physical), what a probe wears (wearing), the
printable palette and page, printability (TV, NPS), how designs differ (diversity) and the one design-file
reader."""
