"""The `serve` HTTP/WebSocket adapter: aiohttp app, routes, client auth, REST proxy."""
