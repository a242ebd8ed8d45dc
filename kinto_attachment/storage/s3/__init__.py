"""Blobs in an S3 bucket: the store (:mod:`.store`, with boto3) and its settings
(:mod:`.options`, without).

Importing the package does not import boto3: the registry reads its ``KIND`` to check the
settings of any configuration, and ``S3Store`` is imported when first asked for (``from
kinto_attachment.storage.s3 import S3Store``).
"""

from .. import StoreKind
from . import options


# StoreKind(description, chosen_by, section, table, store)
KIND = StoreKind("S3 bucket", "aws.bucket_name", "aws.", options, (f"{__name__}.store", "S3Store"))
__getattr__ = KIND.exported
