"""The one error type the serving code raises for a request it cannot serve."""

from __future__ import annotations

import grpc


class ServingError(Exception):
    """A request error carrying the gRPC status code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        """Initialises the error.

        Args:
            code: gRPC status code for the client.
            message: Human-readable details naming the problem.
        """
        super().__init__(message)
        self.code = code
        self.message = message
