"""Domain errors raised by the core; the wire layer maps each to the modeled AWS exception of the same name."""

from __future__ import annotations


class OpenHIError(Exception):
    """Base class: ``code`` is the modeled exception name, ``message`` is what a person reads."""

    code = "InternalServerException"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(OpenHIError):
    code = "ValidationException"


class BadRequestError(OpenHIError):
    code = "BadRequestException"


class ConflictError(OpenHIError):
    code = "ConflictException"


class NotFoundError(OpenHIError):
    code = "ResourceNotFoundException"


class QuotaExceededError(OpenHIError):
    code = "ServiceQuotaExceededException"


class AccessDeniedError(OpenHIError):
    code = "AccessDeniedException"


class NotAcceptableError(OpenHIError):
    code = "NotAcceptableException"


class UnsupportedMediaTypeError(OpenHIError):
    """A request body of a media type the route does not take (415; DICOMweb STOW-RS)."""

    code = "UnsupportedMediaTypeException"
    status = 415


class ThrottlingError(OpenHIError):
    code = "ThrottlingException"


class InternalError(OpenHIError):
    code = "InternalServerException"
