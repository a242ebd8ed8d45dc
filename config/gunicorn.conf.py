# gunicorn for Kinto + kinto_attachment: `.venv/bin/gunicorn -c config/gunicorn.conf.py`
# (KINTO_INI=config/postgresql.ini for another configuration). gunicorn streams request bodies
# from the socket: an upload is hashed and stored while it arrives, and a request refused
# before its body (authentication, permissions, Content-Length over max_size_bytes) reads none
# of it. See README.rst, "Production servers".
import os


# The module of config/wsgi.py, found from this folder.
pythonpath = os.path.dirname(os.path.abspath(__file__))
wsgi_app = "wsgi:application"
bind = os.environ.get("KINTO_BIND", "localhost:8888")

# Threads: uploads and downloads wait on the network and the disk, not on Python. With the
# memory backend (config/kinto.ini) keep one worker: each worker would have its own data.
# With PostgreSQL, add workers up to the number of cores.
worker_class = "gthread"
workers = int(os.environ.get("KINTO_WORKERS", "1"))
threads = 8
# A request, body included, may take this long (seconds): a 2 GiB upload at 10 MiB/s takes
# 205 s. Raise it with max_size_bytes, or prefer resumable uploads for slow clients.
timeout = 600
graceful_timeout = 30
keepalive = 5
# Request line and headers only: bodies are bounded by kinto.attachment.max_size_bytes.
limit_request_line = 8190
limit_request_field_size = 16380
# The per-request log is Kinto's own (request.summary); gunicorn's access log would repeat it.
accesslog = None
errorlog = "-"
