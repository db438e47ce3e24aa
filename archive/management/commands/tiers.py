"""``manage.py tiers``: move objects between storage tiers, apply lifecycle rules, see where things are, verify.

- ``tiers move --to cold [--study UID]... [--from hot] [--background]``: plan the moves
  and run them here (or leave them to the task worker with ``--background``);
- ``tiers apply [--background]``: evaluate the lifecycle rules now and move what they select;
- ``tiers resume``: finish moves an interrupted run left (a crash, a kill);
- ``tiers status``: objects, bytes and cost per tier, moves under way and failed, growth and budgets
  (the figures of the admin's storage cost page, from :mod:`archive.costs`);
- ``tiers verify TIER``: re-hash every object on a tier; exit status 1 if any does not match.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count

from archive.costs.budgets import check_budgets
from archive.costs.projection import days
from archive.costs.usage import cost_report
from archive.ingest.lifecycle import apply_rules
from archive.ingest.mover import Mover, MoveReport, grace_seconds, pending_moves, plan_moves
from archive.ingest.restore import advance_restores, request_restores, schedule
from archive.ingest.tasks import run_moves
from archive.ingest.verify import verify_tier
from archive.models import Instance, MoveState, Restore, RestoreState, Tier, TierMove
from archive.storage.registry import UnknownTier, get_storage


class Command(BaseCommand):
    help = "Move objects between storage tiers, apply lifecycle rules, show tier status, verify a tier."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        move = sub.add_parser("move", help="move instances to a tier")
        move.add_argument("--to", required=True, help="target tier")
        move.add_argument("--study", action="append", default=[], help="Study Instance UID (repeatable; default all)")
        move.add_argument("--from", dest="source", help="only instances now on this tier")
        move.add_argument("--background", action="store_true", help="leave the moves to the task worker")
        apply = sub.add_parser("apply", help="evaluate the lifecycle rules now")
        apply.add_argument("--background", action="store_true", help="leave the moves to the task worker")
        sub.add_parser("resume", help="finish the moves an interrupted run left")
        sub.add_parser("status", help="objects and bytes per tier, moves under way")
        verify = sub.add_parser("verify", help="re-hash every object on a tier")
        verify.add_argument("tier")
        restore = sub.add_parser("restore", help="bring a study back from a tier that needs a restore")
        restore.add_argument("study", nargs="+", help="Study Instance UID")
        restore.add_argument("--background", action="store_true", help="leave the restore to the task worker")
        restore.add_argument("--wait", type=float, default=0, help="seconds to wait for the restore here (polling)")

    def handle(self, *args: Any, **options: Any) -> None:
        Tier.sync_environment()
        getattr(self, "do_" + options["action"])(options)

    # ------------------------------------------------------------------ actions

    def do_move(self, options: dict[str, Any]) -> None:
        instances = Instance.objects.all()
        if options["study"]:
            instances = instances.filter(series__study__study_instance_uid__in=options["study"])
            found = set(instances.values_list("series__study__study_instance_uid", flat=True).distinct())
            if missing := [uid for uid in options["study"] if uid not in found]:
                raise CommandError(f"no such study: {', '.join(missing)}")
        if options["source"]:
            self.tier(options["source"])
            instances = instances.filter(tier=options["source"])
        self.tier(options["to"])
        batch, count = plan_moves(instances, options["to"], actor="manage.py tiers move")
        self.stdout.write(f"planned {count} moves to {options['to']} (batch {batch})")
        self.run(batch, options["background"])

    def do_apply(self, options: dict[str, Any]) -> None:
        started = time.monotonic()
        try:
            plans = apply_rules(actor="manage.py tiers apply")
        except OSError as exc:
            raise CommandError(f"a rule's tier cannot be used: {exc}") from None
        for plan in plans:
            self.stdout.write(f"rule {plan.rule.name!r}: {plan.planned} instances to {plan.rule.target_tier}")
        self.stdout.write(f"rules evaluated in {time.monotonic() - started:.2f} s")
        for plan in plans:
            if plan.planned:
                self.run(plan.batch, options["background"])

    def do_restore(self, options: dict[str, Any]) -> None:
        instances = Instance.objects.filter(series__study__study_instance_uid__in=options["study"])
        found = set(instances.values_list("series__study__study_instance_uid", flat=True).distinct())
        if missing := [uid for uid in options["study"] if uid not in found]:
            raise CommandError(f"no such study: {', '.join(missing)}")
        # An administrator's restore also brings OFFLINE objects back (their media must be in place again).
        asked = request_restores(instances, "command", actor="manage.py tiers restore", include_offline=True)
        if not asked.in_flight:
            self.stdout.write("every instance is online: nothing to restore")
            return
        self.stdout.write(
            f"{asked.in_flight} instances restoring ({asked.asked} newly asked), about {asked.seconds_left // 60} min"
        )
        if options["background"]:
            schedule()
            self.stdout.write("the task worker (manage.py db_worker) carries out the restore")
            return
        deadline = time.monotonic() + options["wait"]
        while True:
            report = advance_restores()
            for line in report.failed:
                self.stdout.write(f"  FAILED {line}")
            left = instances.exclude(availability="ONLINE").count()
            total = instances.count()
            self.progress(total - left, total)
            if not left or not report.active or time.monotonic() >= deadline:
                break
            time.sleep(max(0.1, min(float(settings.PACS_RESTORE_POLL_SECONDS), deadline - time.monotonic())))
        self.stderr.write("")
        if left:
            schedule(60)
            self.stdout.write(f"{left} instances still restoring; the task worker finishes the restore")
        else:
            self.stdout.write("restored: every instance is online")

    def do_resume(self, options: dict[str, Any]) -> None:
        self.run(None, background=False)

    def do_status(self, options: dict[str, Any]) -> None:
        report = cost_report()
        budgets = check_budgets(report, actor="manage.py tiers status")
        backends = {t.name: t for t in Tier.objects.all()}
        head = f"{'tier':<12} {'backend':<11} {'retrieval':<10} {'objects':>10} {'GB':>10}"
        self.stdout.write(f"{head} {'GB stored':>10} {'a month':>10}")
        for u in report.tiers:
            tier = backends.get(u.label)
            backend, retrieval = (tier.backend, tier.retrieval) if tier else ("(unknown)", "")
            self.stdout.write(
                f"{u.label:<12} {backend:<11} {retrieval:<10} {u.objects:>10} {u.gb:>10.3f} {u.stored_gb:>10.3f}"
                f" {u.monthly:>10.2f}"
            )
        moves = report.moves
        states = ", ".join(f"{state} {moves.by_state.get(state, 0)}" for state in MoveState.values)
        self.stdout.write(f"moves: {states}")
        self.stdout.write(
            f"mover: {moves.in_flight_objects} in flight, {moves.done_objects} switched, progress"
            f" {moves.progress:.0%}; last hour {moves.last_hour_bytes / 1e6:.1f} MB ({moves.throughput_mb_s:.3f} MB/s)"
        )
        for move in TierMove.objects.filter(state=MoveState.FAILED).order_by("-updated_at")[:10]:
            self.stdout.write(f"  failed {move.source_tier} → {move.target_tier}: {move.error}")
        ingest = report.ingest
        self.stdout.write(
            f"ingest over {ingest.window_days} days: {ingest.studies_per_day:.2f} studies/day ×"
            f" {ingest.average_study_gb:.3f} GB × 365 / 1024 ≈ {ingest.tb_per_year:.3f} TB/year"
        )
        model = report.model()
        self.stdout.write(
            f"monthly storage cost: now {report.monthly_now:.2f}, in 12 months {model.monthly_storage(days(12)):.2f},"
            f" in 60 months {model.monthly_storage(days(60)):.2f}"
            f" (all on hot: {model.monthly_storage(days(60), hot_only=True):.2f} in 60 months)"
        )
        for status in budgets:
            state = "OVER" if status.over else "under"
            self.stdout.write(
                f"budget {status.budget.name!r} ({status.budget.scope}): {status.projected} a month"
                f" in {status.budget.horizon_months} months, limit {status.budget.monthly_limit}: {state}"
            )
        restores = {r["state"]: r["n"] for r in Restore.objects.values("state").annotate(n=Count("id"))}
        self.stdout.write("restores: " + ", ".join(f"{s} {restores.get(s, 0)}" for s in RestoreState.values))

    def do_verify(self, options: dict[str, Any]) -> None:
        self.tier(options["tier"])
        report = verify_tier(options["tier"], progress=self.progress, actor="manage.py tiers verify")
        self.stderr.write("")
        rate = report.bytes / 1e6 / report.seconds if report.seconds else 0.0
        self.stdout.write(
            f"{options['tier']}: {report.checked} objects, {report.bytes / 1e6:.1f} MB verified "
            f"in {report.seconds:.2f} s ({rate:.0f} MB/s); {len(report.mismatches)} do not match"
        )
        for line in report.mismatches:
            self.stdout.write(f"  MISMATCH {line} (quarantined)")
        if report.mismatches:
            sys.exit(1)

    # ------------------------------------------------------------------ helpers

    def tier(self, name: str) -> None:
        try:
            get_storage(name).check()
        except UnknownTier as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"tier {name} cannot be reached: {exc}") from None

    def run(self, batch: str | None, background: bool) -> None:
        if background:
            run_moves.enqueue(batch or "")
            self.stdout.write("the task worker (manage.py db_worker) carries out the moves")
            return
        total = MoveReport()
        while True:
            report = Mover(batch).run()
            total.moved += report.moved
            total.deleted += report.deleted
            total.bytes += report.bytes
            total.seconds += report.seconds
            total.failed += report.failed
            waiting = pending_moves(batch)
            self.progress(total.moved, total.moved + waiting.exclude(state=MoveState.SWITCHED).count())
            if report.paused:
                self.stderr.write("\npaused (retried later by tiers resume or the worker): " + "; ".join(report.paused))
                break
            if not waiting.exists():
                break
            if not (report.moved or report.deleted or report.bytes) and not waiting.filter(state=MoveState.SWITCHED):
                self.stderr.write(f"\n{waiting.count()} moves wait to be retried (tiers resume, or the task worker)")
                break
            time.sleep(min(max(grace_seconds(), 0.2), 5.0))  # sources wait out their grace period, then go
        self.stderr.write("")
        rate = total.bytes / 1e6 / total.seconds if total.seconds else 0.0
        self.stdout.write(
            f"moved {total.moved}, removed {total.deleted} sources, {total.bytes / 1e6:.1f} MB at {rate:.0f} MB/s; "
            f"{len(total.failed)} failed"
        )
        for line in total.failed:
            self.stdout.write(f"  FAILED {line}")

    def progress(self, done: int, total: int) -> None:
        if total and self.stderr.isatty():
            width = 30
            filled = width * done // total
            self.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", ending="")
