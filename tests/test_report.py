"""The investigator's report: its files, the evidence rules, live limits, and the CLI's checks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamer.best_shots import ScoreParts, Shot, TrackRecord
from streamer.report import ModelFacts, ReportSettings, ReportWriter, settings_hash
from streamer.report_folder import ReportError, prepare_folder, report_folder
from streamer.report_html import ENHANCED_LABEL
from streamer.values import Box

PARTS = ScoreParts(size=0.5, detector=0.9, sharpness=0.7, frontal=0.8, edge=1.0, total=0.7)
MODEL = ModelFacts("face_restorer.ts", "ab" * 32, {"input_size": 64, "crop_scale": 1.5})


def shot(frame_index: int, restored: bool = True, wall_clock: float | None = None) -> Shot:
    rng = np.random.default_rng(frame_index)
    original = rng.integers(0, 256, size=(30, 30, 3), dtype=np.uint8)
    model_output = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8) if restored else None
    return Shot(
        "cam1",
        1,
        frame_index,
        frame_index * 512,
        frame_index / 25,
        wall_clock,
        Box(10, 10, 20, 20),
        Box(5, 5, 30, 30),
        PARTS,
        original,
        model_output,
    )


def track(track_id: int, shots: list[Shot], wall_clock: float | None = None) -> TrackRecord:
    frames = [s.frame_index for s in shots]
    shots = [dataclasses.replace(s, track_id=track_id) for s in shots]
    return TrackRecord(
        "cam1",
        track_id,
        1,
        min(frames),
        max(frames),
        min(frames) / 25,
        max(frames) / 25,
        wall_clock,
        wall_clock,
        len(shots) * 3,
        tuple(shots),
    )


def writer(folder: Path, clock=lambda: 1_000.0, **settings) -> ReportWriter:
    prepare_folder(folder, overwrite=False)
    report = ReportWriter(ReportSettings(folder=folder, **settings), {"detection": {"min_score": 0.5}}, MODEL, clock)
    report.add_source("cam1", "clip.mp4", "")
    return report


def read_png(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)


def test_each_kept_shot_has_lossless_original_enlarged_enhanced_and_a_sidecar(tmp_path):
    report = writer(tmp_path / "report")
    shots = [shot(7), shot(3, restored=False)]
    report.add_track(track(5, shots))
    report.finish("complete", {"frames_out": 10})
    folder = tmp_path / "report" / "shots" / "cam1" / "track_0005"
    assert np.array_equal(read_png(folder / "f000007_original.png"), shots[0].original)  # lossless, native size
    assert np.array_equal(read_png(folder / "f000007_enhanced.png"), shots[0].restored)  # the model's own size
    enlarged = read_png(folder / "f000007_original_x7.png")  # 30 px x 7 >= 192 px, nearest neighbour
    assert enlarged.shape == (210, 210, 3) and np.array_equal(enlarged[::7, ::7], shots[0].original)
    assert not (folder / "f000003_enhanced.png").exists()  # a face the model did not restore has no enhanced image
    sidecar = json.loads((folder / "f000007.json").read_text())
    assert sidecar["frame_index"] == 7 and sidecar["pts"] == 7 * 512 and sidecar["time_s"] == pytest.approx(0.28)
    assert sidecar["box"] == {"x": 10, "y": 10, "w": 20, "h": 20} and sidecar["track_id"] == 5
    assert sidecar["score"]["total"] == 0.7 and sidecar["rank"] == 1
    assert sidecar["enhanced"]["model_sha256"] == "ab" * 32 and sidecar["enhanced"]["restorer"]["input_size"] == 64
    assert sidecar["settings_sha256"] == settings_hash({"detection": {"min_score": 0.5}})
    assert "wall_clock" not in sidecar  # a recorded file: no run-time clock, so runs repeat byte for byte
    [line] = (tmp_path / "report" / "tracks.jsonl").read_text().splitlines()
    assert json.loads(line)["track_id"] == 5 and len(json.loads(line)["shots"]) == 2


def test_every_enhanced_image_on_the_page_is_labelled_and_no_original_is(tmp_path):
    report = writer(tmp_path / "report")
    report.add_track(track(1, [shot(1), shot(2)]))
    report.add_track(track(2, [shot(4, restored=False)]))
    report.finish("complete", {})
    page = (tmp_path / "report" / "index.html").read_text()
    assert "http://" not in page and "https://" not in page  # self-contained: nothing fetched
    # Cards show the best shot; the <template> of each card holds every kept shot.
    enhanced_images = page.count('_enhanced.png"')
    assert enhanced_images == 1 + 2  # track 1's card + its two shots; track 2 has none
    assert page.count(f'<span class="enhanced-label">{ENHANCED_LABEL}</span>') == enhanced_images
    for figure in page.split('<figure class="original">')[1:]:
        assert "enhanced-label" not in figure.split("</figure>")[0]


def test_index_is_rewritten_at_most_every_refresh_s_and_always_at_the_end(tmp_path):
    now = [100.0]
    report = writer(tmp_path / "report", clock=lambda: now[0], refresh_s=5.0)
    catch_up, report._refresh_if_behind = report._refresh_if_behind, lambda: None  # the thread's idle wake-up
    index = tmp_path / "report" / "index.html"
    report.add_track(track(1, [shot(1)]))
    report.flush()
    assert "track 1" in index.read_text()
    now[0] = 102.0
    report.add_track(track(2, [shot(2)]))
    report.flush()
    assert "track 2" not in index.read_text()  # 2 s later: not yet
    now[0] = 106.0
    report.add_track(track(3, [shot(3)]))
    report.flush()
    assert "track 2" in index.read_text() and "track 3" in index.read_text()
    now[0] = 107.0
    report.add_track(track(4, [shot(4)]))
    report.flush()
    assert "track 4" not in index.read_text()
    catch_up()  # what the writer thread does when no track has ended for refresh_s
    assert "track 4" in index.read_text()
    report.finish("complete", {})
    assert "track 4" in index.read_text() and not list((tmp_path / "report").glob(".*.tmp"))


@pytest.mark.parametrize("limit, kept", [({"max_tracks": 2}, [2, 3]), ({"max_age_s": 60}, [3])])
def test_live_disk_use_is_bounded_by_track_count_or_age(tmp_path, limit, kept):
    now = [1_000.0]
    report = writer(tmp_path / "report", clock=lambda: now[0], **limit)
    for track_id, ended_at in ((1, 900.0), (2, 930.0), (3, 990.0)):
        report.add_track(track(track_id, [shot(track_id, wall_clock=ended_at)], wall_clock=ended_at))
    report.flush()
    lines = (tmp_path / "report" / "tracks.jsonl").read_text().splitlines()
    assert [json.loads(line)["track_id"] for line in lines] == kept
    folders = sorted(p.name for p in (tmp_path / "report" / "shots" / "cam1").iterdir())
    assert folders == [f"track_{k:04d}" for k in kept]


@pytest.mark.parametrize(
    "setup, overwrite, error",
    [
        ("report", False, "report folder exists (use --overwrite"),
        ("other", True, "not a report folder"),
        ("file", True, "exists and is not a folder"),
        ("under_file", False, "report folder cannot be written"),
        ("report", True, None),
        ("none", False, None),
    ],
)
def test_the_report_folder_is_checked_at_start(tmp_path, setup, overwrite, error):
    folder = tmp_path / "report"
    if setup == "report":
        folder.mkdir()
        (folder / "run.json").write_text("{}")
        (folder / "index.html").write_text("old")
    elif setup == "other":
        folder.mkdir()
        (folder / "holiday.jpg").write_text("not ours")
    elif setup == "file":
        folder.write_text("a file")
    elif setup == "under_file":
        (tmp_path / "plain").write_text("a file")
        folder = tmp_path / "plain" / "report"
    if error is None:
        prepare_folder(folder, overwrite)
        assert folder.is_dir() and list(folder.iterdir()) == []
    else:
        with pytest.raises(ReportError, match=error.replace("(", r"\(")):
            prepare_folder(folder, overwrite)


@pytest.mark.parametrize(
    "configured, output, jobs, expected",
    [("r", "out/a.mp4", 1, "r"), ("", "out/a.mp4", 1, "out/a_report"), ("", "out/", 3, "out/report")],
)
def test_the_report_folder_defaults_beside_the_output(configured, output, jobs, expected):
    assert report_folder(configured, output, jobs) == Path(expected)


def test_a_full_disk_mid_run_is_an_error_and_leaves_no_page_that_looks_finished(tmp_path, monkeypatch):
    report = writer(tmp_path / "report")
    report.add_track(track(1, [shot(1)]))
    report.flush()
    assert (tmp_path / "report" / "index.html").exists()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("streamer.report._write_png", disk_full)
    report.add_track(track(2, [shot(2)]))  # written in the background: the failure comes with the next call
    with pytest.raises(ReportError, match="No space left on device"):
        report.flush()
    with pytest.raises(ReportError, match="No space left on device"):
        report.add_track(track(3, [shot(3)]))  # the write stage's next track stops the run
    assert not (tmp_path / "report" / "index.html").exists()


# ---- through the command line -------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def two_reports(tmp_path_factory, face_clip, checker_model):
    """The same clip, model and config, run twice with --report (a `run_cli` of module scope)."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    base = tmp_path_factory.mktemp("reports")
    before = (sha256(face_clip.path), os.stat(face_clip.path).st_mtime_ns)
    runs = []
    for name in ("first", "second"):
        done = subprocess.run(
            [
                sys.executable,
                str(REPO_ROOT / "run_stream.py"),
                str(face_clip.path),
                "-o",
                str(base / f"{name}.mp4"),
                "--model",
                str(checker_model),
                "--detect-every",
                "2",
                "--report",
                str(base / name),
                "-q",
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=180,
            cwd="/",
        )
        assert done.returncode == 0, done.stderr
        runs.append(base / name)
    after = (sha256(face_clip.path), os.stat(face_clip.path).st_mtime_ns)
    return runs, before, after


def test_the_cli_writes_a_report_of_every_track_and_never_touches_the_input(two_reports, face_clip):
    (report, _), before, after = two_reports
    assert before == after  # the evidence: same bytes, same modification time
    record = json.loads((report / "run.json").read_text())
    assert record["status"] == "complete" and record["errors"] == []
    assert record["inputs"][0]["sha256"] == before[0]
    assert record["model"]["sha256"] and record["config"]["report"]["enabled"] is True
    assert record["counts"]["frames_out"] == len(face_clip.boxes) and record["counts"]["tracks"] >= 2
    tracks = [json.loads(line) for line in (report / "tracks.jsonl").read_text().splitlines()]
    assert len(tracks) == record["counts"]["tracks"]
    assert all(1 <= len(t["shots"]) <= 3 and t["shots"][0]["enhanced"] for t in tracks)


def test_the_same_input_model_and_config_give_byte_identical_shots(two_reports):
    (first, second), _, _ = two_reports
    names = sorted(p.relative_to(first).as_posix() for p in (first / "shots").rglob("*") if p.is_file())
    assert names and names == sorted(
        p.relative_to(second).as_posix() for p in (second / "shots").rglob("*") if p.is_file()
    )
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "tracks.jsonl").read_bytes() == (second / "tracks.jsonl").read_bytes()
    records = [json.loads((folder / "run.json").read_text()) for folder in (first, second)]
    for record in records:
        for key in ("started_utc", "finished_utc"):
            record.pop(key)
        record["config"]["report"].pop("folder")
    assert records[0] == records[1]


@pytest.mark.parametrize("prepare, message", [("exists", "report folder exists"), ("file", "cannot be written")])
def test_an_unusable_report_folder_is_one_line_and_exit_2_before_anything_runs(
    run_cli, tmp_path, face_clip, prepare, message
):
    folder = tmp_path / "report"
    if prepare == "exists":
        folder.mkdir()
    else:
        (tmp_path / "file").write_text("x")
        folder = tmp_path / "file" / "report"
    result = run_cli(face_clip.path, "-o", tmp_path / "out.mp4", "--report", folder)
    assert result.returncode == 2
    assert len(result.error_lines) == 1 and message in result.error_lines[0], result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out.mp4").exists()


# ---- in a real browser ----------------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


@pytest.fixture
def browser(tmp_path):
    """Debian's headless chromium through chromedriver. Skipped where they are missing, unless
    REQUIRE_BROWSER=1 (as .ci/run sets, after installing them): then their absence fails."""
    import shutil

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail("chromium or chromedriver missing: run .ci/install_system_deps.sh")
        pytest.skip("chromium and chromedriver are not installed (.ci/install_system_deps.sh installs them)")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a driver online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_the_report_opens_in_a_real_browser_with_its_cards_images_and_labels(two_reports, browser):
    from selenium.webdriver.common.by import By

    report = two_reports[0][0]
    tracks = (report / "tracks.jsonl").read_text().splitlines()
    browser.get((report / "index.html").as_uri())
    cards = browser.find_elements(By.CSS_SELECTOR, ".card")
    assert len(cards) == len(tracks) >= 2
    images = browser.find_elements(By.CSS_SELECTOR, ".card img")
    assert len(images) == 2 * len(cards)  # original and enhanced on every card
    loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0"
    assert all(browser.execute_script(loaded, image) for image in images)
    labels = browser.find_elements(By.CSS_SELECTOR, ".card .enhanced-label")
    assert len(labels) == len(cards) and all(label.is_displayed() and label.text == "ENHANCED" for label in labels)
    assert browser.find_elements(By.CSS_SELECTOR, ".card figure.original .enhanced-label") == []

    cards[0].click()  # every kept shot of the track, each enhanced one labelled
    dialog = browser.find_element(By.ID, "shots")
    assert dialog.is_displayed()
    shots = dialog.find_elements(By.CSS_SELECTOR, ".shot")
    clicked = next(
        json.loads(line) for line in tracks if json.loads(line)["track_id"] == int(cards[0].get_attribute("data-track"))
    )
    assert len(shots) == len(clicked["shots"]) >= 1
    assert all(browser.execute_script(loaded, image) for image in dialog.find_elements(By.TAG_NAME, "img"))
    assert len(dialog.find_elements(By.CSS_SELECTOR, ".enhanced-label")) == len(shots)
    browser.find_element(By.ID, "close").click()

    browser.find_element(By.ID, "from").send_keys("1000")  # a time no track reaches
    assert browser.find_element(By.ID, "shown").text == f"0 of {len(cards)} tracks shown"
    assert not any(card.is_displayed() for card in cards)


@pytest.mark.slow
def test_a_live_report_grows_while_the_camera_runs(tmp_path):
    """A camera looping the demo clip (people come and go): tracks reach tracks.jsonl and
    index.html while the run goes on, with wall-clock times."""
    import subprocess
    import sys
    import time

    from tests.conftest import REPO_ROOT
    from tests.helpers.media import read_frames
    from tests.helpers.rtsp_server import RtspTestServer, require_gstreamer

    require_gstreamer()
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    frames, _ = read_frames(REPO_ROOT / "samples" / "demo_cctv.mp4")
    for index, image in enumerate(frames):
        cv2.imwrite(str(frames_dir / f"{index:05d}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    config = tmp_path / "live.yaml"
    config.write_text("source:\n  open_timeout_s: 10\n  read_timeout_s: 5\nreport:\n  refresh_s: 1\n")
    report = tmp_path / "report"
    with RtspTestServer.start(width=640, height=360, fps=20, frames_dir=frames_dir) as camera:
        process = subprocess.Popen(
            [
                sys.executable,
                str(REPO_ROOT / "run_stream.py"),
                camera.url,
                "-o",
                f"{tmp_path}/out/",
                "--config",
                str(config),
                "--report",
                str(report),
                "--duration",
                "40",
                "-q",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        seen_during_run = 0
        while process.poll() is None:
            jsonl = report / "tracks.jsonl"
            if jsonl.exists() and (report / "index.html").exists():
                seen_during_run = len(jsonl.read_text().splitlines())
            time.sleep(0.5)
        _, stderr = process.communicate()
    assert process.returncode == 0, stderr
    assert seen_during_run >= 1  # tracks were on disk before the run ended
    tracks = [json.loads(line) for line in (report / "tracks.jsonl").read_text().splitlines()]
    assert all(track["first_wall_clock"] and track["last_wall_clock"] >= track["first_wall_clock"] for track in tracks)
    sidecar = json.loads((report / tracks[0]["shots"][0]["sidecar"]).read_text())
    assert sidecar["wall_clock"] > 1.6e9 and sidecar["source"]["live"] is True
    assert json.loads((report / "run.json").read_text())["status"] == "complete"
