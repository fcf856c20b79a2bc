#!/usr/bin/env bash
# Installs the Debian packages the tests need: GStreamer's RTSP server, driven from Debian's
# /usr/bin/python3 through PyGObject (tests/helpers/rtsp_server.py), and headless Chromium with
# its driver, which opens the investigator's report (tests/test_report.py).
# Idempotent and quiet; does nothing (and needs no network) when everything is installed.
set -euo pipefail

PACKAGES=(
  gstreamer1.0-rtsp            # libgstrtspserver
  gir1.2-gst-rtsp-server-1.0   # its GObject-introspection bindings (GstRtspServer)
  gstreamer1.0-plugins-base    # videotestsrc, videoconvert, jpegdec's base elements
  gstreamer1.0-plugins-good    # rtph264pay, multifilesrc, jpegdec
  gstreamer1.0-plugins-bad     # h264parse
  gstreamer1.0-plugins-ugly    # x264enc
  python3-gi                   # PyGObject for /usr/bin/python3
  chromium                     # the report's browser test (headless)
  chromium-driver              # chromedriver, for Selenium
  ffmpeg                       # the ffmpeg command: --frame-hashes is checked against its framemd5
)

missing=()
for package in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  if [ "$status" != "install ok installed" ]; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "install_system_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
