"""The aiohttp HTTP API under /v1."""
