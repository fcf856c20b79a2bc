"""A one-publisher RTMP server on 127.0.0.1 for push tests: FFmpeg's own RTMP listener, via PyAV.

    python -m tests.helpers.rtmp_server rtmp://127.0.0.1:PORT/live/key received.npy

accepts one publisher, decodes its video and saves the frames (RGB, N x H x W x 3) when the
publisher disconnects. It runs in its own process so the test's pushing thread and the server
never share a GIL or an FFmpeg context.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np

from streamer import REPO_ROOT
from tests.helpers.rtsp_server import free_port

LISTEN_TIMEOUT_S = 20  # the server gives up if no publisher connects


class RtmpTestServer:
    def __init__(self, received: Path) -> None:
        self.push_url = f"rtmp://127.0.0.1:{free_port()}/live/key"
        self.received = received
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.rtmp_server", self.push_url, str(received)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # It says "ready" once PyAV is imported, just before it binds; a probe connection would
        # use up its one accept, so the bind itself is given a moment.
        if self._process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"RTMP test server did not start: {self._process.communicate()[1][-500:]}")
        time.sleep(0.3)

    def frames(self, timeout_s: float = 20.0) -> np.ndarray:
        """The frames the publisher sent, once it has disconnected."""
        _, stderr = self._process.communicate(timeout=timeout_s)
        if self._process.returncode != 0:
            raise RuntimeError(f"RTMP test server failed: {stderr.strip()[-500:]}")
        return np.load(self.received)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def _serve(url: str, received: Path) -> None:
    frames = []
    print("ready", flush=True)
    with av.open(url, format="flv", options={"listen": "1", "timeout": str(LISTEN_TIMEOUT_S)}) as container:
        try:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
        except av.error.OSError:
            pass  # FFmpeg's listener reports the publisher's disconnect as an I/O error
    np.save(received, np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8))


if __name__ == "__main__":
    _serve(sys.argv[1], Path(sys.argv[2]))
