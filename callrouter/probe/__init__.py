"""``callrouter probe``: a real test call through the router, for operators and monitors."""
