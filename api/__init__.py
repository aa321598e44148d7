"""HTTP API of the router."""
