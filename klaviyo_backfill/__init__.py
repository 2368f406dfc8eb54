"""Import a shop's past orders into Klaviyo."""

__version__ = "0.1.0"
