"""Audio for realtime-relay: PCM conversion and framing, resampling, playback buffering and devices."""
