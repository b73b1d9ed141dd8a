"""
Recording benchmark: what it costs to record every sample of a long session.

    python bench/bench_recording.py [--hours 2] [--rate 1200] [--batch 3] [--dir DIR] [--keep]

Three measurements, in one run:

1. Cost ratio.  The same 60 s of 1200 Hz batches (3 samples each, as the
   mock delivers them every 2 ms) go through the server's stream path
   (stamping seq and arrival time, the in-memory buffer, one JSON frame per
   sample, Autobahn's prepareMessage per frame; sending to sockets is left
   out, which makes the stream look cheaper and the ratio higher), first
   alone, then with the recorder added.  The extra CPU (reactor thread and
   writer thread, from their thread CPU clocks) over the stream's is the
   ratio printed.  Alternated 3 times; medians.
2. The long run: --hours of samples at --rate (2 h at 1200 Hz = 8.64 M
   samples) fed as fast as possible through stamping, the buffer and the
   recorder (the JSON encoding is left out here: it does not touch the
   recorder, and measurement 1 has its cost).  Resident memory is sampled
   along the way: it must stay flat.  The producer never waits for the
   writer unless the writer falls more than 10 000 batches (25 s of
   real-time data) behind (then it
   says how often it did).
3. The result on disk: bytes per sample, and reading back: a 10 s range from
   the start of the file through SessionRecorder.query, and the time to turn
   1000 samples into reply dicts (how big a get_data slice can be under 5 ms).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from autobahn.twisted.websocket import WebSocketServerFactory  # noqa: E402

from jspsych_tobii.core.buffer import GazeBuffer  # noqa: E402
from jspsych_tobii.core.gaze import (  # noqa: E402
    VECTOR_THRESHOLD,
    encode_frames,
    record_frames,
    sample_dicts,
)
from jspsych_tobii.core.timesync import monotonic_us  # noqa: E402
from jspsych_tobii.interfaces import GAZE_DTYPE  # noqa: E402
from jspsych_tobii.recording.format import read_gaze, read_header  # noqa: E402
from jspsych_tobii.recording.writer import SessionRecorder  # noqa: E402
from jspsych_tobii.trackers.eyemodel import EyeModel  # noqa: E402
from jspsych_tobii.trackers.mock import DEVICE_CLOCK_OFFSET_US, MockTracker  # noqa: E402

MAX_BACKLOG = 10_000


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def thread_cpu(thread: threading.Thread | None) -> float:
    if thread is None or thread.ident is None:
        return 0.0
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (OSError, ProcessLookupError):
        return 0.0


class Block:
    """One minute of synthetic samples, copied and shifted in time for each use."""

    def __init__(self, rate: float, seconds: float = 60.0):
        n = int(rate * seconds)
        self.period = 1e6 / rate
        times = np.round(np.arange(n) * self.period).astype(np.int64)
        self.samples = EyeModel(seed=1).samples(times, DEVICE_CLOCK_OFFSET_US)
        self.span_us = int(round(n * self.period))

    def copy_at(self, k: int) -> np.ndarray:
        """The block as the k-th minute: fresh memory, never touched after hand-over."""
        block = self.samples.copy()
        block["system_time_us"] += k * self.span_us
        block["device_time_us"] += k * self.span_us
        return block


class Hub:
    """The hub's hot path without sockets: stamp, buffer, observers, encode, frame."""

    def __init__(self, encode: bool):
        self.buffer = GazeBuffer(10_000)
        self.observers = []
        self.seq = 0
        self.encode = encode
        self.prepare = WebSocketServerFactory().prepareMessage

    def on_gaze(self, batch: np.ndarray) -> None:
        n = len(batch)
        batch["seq"] = np.arange(self.seq, self.seq + n)
        self.seq += n
        batch["server_time_us"] = monotonic_us()
        self.buffer.extend(batch)
        for observer in self.observers:
            observer(batch)
        if self.encode:
            prepare = self.prepare
            # as the hub does: per record for a few, numpy for many
            if n < VECTOR_THRESHOLD:
                frames = record_frames(batch.tobytes())
            else:
                frames = encode_frames(batch)
            for frame in frames:
                prepare(frame)


def feed(hub: Hub, block: np.ndarray, size: int, recorder=None) -> None:
    for i in range(0, len(block), size):
        hub.on_gaze(block[i : i + size])
        if recorder is not None and recorder.backlog > MAX_BACKLOG:
            while recorder.backlog > MAX_BACKLOG // 2:
                time.sleep(0.001)


def cost_ratio(block: Block, size: int, directory: str, rounds: int = 3):
    """
    Measurement 1: CPU per sample of the stream alone; of the stream with the
    recorder as an observer (reactor thread, and the writer thread); and of
    write_batch alone on the reactor thread.
    """
    stream, with_recorder, reactor_side, writer_side = [], [], [], []
    n = len(block.samples)
    for r in range(rounds):
        hub = Hub(encode=True)
        data = block.copy_at(3 * r)
        t0 = time.thread_time()
        feed(hub, data, size)
        stream.append((time.thread_time() - t0) / n)

        recorder = SessionRecorder(directory, fsync_interval=5.0)
        files = recorder.session_started(100 + r, int(data["system_time_us"][0]))
        recorder.sync()
        thread = recorder._thread
        hub = Hub(encode=True)
        hub.observers.append(recorder.write_batch)
        data = block.copy_at(3 * r + 1)
        w0 = thread_cpu(thread)
        t0 = time.thread_time()
        feed(hub, data, size, recorder)
        with_recorder.append((time.thread_time() - t0) / n)
        recorder.sync()
        writer_side.append((thread_cpu(thread) - w0) / n)

        # write_batch alone, on batches already stamped (as the hub hands them over)
        data = block.copy_at(3 * r + 2)
        batches = [data[i : i + size] for i in range(0, n, size)]
        write = recorder.write_batch
        t0 = time.thread_time()
        for batch in batches:
            write(batch)
        reactor_side.append((time.thread_time() - t0) / n)
        recorder.session_ended()
        recorder.close()
        assert files.written == 2 * n
        os.remove(files.gaze_path)
        os.remove(files.events_path)
    median = statistics.median
    return median(stream), median(with_recorder), median(reactor_side), median(writer_side)


def paced(hub: Hub, data: np.ndarray, size: int, rate: float) -> None:
    """Hand batches over at their real-time pace, as a tracker does."""
    start = time.monotonic()
    period = size / rate
    for j, i in enumerate(range(0, len(data), size)):
        delay = start + j * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        hub.on_gaze(data[i : i + size])


def cost_at_real_time(
    block: Block, size: int, rate: float, seconds: float, directory: str, rounds: int = 2
):
    """
    Measurement 1: the stream alone, then with the recorder, each for
    C{seconds} at the real rate, alternated C{rounds} times.  CPU per sample
    of the reactor thread in each case, and of the writer thread; medians.
    """
    n = min(len(block.samples), int(seconds * rate))
    alone, recorded, writer = [], [], []
    for r in range(rounds):
        hub = Hub(encode=True)
        data = block.copy_at(2 * r)[:n]
        t0 = time.thread_time()
        paced(hub, data, size, rate)
        alone.append((time.thread_time() - t0) / n)

        recorder = SessionRecorder(directory)
        files = recorder.session_started(90 + r, int(data["system_time_us"][0]))
        recorder.sync()
        thread = recorder._thread
        hub = Hub(encode=True)
        hub.observers.append(recorder.write_batch)
        data = block.copy_at(2 * r + 1)[:n]
        w0 = thread_cpu(thread)
        t0 = time.thread_time()
        paced(hub, data, size, rate)
        recorded.append((time.thread_time() - t0) / n)
        recorder.sync()
        writer.append((thread_cpu(thread) - w0) / n)
        recorder.session_ended()
        recorder.close()
        assert files.written == n
        os.remove(files.gaze_path)
        os.remove(files.events_path)
    median = statistics.median
    return median(alone), median(recorded), median(writer)


def long_run(block: Block, hours: float, rate: float, size: int, directory: str):
    """Measurement 2: the whole session through the recorder, memory sampled along."""
    total = int(round(hours * 3600 * rate))
    per_block = len(block.samples)
    blocks = -(-total // per_block)
    hub = Hub(encode=False)
    recorder = SessionRecorder(directory)
    tracker = MockTracker(None, monotonic_us, rate=rate)
    info = tracker.connect().result.to_dict()
    files = recorder.session_started(1, 0, info)
    hub.observers.append(recorder.write_batch)
    recorder.write_event("marker", label="start")
    checkpoints = {int(blocks * f) for f in (0.1, 0.25, 0.5, 0.75, 1.0)}
    memory = [("start", rss_mb())]
    waits = [0]
    max_backlog = 0

    def wait_for_writer():
        waits[0] += 1
        while recorder.backlog > MAX_BACKLOG // 2:
            time.sleep(0.001)

    wall0, cpu0 = time.monotonic(), time.process_time()
    main0 = time.thread_time()
    fed = 0
    progress_at = time.monotonic()
    for k in range(blocks):
        data = block.copy_at(k)
        if fed + per_block > total:
            data = data[: total - fed]
        for i in range(0, len(data), size):
            hub.on_gaze(data[i : i + size])
            backlog = recorder.backlog
            if backlog > MAX_BACKLOG:
                wait_for_writer()
            elif backlog > max_backlog:
                max_backlog = backlog
        fed += len(data)
        if k % 60 == 59:
            recorder.write_event("marker", label=f"minute {k + 1}")
        if k + 1 in checkpoints:
            memory.append((f"{100 * (k + 1) // blocks}%", rss_mb()))
        if time.monotonic() - progress_at > 5:
            progress_at = time.monotonic()
            print(
                f"  ... {fed / total:5.1%} ({fed:,} samples), RSS {rss_mb():.0f} MB",
                file=sys.stderr,
            )
    main_cpu = time.thread_time() - main0
    fed_wall = time.monotonic() - wall0
    thread = recorder._thread
    recorder.sync(timeout=None)
    writer_cpu = thread_cpu(thread)
    close0 = time.monotonic()
    recorder.session_ended()
    recorder.close()
    close_s = time.monotonic() - close0
    wall = time.monotonic() - wall0
    cpu = time.process_time() - cpu0
    memory.append(("closed", rss_mb()))
    return {
        "samples": fed,
        "files": files,
        "wall": wall,
        "fed_wall": fed_wall,
        "cpu": cpu,
        "main_cpu": main_cpu,
        "writer_cpu": writer_cpu,
        "close_s": close_s,
        "memory": memory,
        "waits": waits[0],
        "max_backlog": max_backlog,
    }


def read_back(files, rate: float):
    """Measurement 3: a 10 s range from the start, and reply dicts for 1000 samples."""
    recorder = SessionRecorder(os.path.dirname(files.gaze_path))
    recorder.last = files  # query the recorded session as if it were the last one
    start = 60_000_000  # one minute in
    t0 = time.perf_counter()
    got = recorder.query(start, start + 10_000_000 - 1)
    query_ms = (time.perf_counter() - t0) * 1000
    chunk = got[:1000]
    t0 = time.perf_counter()
    sample_dicts(chunk)
    dicts_ms = (time.perf_counter() - t0) * 1000
    recorder.close()
    return len(got), query_ms, dicts_ms


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=2.0, help="session length (default 2)")
    parser.add_argument("--rate", type=float, default=1200.0, help="samples per second")
    parser.add_argument("--batch", type=int, default=3, help="samples per batch (default 3)")
    parser.add_argument(
        "--paced-seconds", type=float, default=10.0, help="length of each real-time run"
    )
    parser.add_argument(
        "--dir", help="where to make the benchmark's own directory (default: the system's temp)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the recording")
    args = parser.parse_args(argv)

    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    directory = tempfile.mkdtemp(prefix="bench-recording-", dir=args.dir)
    print(f"recording benchmark: {args.hours:g} h at {args.rate:g} Hz, batches of {args.batch}")
    print(f"writing to {directory} ({os.cpu_count()} CPUs)")
    try:
        block = Block(args.rate)
        alone, recorded, writer = cost_at_real_time(
            block, args.batch, args.rate, args.paced_seconds, directory
        )
        extra = recorded - alone
        print()
        print(f"1. CPU per sample at real-time pace ({args.paced_seconds:g} s each, median of 2)")
        rows = [
            ("reactor thread, stream alone", alone),
            ("reactor thread, stream + recorder", recorded),
            ("writer thread", writer),
        ]
        for label, value in rows:
            print(f"   {label:<56} {value * 1e6:7.2f} us")
        label = f"recording / stream = ({extra * 1e6:.2f} + {writer * 1e6:.2f}) / {alone * 1e6:.2f}"
        print(f"   {label:<56} {(extra + writer) / alone:7.1%}")
        stream, with_recorder, reactor_side, writer_side = cost_ratio(block, args.batch, directory)
        recording = reactor_side + writer_side
        print()
        print("2. CPU per sample as fast as possible (60 s of data, median of 3 rounds)")
        rows = [
            ("stream path (stamp, buffer, JSON frame, prepareMessage)", stream),
            ("recording, reactor thread (write_batch alone)", reactor_side),
            ("recording, writer thread", writer_side),
        ]
        for label, value in rows:
            print(f"   {label:<56} {value * 1e6:7.2f} us")
        print(f"   {'recording (both threads) / stream':<56} {recording / stream:7.1%}")
        print(
            f"   {'reactor thread, stream with the recorder / without':<56} "
            f"{with_recorder / stream:7.1%}"
        )
        print(
            f"   at {args.rate:g} Hz recording takes {recording * args.rate * 100:.3f} % of one "
            f"core (the stream {stream * args.rate * 100:.2f} %)"
        )

        result = long_run(block, args.hours, args.rate, args.batch, directory)
        n = result["samples"]
        files = result["files"]
        size = os.path.getsize(files.gaze_path)
        events_size = os.path.getsize(files.events_path)
        realtime = n / args.rate
        print()
        print(f"3. long run: {n:,} samples = {realtime / 3600:g} h at {args.rate:g} Hz")
        print(
            f"   wall {result['wall']:.1f} s ({realtime / result['wall']:.0f}x real time), "
            f"process CPU {result['cpu']:.1f} s"
        )
        print(
            f"   CPU per sample: feeding thread {result['main_cpu'] / n * 1e6:.2f} us "
            f"(stamp + buffer + write_batch), writer thread "
            f"{result['writer_cpu'] / n * 1e6:.2f} us"
        )
        print(
            f"   writer backlog: max {result['max_backlog']:,} batches; producer waited "
            f"{result['waits']} times; close (flush + fsync) {result['close_s'] * 1000:.0f} ms"
        )
        print("   resident memory (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in result["memory"]))
        values = [v for k, v in result["memory"][1:-1]]
        print(f"   growth from 10% to 100% of the run: {values[-1] - values[0]:+.1f} MB")

        header = read_header(files.gaze_path)
        data = read_gaze(files.gaze_path)
        assert len(data) == n and header["complete"] and header["samples"] == n
        assert data.dtype == GAZE_DTYPE
        assert int(data["seq"][-1]) == n - 1
        print()
        print("4. on disk and reading back")
        print(
            f"   {files.gaze_path}: {size / 1e9:.3f} GB = {size / n:.2f} bytes per sample "
            f"({GAZE_DTYPE.itemsize} per record + a {size - n * GAZE_DTYPE.itemsize} byte header)"
        )
        print(f"   events file: {events_size:,} bytes")
        count, query_ms, dicts_ms = read_back(files, args.rate)
        print(f"   query of 10 s ({count:,} samples) one minute in: {query_ms:.1f} ms")
        print(
            f"   1000 samples to reply dicts: {dicts_ms:.1f} ms "
            f"(so ~{int(1000 * 4.0 / max(dicts_ms, 1e-3)):,} samples per 4 ms slice)"
        )
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
