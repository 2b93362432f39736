"""The Onsembl hub: FastAPI app, WebSocket endpoints, REST API, persistence, RQ jobs."""

__version__ = "0.1.0"
