"""Blobs in a Google Cloud Storage bucket: the store (:mod:`.store`, with google-cloud-storage)
and its settings (:mod:`.options`, without).

Importing the package does not import google-cloud-storage: the registry reads its ``KIND`` to
check the settings of any configuration, and ``GCSStore`` is imported when first asked for
(``from kinto_attachment.storage.gcs import GCSStore``).
"""

from .. import StoreKind
from . import options


# StoreKind(description, chosen_by, section, table, store)
KIND = StoreKind(
    "GCS bucket", "gcloud.bucket_name", "gcloud.", options, (f"{__name__}.store", "GCSStore")
)
__getattr__ = KIND.exported
