"""
Tests for L{jspsych_tobii.recording.export} (C{jspsych-tobii-export}).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
from twisted.internet import defer
from twisted.trial import unittest

from jspsych_tobii.config import ServerConfig
from jspsych_tobii.recording import export
from jspsych_tobii.recording.format import (
    HEADER_SIZE,
    encode_header,
    events_path_for,
    make_header,
    write_recording,
)

from .support import run_console, serve
from .test_recording import T0_US, scratch, synthetic_samples, tracker_description
from .wsclient import connect

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ExportTestsMixin:
    def setUp(self):
        self.dir = os.path.abspath(scratch(self))
        os.makedirs(self.dir)
        self.gaze = os.path.join(self.dir, "20261124T081500.123Z-s1.gaze")
        self.samples = synthetic_samples(500)
        # one sample with both eyes lost, one with the left eye only
        for field in ("x", "y", "pupil"):
            self.samples[f"left_{field}"][10] = np.nan
            self.samples[f"right_{field}"][10] = np.nan
            self.samples[f"right_{field}"][11] = np.nan
        for field in ("gaze_valid", "origin_valid", "pupil_valid"):
            self.samples[f"left_{field}"][10] = False
            self.samples[f"right_{field}"][10] = False
            self.samples[f"right_{field}"][11] = False
        self.events = [
            {"t_server_ms": T0_US / 1000.0, "kind": "session_started", "session": 1},
            {"t_server_ms": T0_US / 1000.0 + 12.5, "kind": "marker", "label": 'a, "b"\tc'},
            {
                "t_server_ms": T0_US / 1000.0 + 20,
                "kind": "validation_result",
                "averageAccuracyNorm": 0.01,
                "success": True,
                "pointData": [{"point": {"x": 0.5, "y": 0.5}}],
            },
        ]
        self.write()

    def run_main(self, *args):
        return run_console(self, export.main, *args)

    def write(self):
        """The recording of self.samples and self.events at self.gaze."""
        write_recording(
            self.gaze,
            self.samples,
            started_us=T0_US,
            tracker=tracker_description(),
            events=self.events,
        )

    def read_table(self, path, delimiter=","):
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.reader(f, delimiter=delimiter))


class ExportTests(ExportTestsMixin, unittest.SynchronousTestCase):
    def test_csv(self):
        """One row per sample with every field, named with units, times in ms."""
        out = os.path.join(self.dir, "out.csv")
        code, stdout, stderr = self.run_main(self.gaze, "--format", "csv", "-o", out)
        self.assertEqual((code, stderr), (0, ""))
        self.assertIn("500 samples", stdout)
        rows = self.read_table(out)
        header, rows = rows[0], rows[1:]
        self.assertEqual(len(rows), 500)
        self.assertEqual(
            header[:7],
            [
                "sample",
                "time_ms",
                "unix_time",
                "elapsed_ms",
                "device_time_ms",
                "server_time_ms",
                "gaze_x",
            ],
        )
        for column in (
            "gaze_y",
            "left_gaze_x",
            "right_gaze_y",
            "left_gaze_point_z_mm",
            "right_origin_x_mm",
            "left_pupil_mm",
            "right_gaze_valid",
            "left_origin_valid",
            "right_pupil_valid",
        ):
            self.assertIn(column, header)
        # every record field has a column (plus unix time, elapsed and binocular gaze)
        self.assertEqual(len(header), len(self.samples.dtype.names) + 4)
        col = {name: i for i, name in enumerate(header)}
        first = rows[0]
        s = self.samples[0]
        self.assertEqual(first[col["sample"]], "0")
        self.assertEqual(first[col["time_ms"]], f"{s['system_time_us'] / 1000:.3f}")
        self.assertEqual(first[col["elapsed_ms"]], "0.000")
        self.assertEqual(first[col["device_time_ms"]], f"{s['device_time_us'] / 1000:.3f}")
        self.assertEqual(first[col["server_time_ms"]], f"{s['server_time_us'] / 1000:.3f}")
        self.assertAlmostEqual(float(first[col["left_gaze_x"]]), s["left_x"], places=6)
        self.assertAlmostEqual(
            float(first[col["right_origin_z_mm"]]), s["right_origin_z"], places=3
        )
        self.assertAlmostEqual(
            float(first[col["gaze_x"]]), (s["left_x"] + s["right_x"]) / 2, places=6
        )
        self.assertEqual(first[col["left_gaze_valid"]], "1")
        self.assertEqual(
            rows[1][col["elapsed_ms"]], f"{(self.samples['system_time_us'][1] - T0_US) / 1000:.3f}"
        )
        # both eyes lost: empty cells and zeros; one eye: the binocular gaze is that eye's
        lost = rows[10]
        self.assertEqual(lost[col["gaze_x"]], "")
        self.assertEqual(lost[col["left_pupil_mm"]], "")
        self.assertEqual(lost[col["right_gaze_valid"]], "0")
        one = rows[11]
        self.assertEqual(one[col["gaze_x"]], one[col["left_gaze_x"]])
        self.assertEqual(one[col["right_gaze_x"]], "")

    def test_events_file(self):
        """The events go to OUT.events.csv, one row each, every field a column."""
        out = os.path.join(self.dir, "out.csv")
        code, _, _ = self.run_main(self.gaze, "-o", out)
        self.assertEqual(code, 0)
        rows = self.read_table(os.path.join(self.dir, "out.events.csv"))
        fields = ["session", "label", "averageAccuracyNorm", "success", "pointData"]
        self.assertEqual(rows[0], ["time_ms", "unix_time", "elapsed_ms", "kind"] + fields)
        self.assertEqual(len(rows), 4)
        self.assertEqual(rows[2][0], f"{T0_US / 1000 + 12.5:.3f}")
        self.assertEqual(rows[2][2:4], ["12.500", "marker"])
        self.assertEqual(rows[2][5], 'a, "b"\tc')
        self.assertEqual(rows[3][7], "true")
        self.assertEqual(json.loads(rows[3][8]), [{"point": {"x": 0.5, "y": 0.5}}])

    def test_tsv(self):
        out = os.path.join(self.dir, "out.tsv")
        code, _, _ = self.run_main(self.gaze, "-o", out)  # the format follows the suffix
        self.assertEqual(code, 0)
        rows = self.read_table(out, "\t")
        self.assertEqual(rows[0][0:2], ["sample", "time_ms"])
        self.assertEqual(len(rows), 501)
        events = self.read_table(os.path.join(self.dir, "out.events.tsv"), "\t")
        self.assertEqual(events[2][5], 'a, "b"\tc')

    def test_csv_and_tsv_agree(self):
        csv_out = os.path.join(self.dir, "a.csv")
        tsv_out = os.path.join(self.dir, "b.txt")
        self.run_main(self.gaze, "-o", csv_out)
        self.run_main(self.gaze, "--format", "tsv", "-o", tsv_out)
        self.assertEqual(self.read_table(csv_out), self.read_table(tsv_out, "\t"))
        self.assertTrue(os.path.exists(os.path.join(self.dir, "b.events.tsv")))

    def test_default_output(self):
        """Without -o, the table goes beside the recording; the events file may be given."""
        code, _, _ = self.run_main(events_path_for(self.gaze), "--quiet")
        self.assertEqual(code, 0)
        stem = self.gaze[: -len(".gaze")]
        self.assertEqual(len(self.read_table(stem + ".csv")), 501)
        self.assertTrue(os.path.exists(stem + ".events.csv"))

    def test_chunks(self):
        """Written a chunk at a time, with the same result."""
        whole = os.path.join(self.dir, "whole.csv")
        pieces = os.path.join(self.dir, "pieces.csv")
        self.run_main(self.gaze, "-o", whole)
        self.patch(export, "CHUNK", 7)
        self.run_main(self.gaze, "-o", pieces)
        with open(whole) as a, open(pieces) as b:
            self.assertEqual(a.read(), b.read())

    def test_progress(self):
        """--progress shows a percentage on stderr; by default (no terminal) nothing."""
        out = os.path.join(self.dir, "out.csv")
        self.patch(export, "CHUNK", 100)
        code, _, stderr = self.run_main(self.gaze, "-o", out, "--progress")
        self.assertEqual(code, 0)
        self.assertIn("100.0%", stderr)
        self.assertIn("500/500 samples", stderr)
        code, _, stderr = self.run_main(self.gaze, "-o", out)
        self.assertEqual(stderr, "")

    def test_progress_redrawn_at_most_ten_times_a_second(self):
        """The bar is redrawn on its clock's time, at most every 100 ms (and when forced)."""
        import io

        now = [0]
        stream = io.StringIO()
        progress = export.Progress(stream, 100, True, clock_us=lambda: now[0])
        progress.update(10)
        drawn = stream.getvalue().count("\r")
        now[0] += 99_999
        progress.update(20)
        self.assertEqual(stream.getvalue().count("\r"), drawn)
        now[0] += 1
        progress.update(30)
        self.assertEqual(stream.getvalue().count("\r"), drawn + 1)
        self.assertIn("30.0%", stream.getvalue())
        progress.update(40, force=True)
        self.assertEqual(stream.getvalue().count("\r"), drawn + 2)

    def test_crashed_recording(self):
        """A recording cut off by a crash exports its whole samples, with warnings."""
        header = make_header(session=1, started_unix=0, started_us=T0_US)  # complete: false
        with open(self.gaze, "r+b") as f:
            f.write(encode_header(header))
            f.seek(0, os.SEEK_END)
            f.write(b"\x01" * 50)
        with open(events_path_for(self.gaze), "ab") as f:
            f.write(b'{"t_server_ms": 1, "ki')
        out = os.path.join(self.dir, "out.csv")
        code, _, stderr = self.run_main(self.gaze, "-o", out)
        self.assertEqual(code, 0)
        self.assertIn("warning", stderr)
        self.assertIn("partial sample (50 bytes)", stderr)
        self.assertIn("not closed cleanly", stderr)
        self.assertNotIn("Traceback", stderr)
        self.assertEqual(len(self.read_table(out)), 501)
        self.assertEqual(len(self.read_table(os.path.join(self.dir, "out.events.csv"))), 4)

    def test_missing_events_file(self):
        os.remove(events_path_for(self.gaze))
        out = os.path.join(self.dir, "out.csv")
        code, _, stderr = self.run_main(self.gaze, "-o", out)
        self.assertEqual(code, 0)
        self.assertIn("missing", stderr)
        self.assertEqual(len(self.read_table(os.path.join(self.dir, "out.events.csv"))), 1)

    def assertCleanError(self, args, *words, code=1):
        got, stdout, stderr = self.run_main(*args)
        self.assertEqual(got, code, stderr)
        self.assertNotIn("Traceback", stderr)
        lines = stderr.strip().splitlines()
        if code == 1:
            self.assertEqual(len(lines), 1, stderr)
            self.assertTrue(lines[0].startswith("jspsych-tobii-export: error: "), stderr)
        for word in words:
            self.assertIn(word, stderr)
        self.assertEqual([n for n in os.listdir(self.dir) if ".csv" in n or ".part" in n], [])

    def test_bad_input(self):
        """Bad or truncated input: one line on stderr, exit status 1, no output left behind."""
        out = os.path.join(self.dir, "out.csv")
        self.assertCleanError((os.path.join(self.dir, "none.gaze"), "-o", out), "no such file")
        with open(self.gaze, "r+b") as f:
            f.truncate(HEADER_SIZE - 100)
        self.assertCleanError((self.gaze, "-o", out), "truncated header")
        with open(self.gaze, "wb") as f:
            f.write(os.urandom(10000).replace(b"{", b"("))
        self.assertCleanError((self.gaze, "-o", out), "not a jspsych-tobii gaze recording")
        self.assertCleanError((self.dir, "-o", out))

    def test_damaged_events(self):
        with open(events_path_for(self.gaze), "r+b") as f:
            f.seek(5)
            f.write(b"\x00\x00garbage")
        out = os.path.join(self.dir, "out.csv")
        self.assertCleanError((self.gaze, "-o", out), "line 1 is not valid JSON")

    def test_unwritable_output(self):
        out = os.path.join(self.dir, "no", "such", "dir", "out.csv")
        self.assertCleanError((self.gaze, "-o", out), "cannot write")

    def test_refuses_to_overwrite_recording(self):
        # the command refuses the name for its suffix already; export() itself checks too
        self.assertCleanError((self.gaze, "-o", events_path_for(self.gaze)), ".jsonl", code=2)
        with self.assertRaises(export.ExportError) as caught:
            export.export(self.gaze, events_path_for(self.gaze), "csv")
        self.assertIn("overwrite", str(caught.exception))
        self.assertEqual(export.read_events(events_path_for(self.gaze)), self.events)

    def test_output_suffix_must_match_format(self):
        """-o out.xlsx is refused, not filled with CSV; so is a .csv name for TSV."""
        recording = sorted(os.listdir(self.dir))
        for args in (
            ("-o", "out.xlsx"),
            ("--format", "tsv", "-o", "out.csv"),
            ("--format", "csv", "-o", "out.tsv"),
        ):
            out = os.path.join(self.dir, args[-1])
            code, stdout, stderr = self.run_main(self.gaze, *args[:-1], out)
            self.assertEqual(code, 2, args)
            self.assertEqual(len(stderr.splitlines()), 1, stderr)
            self.assertIn(f"-o {out}", stderr)
            self.assertIn("--format", stderr)
            self.assertEqual(sorted(os.listdir(self.dir)), recording, "nothing written")
        for args in (("--format", "tsv", "-o", "out.TXT"), ("-o", "bare")):
            out = os.path.join(self.dir, args[-1])
            code, _, stderr = self.run_main(self.gaze, "--quiet", *args[:-1], out)
            self.assertEqual((code, stderr), (0, ""), args)
            self.assertEqual(len(self.read_table(out, "\t" if "tsv" in args else ",")), 501)

    def test_bad_options(self):
        got, _, stderr = self.run_main(self.gaze, "--format", "xlsx")
        self.assertEqual(got, 2)
        self.assertIn("invalid choice", stderr)
        self.assertNotIn("Traceback", stderr)


class ExportCommandTests(ExportTestsMixin, unittest.TestCase):
    """The command as a process: clean errors, no traceback."""

    def run_command(self, *args):
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        return subprocess.run(
            [sys.executable, "-m", "jspsych_tobii.recording.export", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=self.dir,
        )

    def test_process(self):
        out = os.path.join(self.dir, "out.tsv")
        done = self.run_command(self.gaze, "--format", "tsv", "-o", out)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(len(self.read_table(out, "\t")), 501)
        with open(self.gaze, "r+b") as f:
            f.truncate(100)
        done = self.run_command(self.gaze, "-o", out)
        self.assertEqual(done.returncode, 1)
        self.assertNotIn("Traceback", done.stderr)
        self.assertIn("truncated header", done.stderr)


HYPERLINK = '=HYPERLINK("http://x","y")'


class FormulaTests(ExportTestsMixin, unittest.SynchronousTestCase):
    """Text a spreadsheet would run as a formula is exported as text."""

    def test_neutralise(self):
        for text in (HYPERLINK, "+1+2", "-2+3+cmd|' /C calc'!A0", "@SUM(A1)", "\tx", "\rx", "＝1"):
            self.assertEqual(export.neutralise(text), "'" + text)
        for text in ("stimulus_on", "", " =1", "'=1", "1-2", "{}"):
            self.assertEqual(export.neutralise(text), text)

    def test_event_cells(self):
        self.events.append(
            {
                "t_server_ms": T0_US / 1000.0 + 30,
                "kind": "marker",
                "label": "-trial",
                "clientTime": -250.5,
                "=key": "@x",
                "count": -3,
                "data": {"a": "=1+1"},
            }
        )
        self.write()
        out = os.path.join(self.dir, "out.csv")
        self.assertEqual(self.run_main(self.gaze, "-o", out)[0], 0)
        rows = self.read_table(os.path.join(self.dir, "out.events.csv"))
        col = {name: i for i, name in enumerate(rows[0])}
        row = rows[-1]
        self.assertEqual(row[col["label"]], "'-trial")
        self.assertEqual(row[col["clientTime"]], "-250.5", "a negative number stays a number")
        self.assertEqual(row[col["count"]], "-3")
        self.assertEqual(row[col["'=key"]], "'@x")
        self.assertEqual(json.loads(row[col["data"]]), {"a": "=1+1"}, "JSON starts with {")
        self.assertEqual(rows[2][col["label"]], 'a, "b"\tc')
        samples = self.read_table(out)
        self.assertTrue(any(cell.startswith("-") for row in samples[1:] for cell in row))


class RecordedFormulaTests(unittest.TestCase):
    """A marker labelled =HYPERLINK(...) goes through the server, the recording and the export."""

    timeout = 60

    @defer.inlineCallbacks
    def test_marker_label_recorded_and_exported_as_text(self):
        folder = os.path.abspath(scratch(self))
        config = ServerConfig(port="tcp:0:interface=127.0.0.1", mock=True, record_dir=folder)
        service, port = serve(self, config)
        client = yield connect(port)
        self.addCleanup(client.dropConnection, abort=True)
        yield client.request("time_sync", clientTime=1000.0)
        yield client.request("start_tracking")
        reply = yield client.request(
            "marker", label=HYPERLINK, timestamp=-250.5, data={"cell": "+1+1"}
        )
        self.assertIs(reply["success"], True)
        yield client.request("stop_tracking")
        yield service.getServiceNamed("recorder").stopService()
        (gaze,) = [os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".gaze")]
        for fmt, sep in (("csv", ","), ("tsv", "\t")):
            out = os.path.join(folder, f"session.{fmt}")
            samples, events, events_out = export.export(gaze, out, fmt)
            with open(events_out, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f, delimiter=sep))
            col = {name: i for i, name in enumerate(rows[0])}
            (marker,) = [r for r in rows if r[col["kind"]] == "marker"]
            self.assertEqual(marker[col["label"]], "'" + HYPERLINK)
            self.assertEqual(marker[col["clientTime"]], "-250.5")
            self.assertEqual(json.loads(marker[col["data"]]), {"cell": "+1+1"})
            with open(events_out, encoding="utf-8") as f:
                self.assertIn("'=HYPERLINK(", f.read())
