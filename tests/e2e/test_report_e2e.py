"""End to end: a drifting stream through a real worker, ``streamdrift report`` on what it left in
Redis and Kafka, and the page rendered by headless Chromium as a person would see it.

Needs Debian's ``chromium`` (``make system-deps`` installs it): the test fails, never skips,
without it.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import redis
from conftest import REPO_ROOT, Topics, consume_all, produce, wait_for

from streamdrift.streams.ops.status import read_status

pytestmark = pytest.mark.e2e

FEATURES = ("amount", "age", "score")
CHANNELS = ("web", "app", "store")


def drifting_events(n: int, shift_at: int, seed: int = 5) -> list[bytes]:
    """``n`` events of three N(0, 1) features and a categorical one; ``amount`` moves +1.5σ
    from ``shift_at`` on."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, len(FEATURES)))
    values[shift_at:, 0] += 1.5
    channels = rng.choice(CHANNELS, p=[0.6, 0.3, 0.1], size=n)
    return [
        json.dumps(
            {
                "model": "fraud",
                "model_version": "3",
                "event_id": f"e-{i}",
                "features": {
                    **dict(zip(FEATURES, row.tolist(), strict=True)),
                    "channel": str(channel),
                },
            }
        ).encode()
        for i, (row, channel) in enumerate(zip(values, channels, strict=True))
    ]


def checkpointed(client: redis.Redis, topics: Topics) -> int:
    return (
        read_status(client, topics.group_id)["models"]
        .get("fraud", {})
        .get("amount", {})
        .get("count", 0)
    )


def png_pixels(path: Path) -> np.ndarray:
    """The pixels (height x width x channels) of an 8-bit, non-interlaced RGB or RGBA PNG —
    what Chromium writes — decoded with zlib and numpy (no imaging library needed)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        chunks.append(
            (data[position + 4 : position + 8], data[position + 8 : position + 8 + length])
        )
        position += 12 + length
    header = next(body for kind, body in chunks if kind == b"IHDR")
    compressed = b"".join(body for kind, body in chunks if kind == b"IDAT")
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    bpp = 3 if color == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(compressed)
    rows = np.zeros((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        start = y * (stride + 1)
        line = np.frombuffer(raw, np.uint8, stride, start + 1)
        rows[y] = previous = _unfilter(raw[start], line, previous, bpp)
    return rows.reshape(height, width, bpp)


def _unfilter(kind: int, line: np.ndarray, previous: np.ndarray, bpp: int) -> np.ndarray:
    """Undo one PNG row filter (None, Sub, Up vectorised; Average, Paeth byte by byte)."""
    if kind == 0:
        return line.copy()
    if kind == 1:  # each byte adds the one bpp before it: a running sum per channel
        return (
            (np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.int64) % 256)
            .astype(np.uint8)
            .ravel()
        )
    if kind == 2:
        return line + previous
    out, up = bytearray(len(line)), previous.tolist()
    for i, value in enumerate(line.tolist()):
        left = out[i - bpp] if i >= bpp else 0
        corner = up[i - bpp] if i >= bpp else 0
        if kind == 3:
            predicted = (left + up[i]) // 2
        else:
            estimate = left + up[i] - corner
            distances = (abs(estimate - left), abs(estimate - up[i]), abs(estimate - corner))
            predicted = (left, up[i], corner)[distances.index(min(distances))]
        out[i] = (value + predicted) & 0xFF
    return np.frombuffer(bytes(out), dtype=np.uint8)


def chromium(*args: str) -> subprocess.CompletedProcess:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "headless Chromium is required: `make system-deps` (Debian package chromium)"
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_report_of_a_drifting_stream_renders_with_its_plots(
    broker, topics, start_worker, redis_client, redis_server, tmp_path
):
    start_worker(history_interval_s=0, checkpoint_every_events=1_000).wait_ready()
    stream = drifting_events(12_000, shift_at=6_000)
    for chunk in range(0, len(stream), 3_000):  # a few seconds apart: the history spans time
        produce(broker.bootstrap, topics.input, stream[chunk : chunk + 3_000], key="fraud")
        time.sleep(1.5)
    wait_for(
        lambda: checkpointed(redis_client, topics) == 12_000, 120, "12,000 events checkpointed"
    )
    found = [
        json.loads(m.value)
        for m in consume_all(broker.bootstrap, topics.alerts, expect_at_least=1, timeout=60)
    ]
    assert "fraud/amount" in {a["subject"] for a in found}, found

    out = tmp_path / "report.html"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STREAMDRIFT_")},
        **topics.env(),
        "STREAMDRIFT_KAFKA_BOOTSTRAP": broker.bootstrap,
        "STREAMDRIFT_REDIS_URL": redis_server.url,
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamdrift.streams",
            "report",
            "--model",
            "fraud",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    # per feature a distribution and a drift score; the multivariate monitor's score; the
    # incident's timeline, one mark per feature listed
    incident = html[html.index("<h2>Incidents</h2>") : html.index("<h2>Features</h2>")]
    marks = incident.count("<svg")
    assert marks >= 1 and "amount" in incident
    plots = 2 * 4 + 1 + marks
    assert html.count("<svg") == plots
    assert "fraud/amount" not in html and "io.streamdrift" not in html  # alerts shown, not dumped
    assert '<h2 id="feature-0">amount</h2>' in html, "the drifted feature comes first"
    amount = html[html.index('id="feature-0"') : html.index('id="feature-1"')]
    # table and marker
    assert "<td>detected</td><td>3</td>" in amount and 'stroke-dasharray="4 2"' in amount

    screenshot = tmp_path / "report.png"
    shot = chromium(f"--screenshot={screenshot}", "--window-size=1200,2000", out.as_uri())
    console = [line for line in shot.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert shot.returncode == 0 and not console, shot.stderr[-2000:]
    dom = chromium("--dump-dom", out.as_uri())
    assert dom.returncode == 0 and dom.stdout.count("<svg") == plots and "<polyline" in dom.stdout

    pixels = png_pixels(screenshot)[..., :3].astype(np.int16)
    assert pixels.shape[:2] == (2000, 1200)
    ink = (pixels.min(axis=2) < 200).mean()
    red = (
        (pixels[..., 0] > 170) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
    ).sum()  # latest window, alert markers
    blue = ((pixels[..., 2] > 150) & (pixels[..., 0] < 80)).sum()  # the reference curves
    assert ink > 0.01 and red > 200 and blue > 200, (ink, red, blue)
