"""A real RTSP server on 127.0.0.1 for tests: GStreamer's gst-rtsp-server in a subprocess.

The server runs under Debian's /usr/bin/python3 (which has PyGObject, `gi`); the project's
Python does not, so this file is both the controller (imported by tests) and the server script
(run as `/usr/bin/python3 rtsp_server.py --port N ...`). The script part imports only the
standard library at module level.

    with RtspTestServer.start() as server:        # a moving test pattern, or loop your own frames:
                                                  # start(frames_dir=write_frames_dir(folder, frames))
        url = server.url                          # rtsp://127.0.0.1:PORT/stream
        server.kill(); server.restart()           # SIGKILL, then a new server on the same port
        server.freeze(); server.resume()          # SIGSTOP / SIGCONT: a stalled camera

    with RtspTestServer.start(record_to=path) as server:
        server.push_url                           # rtsp://127.0.0.1:PORT/push: what a client
                                                  # pushes (ANNOUNCE/RECORD) lands in `path` as H.264

`.ci/install_system_deps.sh` installs the Debian packages. When they are missing, tests call
`require_gstreamer()`: it fails under CI (env CI set) and skips with the reason otherwise.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GST_PYTHON = "/usr/bin/python3"
MOUNT = "/stream"
PUSH_MOUNT = "/push"
START_TIMEOUT_S = 15.0


def _pipeline_description(width: int, height: int, fps: int, frames_dir: str | None) -> str:
    """The gst-launch style description the media factory builds for every client."""
    if frames_dir:
        # JPEG frames named 00000.jpg, 00001.jpg, ... looped forever at `fps`.
        source = (
            f"multifilesrc location={frames_dir}/%05d.jpg loop=true "
            f"caps=image/jpeg,framerate={fps}/1 ! jpegdec ! videoconvert ! videoscale"
        )
    else:
        source = "videotestsrc is-live=true pattern=ball"
    return (
        f"( {source} ! video/x-raw,width={width},height={height},framerate={fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
        "! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def _serve(args: argparse.Namespace) -> None:
    """Server side: runs under /usr/bin/python3 until killed."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(_pipeline_description(args.width, args.height, args.fps, args.frames_dir))
    factory.set_shared(True)  # one encoder for all clients: reconnecting clients join the same stream
    server.get_mount_points().add_factory(MOUNT, factory)
    if args.record_to:
        server.get_mount_points().add_factory(PUSH_MOUNT, _record_factory(GstRtspServer, args.record_to))
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    GLib.MainLoop().run()


def _record_factory(GstRtspServer, path: str):
    """A mount that accepts a pushed H.264 stream and writes it to `path` (Annex B)."""
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
    # unbuffered: the session ends with a TEARDOWN, not an EOS that would flush a buffer
    factory.set_launch(
        "( rtph264depay name=depay0 ! h264parse ! video/x-h264,stream-format=byte-stream "
        f"! filesink location={path} sync=false buffer-mode=unbuffered )"
    )
    return factory


def write_frames_dir(folder: str | Path, frames) -> Path:
    """Write RGB `frames` as the JPEG sequence a frames_dir server loops over; returns `folder`."""
    import cv2  # the controller side only: /usr/bin/python3 never runs this

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(frames):
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / f"{index:05d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return folder


def gstreamer_problem() -> str | None:
    """Why the RTSP server cannot run here, or None when it can."""
    if not Path(GST_PYTHON).exists():
        return f"{GST_PYTHON} not found"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "missing = [e for e in ('x264enc', 'rtph264pay', 'videotestsrc', 'multifilesrc', 'jpegdec')"
        " if Gst.ElementFactory.find(e) is None]; print(' '.join(missing))"
    )
    result = subprocess.run([GST_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        return "GStreamer RTSP server bindings missing: " + result.stderr.strip().splitlines()[-1]
    if result.stdout.strip():
        return "GStreamer elements missing: " + result.stdout.strip()
    return None


def require_gstreamer() -> None:
    """Fail (under CI) or skip (locally) the calling test when the RTSP server cannot run."""
    import pytest

    problem = gstreamer_problem()
    if problem is None:
        return
    hint = f"{problem}; run .ci/install_system_deps.sh"
    if os.environ.get("CI"):
        pytest.fail(hint)
    pytest.skip(hint)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RtspTestServer:
    """Controls one gst-rtsp-server subprocess; use as a context manager so it is always cleaned up."""

    def __init__(
        self, port: int, width: int, height: int, fps: int, frames_dir: str | None, record_to: str | None
    ) -> None:
        self.port = port
        self._args = (
            [
                GST_PYTHON,
                str(Path(__file__).resolve()),
                "--port",
                str(port),
                "--width",
                str(width),
                "--height",
                str(height),
                "--fps",
                str(fps),
            ]
            + (["--frames-dir", frames_dir] if frames_dir else [])
            + (["--record-to", record_to] if record_to else [])
        )
        self._process: subprocess.Popen | None = None
        # A file, not a pipe: nobody reads the server's output while it runs, and a full pipe would block it.
        self._log = tempfile.TemporaryFile(mode="w+")

    @classmethod
    def start(
        cls,
        width: int = 320,
        height: int = 240,
        fps: int = 15,
        frames_dir: str | Path | None = None,
        record_to: str | Path | None = None,
    ) -> RtspTestServer:
        server = cls(free_port(), width, height, fps, _optional_str(frames_dir), _optional_str(record_to))
        server.restart()
        return server

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{MOUNT}"

    @property
    def push_url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{PUSH_MOUNT}"

    def restart(self) -> None:
        """Start the server process (again, on the same port) and wait until it listens."""
        self.stop()
        self._process = subprocess.Popen(self._args, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"RTSP test server exited: {self._log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"RTSP test server did not listen on port {self.port} within {START_TIMEOUT_S} s")

    def kill(self) -> None:
        """SIGKILL: the camera vanishes without closing its connections cleanly."""
        self._signal(signal.SIGKILL)
        self._process.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP: the connection stays open but no data flows (a stalled camera)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> None:
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError("RTSP test server is not running")
        self._process.send_signal(signum)

    def stop(self) -> None:
        """End the server process if it runs (a frozen one too)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def _log_text(self) -> str:
        self._log.seek(0)
        return self._log.read().strip()

    def __enter__(self) -> RtspTestServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
        self._log.close()


def _optional_str(path: str | Path | None) -> str | None:
    return str(path) if path else None


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="gst-rtsp-server for tests (run with /usr/bin/python3)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--frames-dir", default=None)
    parser.add_argument("--record-to", default=None, help="also accept pushes on /push, written here")
    return parser.parse_args()


if __name__ == "__main__":
    _serve(_parse_args())
