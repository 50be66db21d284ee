"""Export of OpenCLIP towers to ONNX for the Moments server (the only package that imports torch).

``python -m moments_export --model NAME [--pretrained TAG | --checkpoint PATH]`` writes a model
directory with ``text.onnx``, ``image.onnx``, optional fp16 variants, ``tokenizer.json`` and
``manifest.json``; see :mod:`moments_export.cli`.
"""

__all__ = ["EXIT_OK", "EXIT_USAGE", "EXIT_VERIFY", "EXIT_WEIGHTS", "ExportError"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_WEIGHTS = 3
EXIT_VERIFY = 4


class ExportError(Exception):
    """A failure with a message for the user and the exit code it maps to."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(ExportError):
    exit_code = EXIT_USAGE


class WeightsUnavailable(ExportError):
    exit_code = EXIT_WEIGHTS


class VerificationFailed(ExportError):
    exit_code = EXIT_VERIFY
