"""Which backend serves a named tier: chosen by dotted path, as settings configure it.

``settings.PACS_TIERS`` names each tier's backend, either by a short name from
:data:`BACKENDS` or by the dotted path of a :class:`~archive.storage.base.Storage`
subclass (as Django REST framework picks its renderers). The base class never
names a subclass, and an S3 tier imports boto3 only when it is first used.
A tier that ``PACS_TIERS`` does not name is a folder under ``PACS_STORAGE_DIR``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import cast

from django.conf import settings
from django.utils.module_loading import import_string

from archive.storage.base import Storage

BACKENDS = {
    "filesystem": "archive.storage.filesystem.FileSystemStorage",
    "s3": "archive.storage.s3.S3Storage",
}


def backend_class(name: str) -> type[Storage]:
    """The backend class that a ``PACS_TIERS`` ``backend`` value names."""
    cls = import_string(BACKENDS.get(name, name))
    if not (isinstance(cls, type) and issubclass(cls, Storage)):
        raise TypeError(f"{name} is not a storage backend")
    return cast(type[Storage], cls)


@cache
def get_storage(tier: str = "hot") -> Storage:
    """The backend of a named tier, as ``settings.PACS_TIERS`` configures it (default: a local folder)."""
    config = settings.PACS_TIERS.get(tier, {"backend": "filesystem"})
    root = Path(settings.PACS_STORAGE_DIR)
    return backend_class(config["backend"]).from_config(config, tier=tier, root=root, fsync=settings.PACS_FSYNC)
