"""RTP relay, G.711 codec and the recorder, run in a media worker process."""
