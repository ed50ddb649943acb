"""The two socket adapters of a session: the client link (aiohttp) and the upstream link (picows)."""
