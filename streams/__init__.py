"""streamdrift's stream side: the Faust app, agents, topics, state store wiring and the CLI."""

__version__ = "0.1.0"
