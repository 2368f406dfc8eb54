"""Klaviyo's side: its endpoints as data, the HTTP client that sends to them, the throttle
that keeps to their rate limits, and the retry policy. Knows nothing of exports or of the
checkpoint: a client is handed encoded requests and a `Settler` to tell what was taken."""
