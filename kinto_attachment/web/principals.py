"""The principals of a request worked out again, for a permission checked a second time."""

import contextlib


def forget(request):
    """Drop the principals worked out for the request earlier (before its body came, before
    it waited for a lock), which Kinto's groupfinder (``bound_data``) and pyramid_multiauth
    (the request's identity and principals) keep for the whole request: the next check asks
    the permission backend again (a group that gave the permission may have lost the user
    meanwhile)."""
    for cached in ("_multiauth_identity", "_multiauth_principals"):
        with contextlib.suppress(AttributeError):
            delattr(request, cached)
    userid = request.prefixed_userid
    if userid is not None:
        request.bound_data.pop(f"{userid}_principals", None)
