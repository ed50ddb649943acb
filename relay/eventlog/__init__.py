"""The per-session event log: record encoding and the one writer thread behind a bounded queue."""
