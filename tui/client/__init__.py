"""The TUI's side of the network: REST calls, the dashboard event stream and stored credentials.
Nothing here imports Textual, so the same client drives tests, benchmarks and scripts."""
