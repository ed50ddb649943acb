"""The pure session core: events in, decisions out. No asyncio, sockets, clock or logging here."""
