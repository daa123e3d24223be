"""What the Kubernetes API can answer, as errors the sync acts on.

Temporary ones (the API is unreachable, overloaded, a watch expired, a
conflict) are retried; :class:`Forbidden` is permanent until the Role
changes, so it is logged once per kind of request and not hammered.
"""

from edgetwin.errors import CloudError


class ApiUnavailableError(CloudError):
    """The API server could not be reached or answered with a server error: retry later."""


class GoneError(CloudError):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class ForbiddenError(CloudError):
    """The node's Role does not allow this request (403)."""


class NotFoundError(CloudError):
    """The object (or the resource type) does not exist (404)."""


class ConflictError(CloudError):
    """The object changed since it was read, or already exists (409): read it again."""


class BadRequestError(CloudError):
    """The API server refused the request as malformed (400, 422): a bug or an old server."""
