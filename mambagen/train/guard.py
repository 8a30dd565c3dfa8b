"""What keeps a run folder to one run, and a run alive through the signals clusters send.

    claim_run_folder(out, ...)   refuse a folder holding another run (unless --resume / --overwrite);
                                 returns the `RunLock` held while training (stale-lock aware)
    check_resume(saved, now)     --resume refuses settings that would make it another run, naming them
    StopSignals()                SIGINT/SIGTERM ask the loop to stop after the step it is in: it writes a
                                 checkpoint and raises `TrainingInterrupted`; a second signal exits at once
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from ..io import WriteError

LOCK = ".lock"


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM stopped a run after a step; its checkpoint was written."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}; checkpoint {checkpoint}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum   # the shell's convention: 130 for SIGINT, 143 for SIGTERM


# ------------------------------------------------------------------------------------------ the lock
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """out/.lock: {pid, host, started}, created exclusively. A lock left by a process that no longer
    runs on this host is stale and taken over; a lock of another host is respected."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK
        self.held = False

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                other = self.holder() or {}
                stale = other.get("host") == socket.gethostname() and not _alive(int(other.get("pid", -1)))
                if not stale and other:
                    raise ValueError(f"{self.path.parent} is in use by another run (pid {other.get('pid')} on "
                                     f"{other.get('host')}, started {other.get('started')}); wait for it to end, "
                                     f"or delete {self.path} if that process is gone")
                self.path.unlink(missing_ok=True)     # stale (or unreadable): take it over
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
            self.held = True
            return self
        raise ValueError(f"could not take the lock {self.path}; delete it if no run is using the folder")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def claim_run_folder(out: Path, *, resume: bool, overwrite: bool, marks: tuple[str, ...],
                     written: tuple[str, ...]) -> RunLock:
    """Lock `out` for this run. A folder holding any of `marks` (another run's files) is refused unless
    resuming it or told to overwrite it; --overwrite deletes what a run writes (`written`, globs) first."""
    out = Path(out)
    lock = RunLock(out).acquire()
    try:
        found = [m for m in marks if any(out.glob(m))]
        if found and not resume and not overwrite:
            raise ValueError(f"{out} already holds a run ({', '.join(found)}): pass --resume to continue it, "
                             "--overwrite to replace it, or choose another --out")
        if overwrite and not resume:
            for pattern in written:
                for p in out.glob(pattern):
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
    except BaseException:
        lock.release()
        raise
    return lock


# ------------------------------------------------------------------------------------------ resume
def _plain(value):
    return json.loads(json.dumps(value, default=str))   # tuples and lists compare equal


def check_resume(saved: dict, now: dict, fixed: tuple[str, ...], always: tuple[str, ...] = (),
                 allow: bool = False) -> dict:
    """The settings that changed since the checkpoint ({name: (then, now)}). Changes to `fixed` are
    refused unless `allow` (--allow-changes); changes to `always` (the model itself) are refused anyway."""
    changed = {k: (saved.get(k), v) for k, v in now.items()
               if k in saved and _plain(saved.get(k)) != _plain(v) and k not in ("resume", "overwrite",
                                                                                "allow_changes", "progress")}
    refused = {k: c for k, c in changed.items() if k in always or (k in fixed and not allow)}
    if refused:
        what = ", ".join(f"{k} (checkpoint {a!r}, now {b!r})" for k, (a, b) in refused.items())
        hint = ("" if all(k in always for k in refused) else
                "; pass the checkpoint's values, or --allow-changes to continue with the new ones")
        raise ValueError(f"cannot resume: these settings differ from the run's: {what}{hint}")
    return changed


# ------------------------------------------------------------------------------------------ signals
class StopSignals:
    """While active, SIGINT and SIGTERM set `requested` (the signal number) instead of killing the process;
    the loop checks it after each step. A second signal more than `debounce` s later exits at once
    (without a checkpoint); one sooner is the launcher forwarding the same request (torchrun)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, debounce: float = 2.0):
        self.requested, self.debounce, self._at, self._old = 0, debounce, 0.0, {}

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if self.requested and now - self._at > self.debounce:
            sys.stderr.write(f"\n{signal.Signals(signum).name} again: exiting without a checkpoint\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        if not self.requested:
            self.requested, self._at = signum, now
            sys.stderr.write(f"\n{signal.Signals(signum).name}: finishing this step and writing a checkpoint "
                             "(send it again to exit at once)\n")
            sys.stderr.flush()

    def __enter__(self) -> "StopSignals":
        import threading
        if threading.current_thread() is threading.main_thread():   # handlers can only be set there
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}


def ignore_stop_signals(worker_id: int) -> None:
    """A DataLoader worker's init: SIGINT and SIGTERM are for the trainer. Ctrl-C, `timeout` and Slurm
    signal the whole process group; a worker killed by them would make the loader raise in the middle of
    the step instead of letting `StopSignals` finish it and write the checkpoint."""
    for s in StopSignals.SIGNALS:
        signal.signal(s, signal.SIG_IGN)


# ------------------------------------------------------------------------------------------ failed starts
@contextlib.contextmanager
def cleanup_failed_start(out: Path, enabled: bool = True):
    """A run that fails on bad input before its first checkpoint removes the folder it created (a
    diverged or interrupted run keeps its folder: its log says what happened)."""
    existed = Path(out).exists()
    try:
        yield
    except (ValueError, WriteError):
        if enabled and not existed and Path(out).is_dir() and not any(Path(out).glob("checkpoints/step_*")):
            shutil.rmtree(out, ignore_errors=True)
        raise
