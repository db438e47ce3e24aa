"""``manage.py dicom_device add|list|remove``: the DICOM devices of the node, for scripts.

The same rows as the admin's "DICOM devices", validated by the same model
rules (:meth:`~django.db.models.Model.full_clean`), and every change recorded
in the audit trail as the admin records its own (``admin-add``,
``admin-delete``), with the actor ``manage.py dicom_device``. Errors are one
line on stderr and a non-zero exit.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from archive.models import DicomDevice, Site
from audit.adminlog import record_change

ACTOR = "manage.py dicom_device"
FLAGS = {
    "store": "may_store",
    "query": "may_query",
    "retrieve": "may_retrieve",
    "move_destination": "is_move_destination",
}


def one_line(error: ValidationError) -> str:
    if hasattr(error, "error_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items())
    return " ".join(error.messages)


class Command(BaseCommand):
    help = "Add, list or remove the DICOM devices (AE titles) that may talk to the DICOM node."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="add|list|remove")
        add = actions.add_parser("add", help="register a device")
        add.add_argument("--ae", required=True, help="its calling AE title")
        add.add_argument("--site", required=True, help="code of the site its studies belong to")
        add.add_argument("--host", default="", help="address or network (CIDR) it calls from; default: any")
        add.add_argument("--port", type=int, default=None, help="port it listens on (for C-MOVE to it)")
        add.add_argument("--description", default="")
        add.add_argument("--store", action="store_true", help="may send C-STORE")
        add.add_argument("--query", action="store_true", help="may query (C-FIND)")
        add.add_argument("--retrieve", action="store_true", help="may retrieve (C-MOVE, C-GET)")
        add.add_argument("--move-destination", action="store_true", help="may receive C-MOVE sub-operations")
        add.add_argument("--disabled", action="store_true", help="register it disabled")
        add.add_argument(
            "--if-missing", action="store_true", help="do nothing (and succeed) when the AE title is registered"
        )
        actions.add_parser("list", help="print the devices as a table")
        remove = actions.add_parser("remove", help="remove a device by AE title")
        remove.add_argument("ae", help="its AE title")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"handle_{options['action']}")(options)

    def handle_add(self, options: dict[str, Any]) -> None:
        ae_title = options["ae"].strip()
        if options["if_missing"] and DicomDevice.objects.filter(ae_title=ae_title).exists():
            self.stdout.write(f"DICOM device {ae_title} is already registered")
            return
        site = Site.objects.filter(code=options["site"]).first()
        if site is None:
            raise CommandError(f"no site with code {options['site']!r}")
        device = DicomDevice(
            ae_title=ae_title,
            host=options["host"],
            port=options["port"],
            site=site,
            description=options["description"],
            enabled=not options["disabled"],
            **{field: options[flag] for flag, field in FLAGS.items()},
        )
        try:
            device.clean()
            device.full_clean()
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        with transaction.atomic():
            device.save()
            record_change("add", device, f"capabilities: {', '.join(device.capabilities()) or 'none'}", actor=ACTOR)
        self.stdout.write(f"DICOM device {device} added ({', '.join(device.capabilities()) or 'echo only'})")

    def handle_list(self, options: dict[str, Any]) -> None:
        header = ("AE title", "host", "port", "site", "capabilities", "enabled", "description")
        rows = [header] + [
            (
                d.ae_title,
                d.host or "any",
                str(d.port or ""),
                d.site.code,
                ",".join(d.capabilities()) or "-",
                "yes" if d.enabled else "no",
                d.description,
            )
            for d in DicomDevice.objects.select_related("site")
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

    def handle_remove(self, options: dict[str, Any]) -> None:
        device = DicomDevice.objects.filter(ae_title=options["ae"].strip()).first()
        if device is None:
            raise CommandError(f"no DICOM device with AE title {options['ae']!r}")
        with transaction.atomic():
            record_change("delete", device, actor=ACTOR)
            device.delete()
        self.stdout.write(f"DICOM device {options['ae'].strip()} removed")
