"""The serving platforms' own definitions, for building the messages tests send."""
