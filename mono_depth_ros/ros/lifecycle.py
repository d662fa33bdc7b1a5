"""How every process of this package that starts rclpy starts and stops (one helper for all).

rclpy's own SIGINT/SIGTERM handlers shut the context down from inside the signal, while a node may
still be half built or an executor may be building its next wait set; the node then dies with
``RCLError`` and status 1 (ros2/rclpy#398). So here rclpy starts with
``SignalHandlerOptions.NO`` and the process keeps its own handlers:

- start-up (imports, model loading): a signal ends the process at once with status 0, since
  nothing has been produced yet; slow start-up work runs in a thread (``build``) so that the main
  thread stays free to take the signal;
- running (after ``defer()``): a signal only sets a flag. ``spin`` returns, the caller finishes its
  work (the evaluation node writes its report), ``finish`` destroys nodes and shuts rclpy down;
  further signals are ignored;
- ``exit`` ends the process without the interpreter's slow module teardown;
- after a stop signal, ``finish``'s DDS teardown is cut short ``TEARDOWN_BY`` seconds after the
  signal (everything the process produces is written before it; on a loaded machine destroying
  the nodes alone was measured at 2.5 s).

This module imports neither rclpy nor numpy at the top, so that console scripts can install the
handlers (``run_console_script``) before the heavy node modules are imported.
"""

from __future__ import annotations

import atexit
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, TypeVar

from mono_depth_ros.ros import shm_segments

T = TypeVar("T")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# s after the stop signal by which ``finish`` has left, done or not (2 s is the stop budget;
# leaving and being reaped take a moment too)
TEARDOWN_BY = 1.7


class StopSignals:
    """SIGINT/SIGTERM of this process: exit at once during start-up, a flag afterwards."""

    def __init__(self):
        self.event = threading.Event()
        self.signum: int | None = None
        self.since: float | None = None  # time.monotonic() of the first stop signal
        self.exit_at_once = True

    def install(self) -> "StopSignals":
        """Take over SIGINT and SIGTERM (only possible in the main thread; elsewhere a no-op),
        then unblock them: a parent that started this process with them blocked
        (``spawn``) has its stop signal delivered here, to these handlers."""
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                signal.signal(sig, self._on_signal)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        return self

    def _on_signal(self, signum, _frame) -> None:
        if self.exit_at_once:
            exit_now(0)
        if self.signum is None:
            self.signum, self.since = signum, time.monotonic()
        self.event.set()  # running: the main loop sees it; a repeated signal changes nothing

    def defer(self) -> "StopSignals":
        """From now on a signal only asks to stop (there is work to finish on the way out)."""
        self.exit_at_once = False
        return self

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds or until a stop is asked; True if it was."""
        return self.event.wait(timeout)

    def deadline(self, seconds: float) -> float:
        """``time.monotonic()`` value ``seconds`` after the stop signal (or after now)."""
        return (self.since if self.since is not None else time.monotonic()) + seconds

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "none"


_STOP = StopSignals()


def install() -> StopSignals:
    """The process's stop signals, installed (idempotent)."""
    return _STOP.install()


def exit_now(code: int = 0) -> None:
    """Leave at once with ``code`` (flushing what can be flushed); never returns. A DDS participant
    not destroyed by then would leave its shared-memory segment behind: it is removed here."""
    try:
        shm_segments.remove_own()
    except Exception:  # noqa: BLE001 - leaving regardless
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - e.g. a signal arriving inside a write
            pass
    os._exit(code)


def run_console_script(module: str, func: str = "main") -> int:
    """Console-script entry: handlers first, then import ``module`` and run its ``func``."""
    install()
    return getattr(importlib.import_module(module), func)()


def spawn(cmd: list[str], **popen_kwargs) -> subprocess.Popen:
    """Start a child process of this package with SIGINT/SIGTERM blocked until its stop handlers
    are installed (``install`` unblocks them): a stop signal sent while its interpreter starts
    stays pending instead of killing it or raising KeyboardInterrupt in an import (exit 1)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return subprocess.Popen(cmd, **popen_kwargs)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def init(args: list[str] | None = None, **kwargs):
    """``rclpy.init`` without rclpy's signal handlers (this module's are installed instead), after
    removing the shared-memory files of Fast DDS participants whose process died (kills, crashes:
    35 MB each with the large-image profile)."""
    import rclpy
    from rclpy.logging import get_logger
    from rclpy.signals import SignalHandlerOptions

    install()
    freed = shm_segments.remove_zombies() if shm_segments.uses_fast_dds() else 0
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO, **kwargs)
    if freed:  # (debug: a start that fails must still print one line, its error)
        get_logger("mono_depth_ros").debug(
            f"removed {freed / 1e6:.0f} MB of Fast DDS shared memory left by dead processes")
    return rclpy


def build(factory: Callable[[], T], stop: StopSignals | None = None) -> T:
    """``factory()`` in a worker thread while the main thread waits, so that a signal during a long
    start-up (a model loading inside one C call) still ends the process at once. Exceptions of
    ``factory`` are raised here."""
    stop = stop or _STOP
    box: dict = {}

    def run():
        try:
            box["value"] = factory()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            box["error"] = exc

    t = threading.Thread(target=run, name="startup", daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.1)
        if stop.requested:  # deferred already: leave the half-built thing behind
            exit_now(0)
    if "error" in box:
        raise box["error"]
    return box["value"]


def spin(executor, stop: StopSignals | None = None, period: float = 0.1) -> None:
    """Run ``executor`` callbacks until a stop signal (or rclpy is shut down elsewhere)."""
    from rclpy.executors import ExternalShutdownException

    stop = stop or _STOP
    while not stop.requested:
        try:
            executor.spin_once(timeout_sec=period)
        except ExternalShutdownException:
            return
        except Exception:
            if stop.requested or not executor.context.ok():
                return  # the context went away under the wait set: that is the stop
            raise


def finish(executor=None, nodes=(), timeout: float = 0.2, code: int = 0) -> None:
    """Shut the executor down, destroy ``nodes`` and shut rclpy down; errors here are ignored
    (the process is leaving). After a stop signal, a teardown still running ``TEARDOWN_BY``
    seconds after it ends the process with ``code`` there (peers then drop this participant
    when its lease runs out instead of at once)."""
    import rclpy

    if _STOP.since is not None:
        watchdog = threading.Timer(max(0.0, _STOP.since + TEARDOWN_BY - time.monotonic()),
                                   exit_now, (code,))
        watchdog.daemon = True
        watchdog.start()
    if executor is not None:
        try:
            executor.shutdown(timeout_sec=timeout)
        except Exception:  # noqa: BLE001
            pass
    for node in nodes:
        try:
            node.destroy_node()
        except Exception:  # noqa: BLE001
            pass
    try:
        rclpy.try_shutdown()
    except Exception:  # noqa: BLE001
        pass


def exit(code: int = 0) -> None:  # noqa: A001 - the process's exit, as sys.exit
    """Run atexit handlers and leave without the interpreter's module teardown (torch and the DDS
    extension modules take about a second), so a stopped node exits within 2 s."""
    _STOP.exit_at_once = False
    try:
        atexit._run_exitfuncs()
    except Exception:  # noqa: BLE001
        pass
    exit_now(code)
