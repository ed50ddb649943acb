"""`python -m relay` runs the realtime-relay command line."""

from relay.cli import entry_point

entry_point()
