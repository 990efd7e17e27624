"""Twisted adapters that move SIP bytes between sockets and the sans-IO core."""
