"""`mic` mode: this machine's microphone and speaker as the client side of one relay session."""
