"""Errors the core raises, each with the gRPC status code the transport answers with."""

from __future__ import annotations


class MomentsError(Exception):
    code = "INTERNAL"


class InvalidArgument(MomentsError):
    code = "INVALID_ARGUMENT"


class NotFound(MomentsError):
    code = "NOT_FOUND"


class AlreadyExists(MomentsError):
    code = "ALREADY_EXISTS"


class ResourceExhausted(MomentsError):
    code = "RESOURCE_EXHAUSTED"


class DataLoss(MomentsError):
    code = "DATA_LOSS"


class FailedPrecondition(MomentsError):
    code = "FAILED_PRECONDITION"


class Aborted(MomentsError):
    code = "ABORTED"


class Unavailable(MomentsError):
    code = "UNAVAILABLE"


class ListenError(OSError):
    """An address to listen on cannot be had (in use, or invalid): the message names it and its flag."""
