"""callrouter: a self-hostable call tracking and recording server."""

__version__ = "0.1.0"
