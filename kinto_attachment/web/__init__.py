"""HTTP at the level of one request, below every route: request bodies in and file bodies out
(:mod:`.streams`), media types and dispositions (:mod:`.media_types`, which the stores' signed
URLs use too), the client's address behind proxies (:mod:`.client_address`) and the CORS
headers of our responses (:mod:`.cors`). Nothing here knows Kinto's records or a store."""
