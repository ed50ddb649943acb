"""`python -m bench.splice_floor_uvloop serve ...`: `bench.splice_floor` on uvloop's event loop (the floor there)."""

from __future__ import annotations

import sys

import uvloop

from bench.splice_floor import main

if __name__ == "__main__":
    uvloop.install()
    raise SystemExit(main(sys.argv[1:]))
