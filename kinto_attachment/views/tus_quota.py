"""Who may create resumable uploads, and how many each may hold unfinished: anonymous
creators (off by default) are counted by address, users by their id."""

from kinto.core.utils import msec_time
from pyramid.security import forget

from ..protocols import tus
from ..state import tus_uploads
from ..web.client_address import client_address, client_name


def anonymous_client(request):
    """None for an authenticated creator; for an anonymous one, what its quota is counted
    by (:func:`~kinto_attachment.web.client_address.client_name`), or 401 unless
    ``resumable.allow_anonymous``.

    Anonymous creators would otherwise share one quota: one of them holding it all locks
    every other out. Counted by address, they do not, as long as the server knows each
    client's address: behind a proxy that is not told (``trusted_proxy`` of waitress,
    ``data_files.trusted_proxies``), every client is the proxy. Hence off by default.
    """
    if request.prefixed_userid is not None:
        return None
    settings = request.registry.attachment_settings
    if not settings.resumable_allow_anonymous:
        raise tus.error("anonymous_upload", headers=dict(forget(request)))
    address = client_address(request, settings.data_files.trusted_proxies)
    return client_name(address)


def refuse_too_many(request, client):
    """429 when the user (or the anonymous ``client``) already holds
    ``resumable.max_uploads_per_user`` unfinished uploads.

    A quota, not a rate: a slot frees when one of them completes, is terminated (``DELETE``)
    or expires. ``Retry-After`` says when the soonest of the user's own uploads expires: when
    a slot frees without the user doing anything. Concurrent creations by one user are not
    serialised (a creation may stream its first chunk): each may pass the count, so the quota
    can be overshot by as many requests as the user sends at once.
    """
    limit = request.registry.attachment_settings.resumable_max_uploads_per_user
    if not limit:
        return
    now = msec_time()
    count, first_expiry = tus_uploads.active_of(
        request.registry.storage, request.prefixed_userid, now, client=client
    )
    if count < limit:
        return
    retry_after = max(1, -(-((first_expiry or now) - now) // 1000))
    raise tus.error("too_many_uploads", count=count, limit=limit, retry_after=retry_after)
