"""The outputs of a run, fed from the caller's loop (`LiveSinks`): pose files, a preview
video, the browser viewer's server, the Open3D window, OSC/VMC over UDP.

All sinks are called from the caller's thread (the one iterating the poses): Open3D needs
its window's thread, the file writer its order, and the server's `publish` never blocks.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from realtime.frames import PoseFrame
from realtime.thumbnails import ImageTap, draw_overlay, encode_jpeg

log = logging.getLogger(__name__)


class LiveSinks:
    """The outputs of a run: pose files (`out`: one path or several, realtime.writers.Recording),
    a preview video (`preview`, realtime.preview.PreviewWriter, drawn from the `tap`'s images),
    viewer server (`serve`), Open3D (`open3d`), VMC over UDP (`osc`, "[HOST:]PORT"; `osc_options`:
    realtime.osc_sink.OscSink's mirror and rate_hz).

    `emit(pf)` sends one PoseFrame everywhere and returns False when the user closed the
    Open3D window (the caller then stops). `finish_file()` completes the files (end of input);
    `close()` completes them too (even after an error: everything emitted so far is kept) and
    stops the server and window. Construction opens everything at once, so a bad --out or a
    busy port fails before the pipeline starts (and whatever was already opened is closed
    again, leaving existing files as they were)."""

    def __init__(self, out: str | Path | Sequence[Any] | None = None, fps: float = 30.0, serve: bool = False,
                 host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
                 open3d: bool = False, tap: ImageTap | None = None, source_info: dict | None = None,
                 osc: str | None = None, overwrite: bool = True, preview: Any = None,
                 say: Callable[[str], None] | None = None, osc_options: dict[str, Any] | None = None) -> None:
        self.writer = None
        self.preview = preview
        self.server = None
        self.viewer = None
        self.osc = None
        self.tap = tap
        self.written = 0
        self.out_paths: list[Path] = []
        try:
            if serve:
                from realtime.server import PoseServer

                self.server = PoseServer(host=host, port=port, token=token, source=source_info).start()
            if open3d:
                from realtime.open3d_sink import Open3DSink

                self.viewer = Open3DSink()
            if osc:
                from realtime.osc_sink import OscSink, parse_target

                self.osc = OscSink(*parse_target(osc), **(osc_options or {}))
            if out:  # last: a busy port or a missing Open3D must not create (or replace) a file
                from realtime.writers import Recording

                self.writer = Recording([out] if isinstance(out, (str, Path)) else list(out), fps, source_info,
                                        overwrite=overwrite, **({"say": say} if say else {}))
                self.out_paths = [s.path for s in self.writer.specs]
        except BaseException:
            self.close()
            raise

    @staticmethod
    def from_args(args: argparse.Namespace, fps: float, tap: ImageTap | None = None,
                  source_info: dict | None = None, preview: Any = None) -> "LiveSinks":
        from realtime.osc_sink import vmc_options
        from realtime.server import token_from_args
        from realtime.writers import output_specs

        token = token_from_args(args) if args.serve else None
        return LiveSinks(output_specs(getattr(args, "out", None), args), fps, args.serve, args.host, args.port,
                         token, args.open3d, tap, source_info, getattr(args, "osc", None),
                         overwrite=not getattr(args, "no_overwrite", False), preview=preview,
                         say=log.info if getattr(args, "quiet", False) else None,  # -q: errors only
                         osc_options=vmc_options(args))

    @property
    def out_names(self) -> str:
        """The pose files this run writes, for messages."""
        return ", ".join(str(p) for p in self.out_paths)

    @property
    def url(self) -> str | None:
        return self.server.url if self.server is not None else None

    def emit(self, pf: PoseFrame) -> bool:
        if self.writer is not None:
            self.writer.write(pf)
            self.written += 1
        if self.preview is not None:
            self.preview.write(pf, self.tap.get(pf.index) if self.tap is not None else None)
        if self.server is not None:
            jpeg = None
            if self.tap is not None and self.server.wants_thumbnail():
                image = self.tap.get(pf.index)
                if image is not None:
                    jpeg = encode_jpeg(draw_overlay(image, pf))
            self.server.publish(pf, jpeg)
        if self.osc is not None:
            self.osc.emit(pf)
        if self.viewer is not None:
            return self.viewer.update(pf)
        return True

    def finish_file(self) -> None:
        """Complete the files now (end of input) and keep the viewer outputs open. Each file
        output is completed even if another fails; the first failure is raised at the end."""
        self._close(("writer", "preview"))

    def idle(self) -> bool:
        """Keep the outputs responsive while no frame comes (the server needs nothing; the
        Open3D window needs its events polled). False once the user closed that window."""
        if self.viewer is not None:
            return self.viewer.poll()
        return True

    def close(self) -> None:
        """Close everything, each independently (one failing close does not skip the rest);
        the first failure is re-raised at the end (a file that could not be finalised must
        not pass silently)."""
        self._close(("writer", "preview", "server", "viewer", "osc"))

    def _close(self, names: tuple[str, ...]) -> None:
        first: BaseException | None = None
        for name in names:
            obj = getattr(self, name)
            if obj is None:
                continue
            setattr(self, name, None)
            try:
                obj.close()
            except Exception as exc:  # noqa: BLE001 - keep closing the others
                from realtime.writers import OutputError

                # an OutputError is the command's to report (one line, with how to recover)
                log.log(logging.DEBUG if isinstance(exc, OutputError) else logging.ERROR,
                        "closing the %s failed: %s", name, exc)
                first = first or exc
        if first is not None:
            raise first
