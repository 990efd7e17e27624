"""Typed keys for the services the API reads from its Application (set by app.py)."""

from __future__ import annotations

import asyncpg
from aiohttp import web

DATABASE = web.AppKey("database", asyncpg.Pool)
