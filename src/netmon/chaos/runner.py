"""Run experiments with Chaos Toolkit's own engine and turn each journal into a verdict.

The experiments are Chaos Toolkit files (``chaos/*.yaml``, installed as
``netmon.chaos.experiments``): ``chaos run chaos/database-outage.yaml`` runs one by hand
against a rig whose ``target.json`` is in ``$NETMON_CHAOS_TARGET``. ``netmon chaos run``
runs them in process with ``chaoslib.experiment.run_experiment``, keeps each journal, and
decides *passed* from the journal alone: the run completed, the steady-state hypothesis
held before and after, every action of the method succeeded, and the judged window
(``figures``) has nothing missing, duplicated or partial and no false ``unreachable``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from netmon.chaos.target import TARGET_ENV, Target

__all__ = ["Outcome", "available", "load", "run_all", "verdict"]

PACKAGE = "netmon.chaos.experiments"


@dataclass
class Outcome:
    name: str
    title: str
    passed: bool
    status: str  # completed, failed, aborted, interrupted, skipped
    figures: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    journal: Path | None = None

    def as_json(self) -> dict[str, Any]:
        f = self.figures
        return {
            "experiment": self.name,
            "passed": self.passed,
            "status": self.status,
            "produced": f.get("produced"),
            "stored_once": f.get("stored_once"),
            "missing": f.get("missing"),
            "duplicated": f.get("duplicated"),
            "partial": f.get("partial"),
            "false_unreachable": f.get("false_unreachable"),
            "recovery_s": f.get("recovery_s"),
            "spool_peak_bytes": f.get("spool_peak_bytes"),
            "api_p99_ms": f.get("api_p99_ms"),
            "in_flight_at_kill": f.get("in_flight_at_kill"),
            "duration_s": round(self.duration_s, 1),
            "reasons": self.reasons,
        }


def _folder() -> Path:
    return Path(str(resources.files(PACKAGE)))


def available() -> dict[str, Path]:
    """Every experiment shipped with netmon, by name (its file's stem)."""
    return {p.stem: p for p in sorted(_folder().glob("*.yaml"))}


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "method" not in data:
        raise ValueError(f"{path}: not a Chaos Toolkit experiment (no method)")
    return data


def verdict(name: str, journal: dict[str, Any]) -> Outcome:
    """Passed or not, and why, from a Chaos Toolkit journal."""
    experiment = journal.get("experiment", {})
    status = str(journal.get("status"))
    reasons: list[str] = []
    if status != "completed":
        reasons.append(f"the run ended {status}")
    if journal.get("deviated"):
        reasons.append("the steady-state hypothesis did not hold after the fault")
    before = journal.get("steady_states", {}).get("before") or {}
    if before and not before.get("steady_state_met", True):
        reasons.append("the steady-state hypothesis did not hold before the fault")
    figures: dict[str, Any] = {}
    for run in journal.get("run", []):
        activity = run.get("activity", {})
        if run.get("status") != "succeeded":
            reasons.append(f"{activity.get('name')}: {_one_line(run.get('exception'))}")
            if "InterruptExecution" in str(run.get("exception")):
                # SIGTERM during a Python action (a fault's hold) fails that action;
                # chaoslib then calls the run "failed", but the user asked to stop.
                status = "interrupted"
        if activity.get("name") == "figures" and isinstance(run.get("output"), dict):
            figures = run["output"]
    unavailable = [r for r in reasons if "FaultUnavailable" in r or "the target" in r]
    if unavailable:
        # Not a failure of netmon: this target gives the fault nothing of ours to act on.
        return Outcome(
            name,
            str(experiment.get("title", name)),
            False,
            "skipped",
            figures,
            unavailable,
            float(journal.get("duration") or 0.0),
        )
    if not figures:
        reasons.append("no figures: the window was not judged")
    elif not figures.get("produced"):
        reasons.append("no cycle was due in the judged window: nothing was proven")
    for key in ("missing", "duplicated", "partial", "false_unreachable"):
        if figures.get(key):
            reasons.append(f"{key} {figures[key]}")
    if figures and "recovery_s" in figures and figures["recovery_s"] is None:
        reasons.append("did not recover (backlog not written, or not ready)")
    return Outcome(
        name=name,
        title=str(experiment.get("title", name)),
        passed=not reasons,
        status=status,
        figures=figures,
        reasons=reasons,
        duration_s=float(journal.get("duration") or 0.0),
    )


def _one_line(exc: Any) -> str:
    if isinstance(exc, list):
        lines = [str(x).strip() for x in exc if str(x).strip()]
        return lines[-1] if lines else "failed"
    return str(exc or "failed").strip().splitlines()[-1] if exc else "failed"


def run_all(
    target: Target,
    names: Iterable[str],
    *,
    on_start: Callable[[str, str], None] | None = None,
    on_activity: Callable[[str], None] | None = None,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    from chaoslib.experiment import run_experiment
    from chaoslib.run import RunEventHandler

    class Events(RunEventHandler):  # type: ignore[misc]
        def start_activity(self, activity: dict[str, Any]) -> None:
            if on_activity is not None:
                on_activity(str(activity.get("name", "")))

    os.environ[TARGET_ENV] = str(target.path)
    # chaoslib logs every step at INFO to the root logger; its journal says it all.
    logging.getLogger("chaostoolkit").setLevel(logging.WARNING)
    found = available()
    outcomes = []
    for name in names:
        experiment = load(found[name])
        if on_start is not None:
            on_start(name, str(experiment.get("title", name)))
        started = time.monotonic()
        journal = run_experiment(experiment, settings={}, event_handlers=[Events()])
        where = target.workdir / f"journal-{name}.json"
        where.write_text(json.dumps(journal, indent=2, default=str))
        outcome = verdict(name, journal)
        outcome.duration_s = time.monotonic() - started
        outcome.journal = where
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
        if outcome.status == "interrupted":
            break  # SIGTERM or Ctrl-C during the experiment: the rest are not run
    return outcomes
