"""One module per command (send, dry_run, inspect, status, verify, preflight, repair), each a
library-callable function from typed options to a typed result (results.py); the CLI's edge."""
