"""Shells that move bytes: the Kafka sidecar, the embedded broker and the in-process bus."""
