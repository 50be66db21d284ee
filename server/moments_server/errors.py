"""Every error the core raises to a caller, each named by the gRPC status code the transport answers with
(transport/status.py). Components keep their internal errors to themselves and raise one of these."""

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


class Overloaded(ResourceExhausted):
    """Full for now (every slot taken): worth retrying later, unlike a request that is too large."""


class DataLoss(MomentsError):
    code = "DATA_LOSS"


class FailedPrecondition(MomentsError):
    code = "FAILED_PRECONDITION"


class Aborted(MomentsError):
    code = "ABORTED"


class Unavailable(MomentsError):
    code = "UNAVAILABLE"


class DeadlineExceeded(MomentsError):
    code = "DEADLINE_EXCEEDED"


# Named errors of the components


class BadVideo(InvalidArgument, ValueError):
    """The upload is not a video PyAV can decode; the message carries the decoder's reason."""


class BadImage(InvalidArgument, ValueError):
    """The bytes are not an image the server reads."""


class ImageTooLarge(BadImage):
    """The image is over the server's byte or pixel limits (a query image's is INVALID_ARGUMENT like any
    BadImage; a FRAMES ingest maps it to RESOURCE_EXHAUSTED)."""


class QueueFull(Overloaded):
    """A batcher's queue is at its bound; the caller should back off."""


class Expired(DeadlineExceeded):
    """The request's deadline passed before it reached a batch (or the store query)."""


class StoreUnavailable(Unavailable, ConnectionError):
    """The store cannot be reached (the SDK connector reconnects by itself: worth retrying)."""


class StoreError(MomentsError):
    """The store refused or failed a query (the message is the store's): INTERNAL."""


class VideoGone(Aborted):
    """A LIVE video was deleted while its stream was being committed."""


class StreamBroken(Aborted):
    """An Ingest request stream whose header promised IngestEnd (IngestHeader.sends_end) ended without it: the
    call broke, the stream is not complete."""


class ModelMismatch(FailedPrecondition):
    """The descriptor set holds vectors of another model than the one serving."""


class ListenError(OSError):
    """An address to listen on cannot be had (in use, or invalid): the message names it and its flag."""
