"""``/v1/attachment-fetch/{key}?expires=...&signature=...``: a blob fetched with the signed URL
of a ``stored`` event (:mod:`kinto_attachment.events.urls`), without Kinto credentials, on
stores that presign no URLs of their own (local disk).

The signature (:mod:`kinto_attachment.web.signed_urls`) gives that key until then: a forged,
altered or expired one is a ``403``. The key is served as any download is: conditional
requests and ranges, ``ETag`` from the stored version (a key is never reused for other
content while its blob exists), saved as an attachment rather than shown.
"""

from pyramid.security import NO_PERMISSION_REQUIRED

from .. import downloads, errors
from ..routes import ATTACHMENT_FETCH
from ..web import signed_urls
from .caching import PRIVATE


def fetch(request):
    key = "/".join(request.matchdict["key"])
    secret = request.registry.attachment_settings.events.url_secret
    query = request.GET
    if not signed_urls.verify(secret, key, query.get("expires"), query.get("signature")):
        raise errors.refuse("bad_signature")
    store = request.registry.attachment_store

    def missing(_download=None):
        return errors.refuse("missing", resource_name="file", id=key)

    def current(_again):
        stat = downloads.stat_of(store, key)
        if stat is None:
            raise missing()
        return downloads.of_key(key, stat.size, stat.version, inline=False, cache_control=PRIVATE)

    return downloads.serve(request, store, current, lost=missing, found=True)


def includeme(config):
    config.add_route(ATTACHMENT_FETCH.name, ATTACHMENT_FETCH.pattern)
    config.add_view(
        fetch,
        route_name=ATTACHMENT_FETCH.name,
        request_method="GET",
        permission=NO_PERMISSION_REQUIRED,
    )
    config.add_view(
        errors.not_allowed(ATTACHMENT_FETCH.methods),
        route_name=ATTACHMENT_FETCH.name,
        permission=NO_PERMISSION_REQUIRED,
    )
