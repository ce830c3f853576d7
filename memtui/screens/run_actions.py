"""The run-lifecycle keys shared by the Browse list and the Run screen: resume, restart (confirmed),
duplicate with changes (the New-run form filled from the run's spec), delete (confirmed, naming what
goes; a running run is refused), open the log, and copy the equivalent ``memtui --batch`` command.
A host screen mixes in :class:`RunActions`, adds :data:`BINDINGS` and provides ``selected_run()``
(the run acted on, or None) and ``after_run_action(kind, run_dir)``."""
from __future__ import annotations

from pathlib import Path
from textual.binding import Binding

from .. import jobs, lifecycle

BINDINGS = [
    Binding("u", "resume_run", "Resume run"),
    Binding("R", "restart_run", "Restart run", show=False),
    Binding("d", "duplicate_run", "Duplicate run", show=False),
    Binding("D", "delete_run", "Delete run", show=False),
    Binding("l", "run_log", "Run log", show=False),
    Binding("y", "copy_command", "Copy batch command", show=False),
]


class RunActions:
    """Actions on ``self.selected_run()`` (a :class:`~memtui.jobs.RunInfo` or None)."""

    def selected_run(self) -> jobs.RunInfo | None:  # provided by the host
        raise NotImplementedError

    def after_run_action(self, kind: str, run_dir: Path) -> None:
        """Called after ``kind`` (resume | restart | delete) was done to ``run_dir``."""

    def _run_or_warn(self) -> jobs.RunInfo | None:
        run = self.selected_run()
        if run is None:
            self.notify("no run selected", severity="warning")  # type: ignore[attr-defined]
        return run

    def _refused(self, exc: lifecycle.LifecycleError) -> None:
        self.notify(str(exc), severity="warning", timeout=6)  # type: ignore[attr-defined]

    def action_resume_run(self) -> None:
        run = self._run_or_warn()
        if run is None:
            return
        try:
            lifecycle.resume(run.path)
        except lifecycle.LifecycleError as e:
            return self._refused(e)
        self._log(f"resumed {run.name}: {lifecycle.shell_command(run.path)}")
        self.notify(f"resuming {run.name} in its own session")  # type: ignore[attr-defined]
        self.after_run_action("resume", run.path)

    def action_restart_run(self) -> None:
        from .confirm import ConfirmScreen

        run = self._run_or_warn()
        if run is None:
            return
        if run.live:
            return self._refused(lifecycle.LifecycleError(f"{run.name} is running: cancel it (x) before you restart it"))

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                lifecycle.restart(run.path)
            except lifecycle.LifecycleError as e:
                return self._refused(e)
            self._log(f"restarted {run.name}: {lifecycle.shell_command(run.path, ['--restart'])}")
            self.notify(f"restarting {run.name}; the old contents are kept in {run.name}/.old-<time>/")  # type: ignore[attr-defined]
            self.after_run_action("restart", run.path)

        self.app.push_screen(ConfirmScreen(  # type: ignore[attr-defined]
            f"Restart {run.name} from the start?",
            f"Its current contents move to {run.path}/.old-<timestamp>/ (nothing is deleted)."), answered)

    def action_duplicate_run(self) -> None:
        from .new_run import NewRunScreen

        run = self._run_or_warn()
        if run is None:
            return
        try:
            values, options, carry = lifecycle.duplicate_form(run.path)
        except lifecycle.LifecycleError as e:
            return self._refused(e)
        self.app.push_screen(NewRunScreen(values, option_texts=options, carry=carry,  # type: ignore[attr-defined]
                                          title=f"New run — a copy of {run.name}: change what you need"))

    def action_delete_run(self) -> None:
        from .confirm import ConfirmScreen

        run = self._run_or_warn()
        if run is None:
            return
        try:
            plan = lifecycle.delete_plan(run.path)
        except lifecycle.LifecycleError as e:
            return self._refused(e)

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                lifecycle.delete(run.path)
            except (lifecycle.LifecycleError, OSError) as e:
                return self._refused(lifecycle.LifecycleError(f"could not delete {run.name}: {e}"))
            self._log(f"deleted {run.path}")
            self.notify(f"deleted {run.name}")  # type: ignore[attr-defined]
            self.after_run_action("delete", run.path)

        self.app.push_screen(ConfirmScreen(f"Delete {run.name}? This cannot be undone.",  # type: ignore[attr-defined]
                                           f"Removes {plan}"), answered)

    def action_run_log(self) -> None:
        run = self._run_or_warn()
        if run is None:
            return
        show_tab = getattr(self, "action_tab", None)
        if getattr(self, "run_dir", None) == run.path and show_tab is not None:  # the Run screen itself
            show_tab("log")
        else:
            self.app.open_run(run.path, initial_tab="log-tab")  # type: ignore[attr-defined]

    def action_copy_command(self) -> None:
        run = self._run_or_warn()
        if run is None:
            return
        cmd = lifecycle.shell_command(run.path)
        self.app.copy_to_clipboard(cmd)  # type: ignore[attr-defined]
        self._log(f"batch command of {run.name}: {cmd}")
        self.notify(f"copied: {cmd}", timeout=6)  # type: ignore[attr-defined]

    def _log(self, text: str) -> None:
        log = getattr(self.app, "log_message", None)  # type: ignore[attr-defined]
        if log is not None:
            log(text)


__all__ = ["RunActions", "BINDINGS"]
