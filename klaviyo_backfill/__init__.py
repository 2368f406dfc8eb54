"""Import a shop's past orders into Klaviyo."""

import logging

__version__ = "0.1.0"

# a library logs only where its user asks (the CLI's -v and --log): never Python's fallback
logging.getLogger("klaviyo_backfill").addHandler(logging.NullHandler())
