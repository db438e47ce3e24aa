"""Which backend serves a named tier: chosen by dotted path, from the environment or the tier catalog.

A tier's configuration is a small mapping (``backend``, then ``root`` or
``bucket``/``prefix``/``endpoint_url``/``region``/``storage_class``...). It
comes, in this order, from ``settings.PACS_TIERS`` (the environment
bootstraps tiers), from the two built-in tiers of the embedded default
(:data:`BUILTIN`: ``hot``, files as received, and ``cold``, a folder of zstd
objects next to it), and then from the catalog: the ``Tier`` rows an
administrator adds in Django admin, which :func:`set_catalog` plugs in
(storage sits below the index and never imports it). A name none of them
knows is refused with :class:`UnknownTier`.

``backend`` is a short name from :data:`BACKENDS` or the dotted path of a
:class:`~archive.storage.base.Storage` subclass (as Django REST framework
picks its renderers). The base class never names a subclass, and an S3 tier
imports boto3 only when it is first used. Backends are built once per
process (:func:`get_storage` is cached; :func:`forget` drops them after an
administrator changes a tier).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.utils.module_loading import import_string

from archive.storage.base import Storage

BACKENDS = {
    "filesystem": "archive.storage.filesystem.FileSystemStorage",
    "zstd": "archive.storage.zstd.ZstdFileSystemStorage",
    "s3": "archive.storage.s3.S3Storage",
}

#: The tiers of the embedded default, folders under ``PACS_STORAGE_DIR`` unless ``PACS_TIERS`` says otherwise.
BUILTIN: dict[str, dict[str, str]] = {"hot": {"backend": "filesystem"}, "cold": {"backend": "zstd"}}

#: Looks a tier up in the catalog (the ``Tier`` table): its configuration, or None.
Catalog = Callable[[str], "Mapping[str, Any] | None"]
_catalog: Catalog | None = None


class UnknownTier(LookupError, OSError):
    """No tier of that name is configured (environment, built-in or catalog).

    Also an :class:`OSError`: an index row naming a tier that has since gone
    from the configuration is an object that cannot be read now, and every
    read path answers it as it answers a missing object (never a 500).
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"there is no storage tier named {name!r}")
        self.name = name


def set_catalog(lookup: Catalog | None) -> None:
    """Where tiers not named by the environment are looked up (the index installs the ``Tier`` table)."""
    global _catalog
    _catalog = lookup
    forget()


def environment_config(name: str) -> Mapping[str, Any] | None:
    """The configuration the environment gives ``name`` (``PACS_TIERS``, else a built-in tier), or None."""
    return settings.PACS_TIERS.get(name) or BUILTIN.get(name)


def tier_config(name: str) -> Mapping[str, Any]:
    """The configuration of the tier ``name``; :class:`UnknownTier` if nothing configures it."""
    config = environment_config(name)
    if config is None and _catalog is not None:
        config = _catalog(name)
    if config is None:
        raise UnknownTier(name)
    return config


def backend_class(name: str) -> type[Storage]:
    """The backend class that a ``PACS_TIERS`` ``backend`` value names."""
    cls = import_string(BACKENDS.get(name, name))
    if not (isinstance(cls, type) and issubclass(cls, Storage)):
        raise TypeError(f"{name} is not a storage backend")
    return cast(type[Storage], cls)


def build(name: str, config: Mapping[str, Any]) -> Storage:
    """A backend for ``config`` (not cached: the admin checks a tier with it before saving)."""
    root = Path(settings.PACS_STORAGE_DIR)
    return backend_class(config["backend"]).from_config(config, tier=name, root=root, fsync=settings.PACS_FSYNC)


@cache
def get_storage(tier: str = "hot") -> Storage:
    """The backend of a named tier (:class:`UnknownTier` if none has that name)."""
    return build(tier, tier_config(tier))


def forget() -> None:
    """Build backends afresh on next use (after a tier's configuration changed)."""
    get_storage.cache_clear()
