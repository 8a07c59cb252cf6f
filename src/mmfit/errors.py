"""Errors a user's config can cause, shared by the config loader and the registries (both at the bottom
of the layers, so neither has to import the other for it)."""


class ConfigError(ValueError):
    """A config key or value is wrong; the message names its dotted path."""
