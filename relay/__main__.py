"""`python -m relay` runs the realtime-relay command line."""

from relay.cli.main import entry_point

entry_point()
