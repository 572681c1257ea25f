"""The Videos API: what can be asked (requests, references, providers, prices) and the client that asks it."""
