"""Errors of the L7 data plane: each carries the status the proxy answers with, so the
connection code never maps exception types to pages itself."""


class HttpError(Exception):
    status = 400

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class BadRequest(HttpError):
    """A request that is malformed or ambiguous (smuggling, limits): 400, then close."""
    status = 400


class BadResponse(HttpError):
    """A server's response that cannot be relayed: 502 to the client."""
    status = 502
