"""tests/standin.py as a process, minus its jsonschema pass over each body.

The stand-in checks every request against Klaviyo's OpenAPI request schema with jsonschema,
which costs ~0.3 s of CPU per 1,000-event bulk body (measured on the benchmark machine) and
holds the GIL while it does. At the scaled limits send.py uses (5 bulk requests a second,
10 in a burst) that alone would need 1.5-3 cores, so the benchmark would measure the
stand-in, not the client: its arrival stamps (taken before validation) drift under GIL
contention and its answers queue behind validation. Everything else stays: auth, revision,
media type, body size, semantic checks per event (identifiers, times, string/array limits,
repeated ids), dedupe, the sliding-window rate limits, 429s with Retry-After, latency.

Used by send.py unless --full-validation; same command line and output as tests/standin.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import standin

standin.schema_errors = lambda *args, **kwargs: []

if __name__ == "__main__":
    standin.main(sys.argv[1:])
