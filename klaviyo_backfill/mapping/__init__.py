"""Orders as Klaviyo sees them: a RawOrder converted to a typed Order, mapped onto the events
of Klaviyo's custom-integration guide, and encoded as each endpoint's request bodies."""
