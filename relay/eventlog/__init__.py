"""The per-session event log: record encoding, each session's seqs and bounds, and the one writer thread behind a
bounded queue."""
