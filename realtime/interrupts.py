"""Ctrl-C and SIGTERM as a request to stop between frames, so the commands finalise their
outputs (`DeferredInterrupt`)."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Callable, Iterator


class DeferredInterrupt:
    """Ctrl-C (SIGINT) and SIGTERM as a request to stop, so that the outputs are finalised.

    Inside the `with` block the first signal sets `requested` and `signum`: by default the
    caller acts on it at safe points (`check()` between start-up steps: raising inside
    native code that calls back into Python, as model loading does, would abort the
    process), and its loop stops after the frame in hand (no write is cut in half); with
    immediate=True it raises `Interrupted` at once (a live loop may be blocked waiting for a
    camera). `on_request`, if set, is called on the first signal, from the handler (it must
    only set a flag: e.g. PoseStream.stop_input, so a file reads no further frame while the
    frames already read are finished). A second signal raises `Interrupted` at once. What follows a raise (the
    clean-up), and `finishing(what)`, the writing of the outputs at the end, one more signal
    does not cut short: it takes two (the journal keeps every frame either way). `exit_code` is 128 + the first signal
    (130 for Ctrl-C, 143 for SIGTERM), None without one. Works in the main thread only;
    elsewhere (tests calling a command in a thread) it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, message: str = "stopping after the current frame ({again} again to abort)",
                 immediate: bool = False) -> None:
        self.message = message
        self.immediate = immediate
        self.signum: int | None = None
        self.count = 0
        self.on_request: Callable[[], None] | None = None
        self._abort_at = 2
        self._finishing: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else 128 + int(self.signum)

    @property
    def name(self) -> str:
        """How the user stopped the run: "Ctrl-C" or "SIGTERM" (empty without a signal)."""
        if self.signum is None:
            return ""
        return "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name

    def _handler(self, signum: int, frame: Any) -> None:
        from engines.errors import Interrupted

        self.count += 1
        if self.signum is None:
            self.signum = signum
            if self.on_request is not None:
                self.on_request()
        if self.count >= self._abort_at or (self.count == 1 and self.immediate):
            self._abort_at = self.count + 2  # the clean-up that follows: one more signal does not cut it short
            raise Interrupted(self.signum)
        if self._finishing is not None:
            print(f"\nstill writing {self._finishing}: {self.name} again to abort (every frame stays in the "
                  f"journal for `posestream recover`)", file=sys.stderr, flush=True)
        elif self.count > 1:
            print(f"\nstill stopping: {self.name} again to abort", file=sys.stderr, flush=True)
        elif self.message:
            print(f"\n{self.name}: {self.message.format(again=self.name)}", file=sys.stderr, flush=True)

    def check(self) -> None:
        """A safe point (between start-up steps): raise `Interrupted` if a signal came."""
        from engines.errors import Interrupted

        if self.signum is not None:
            self._abort_at = max(self._abort_at, self.count + 2)
            raise Interrupted(self.signum)

    @contextlib.contextmanager
    def finishing(self, what: str) -> Iterator[None]:
        """While the outputs (`what`) are written: one more signal only prints a note."""
        saved = self._finishing, self._abort_at
        self._finishing, self._abort_at = what, max(self._abort_at, self.count + 2)
        try:
            yield
        finally:
            self._finishing, self._abort_at = saved

    def __enter__(self) -> "DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:  # e.g. SIGINT of a background job
                    self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
