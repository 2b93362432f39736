"""What the hub, the wrapper and the TUI all import: the wire protocol, REST models, settings."""
