"""
Tests for the absolute-time column (L{jspsych_tobii.recording.columns}) and
the Parquet export (L{jspsych_tobii.recording.parquet}), and that the CSV,
Parquet and BIDS exports of one recording hold the same samples.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import sys
from unittest import mock

import numpy as np
from twisted.trial import unittest

from jspsych_tobii.recording import export
from jspsych_tobii.recording.format import read_header, write_recording

from .support import run_console
from .test_recording import T0_UNIX, T0_US, scratch, synthetic_samples, tracker_description


def session_events():
    """A marker, a calibration and a validation, as the server records them."""
    t0 = T0_US / 1000.0

    def result(accuracy):
        eye = {"averageAccuracyDeg": accuracy}
        points = [
            {"point": {"x": x, "y": y}, "left": {"accuracyDeg": a}, "right": {"accuracyDeg": a}}
            for (x, y), a in zip(
                [(0.1, 0.1), (0.9, 0.1), (0.5, 0.5), (0.1, 0.9), (0.9, 0.9)],
                [accuracy * 0.5, accuracy, accuracy * 1.5, accuracy, accuracy],
            )
        ]
        return {"success": True, "left": eye, "right": dict(eye), "pointData": points}

    return [
        {"t_server_ms": t0, "kind": "session_started", "session": 1},
        {"t_server_ms": t0 + 100.25, "kind": "calibration_result", "result": result(0.8)},
        {"t_server_ms": t0 + 300.5, "kind": "validation_result", "result": result(0.4)},
        {"t_server_ms": t0 + 512.125, "kind": "marker", "label": "stimulus\ton", "data": {"n": 1}},
    ]


class RecordingCase(unittest.SynchronousTestCase):
    """A recorded session of 3000 samples at 600 Hz, some of them with lost eyes."""

    count = 3000

    def setUp(self):
        self.dir = os.path.abspath(scratch(self))
        os.makedirs(self.dir)
        self.gaze = os.path.join(self.dir, "20261124T081500.123Z-s1.gaze")
        self.samples = synthetic_samples(self.count)
        for i, eye in ((10, "left"), (10, "right"), (11, "right"), (700, "left")):
            for field in ("x", "y", "pupil"):
                self.samples[f"{eye}_{field}"][i] = np.nan
            for field in ("gaze_valid", "origin_valid", "pupil_valid"):
                self.samples[f"{eye}_{field}"][i] = False
        self.events = session_events()
        write_recording(
            self.gaze,
            self.samples,
            started_unix=T0_UNIX,
            started_us=T0_US - 2500,  # the session opened 2.5 ms before its first sample
            tracker=tracker_description(),
            events=self.events,
            server_version="9.9",
        )

    def run_main(self, *args):
        return run_console(self, export.main, *args)

    def expected_unix_us(self):
        """Unix time of each sample by the documented rule, in integer µs."""
        start_unix_us = int(round(T0_UNIX * 1e6))
        return start_unix_us + (self.samples["system_time_us"] - (T0_US - 2500))

    def read_csv(self, path):
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        return rows[0], rows[1:]


class UnixTimeTests(RecordingCase):
    def test_csv_unix_time(self):
        """Every CSV row has the sample's Unix time: the start's plus the monotonic time since."""
        out = os.path.join(self.dir, "s.csv")
        code, _, err = self.run_main(self.gaze, "-o", out)
        self.assertEqual((code, err), (0, ""))
        header, rows = self.read_csv(out)
        self.assertEqual(header[1:4], ["time_ms", "unix_time", "elapsed_ms"])
        expected = [f"{v // 1_000_000}.{v % 1_000_000:06d}" for v in self.expected_unix_us()]
        self.assertEqual([row[2] for row in rows], expected)
        self.assertEqual(rows[0][2], "1795508100.125500")  # 08:15:00.123 + 2.5 ms
        self.assertEqual(rows[0][3], "2.500")
        events_header, events = self.read_csv(os.path.join(self.dir, "s.events.csv"))
        self.assertEqual(events_header[:4], ["time_ms", "unix_time", "elapsed_ms", "kind"])
        marker = events[3]
        self.assertEqual(marker[3], "marker")
        self.assertEqual(marker[1], f"{T0_UNIX + (512.125 + 2.5) / 1000:.6f}")

    def test_no_wall_clock_start(self):
        """A header without a wall-clock start leaves the column empty, with a warning."""
        header = read_header(self.gaze)
        del header["started_unix"]
        from jspsych_tobii.recording.format import encode_header

        with open(self.gaze, "r+b") as f:
            f.write(encode_header(header))
        out = os.path.join(self.dir, "s.csv")
        code, _, err = self.run_main(self.gaze, "-o", out)
        self.assertEqual(code, 0)
        self.assertIn("no wall-clock start", err)
        _, rows = self.read_csv(out)
        self.assertEqual({row[2] for row in rows}, {""})


class ParquetTests(RecordingCase):
    def export(self):
        out = os.path.join(self.dir, "s.parquet")
        code, stdout, err = self.run_main(self.gaze, "-o", out)  # the format follows the suffix
        self.assertEqual((code, err), (0, ""))
        self.assertIn("3,000 samples", stdout)
        return out

    def test_pandas_and_polars_read_it_in_one_line(self):
        """pd.read_parquet(path) and pl.read_parquet(path) give the typed sample table."""
        import pandas as pd
        import polars as pl

        out = self.export()
        frame = pd.read_parquet(out)
        self.assertEqual(len(frame), self.count)
        self.assertEqual(list(frame.columns), export.sample_columns(self.samples.dtype))
        self.assertEqual(str(frame["sample"].dtype), "int64")
        self.assertEqual(str(frame["unix_time"].dtype), "datetime64[us, UTC]")
        self.assertEqual(str(frame["left_gaze_valid"].dtype), "bool")
        self.assertEqual(str(frame["left_pupil_mm"].dtype), "float64")
        np.testing.assert_array_equal(frame["sample"], self.samples["seq"])
        np.testing.assert_array_equal(frame["unix_time"].astype("int64"), self.expected_unix_us())
        np.testing.assert_allclose(frame["time_ms"], self.samples["system_time_us"] / 1000.0)
        np.testing.assert_array_equal(frame["right_gaze_x"], self.samples["right_x"])
        self.assertTrue(np.isnan(frame["gaze_x"][10]))
        self.assertEqual(frame["gaze_x"][11], self.samples["left_x"][11])

        table = pl.read_parquet(out)
        self.assertEqual(table.height, self.count)
        self.assertEqual(
            str(table.schema["unix_time"]), "Datetime(time_unit='us', time_zone='UTC')"
        )
        lost = int(np.isnan(self.samples["left_pupil"]).sum())
        self.assertGreaterEqual(lost, 2)
        self.assertEqual(table["left_pupil_mm"].null_count(), lost)  # lost values are null

        events = pd.read_parquet(os.path.join(self.dir, "s.events.parquet"))
        self.assertEqual(list(events["kind"]), [e["kind"] for e in self.events])
        self.assertEqual(events["label"][3], "stimulus\ton")
        self.assertEqual(json.loads(events["data"][3]), {"n": 1})
        self.assertEqual(
            events["unix_time"][3].value // 1000,
            int(round(T0_UNIX * 1e6)) + 2500 + 512125,
        )

    def test_header_in_file_metadata(self):
        """The recording's header and each column's unit travel in the file's metadata."""
        import pyarrow.parquet as pq

        from jspsych_tobii.recording.parquet import HEADER_KEY

        out = self.export()
        schema = pq.read_schema(out)
        self.assertEqual(json.loads(schema.metadata[HEADER_KEY]), read_header(self.gaze))
        self.assertEqual(schema.field("time_ms").metadata[b"unit"], b"ms")
        self.assertEqual(schema.field("left_origin_z_mm").metadata[b"unit"], b"mm")
        events_schema = pq.read_schema(os.path.join(self.dir, "s.events.parquet"))
        self.assertEqual(json.loads(events_schema.metadata[HEADER_KEY])["session"], 1)

    def test_without_pyarrow(self):
        """Without pyarrow, one line says how to install it, and nothing is written."""
        hidden = {name: None for name in list(sys.modules) if name.split(".")[0] == "pyarrow"}
        hidden["pyarrow"] = None
        with mock.patch.dict(sys.modules, hidden):
            code, _, err = self.run_main(self.gaze, "-o", os.path.join(self.dir, "s.parquet"))
        self.assertEqual(code, 1)
        self.assertEqual(
            err.strip(),
            "jspsych-tobii-export: error: --format parquet needs pyarrow: "
            'pip install "jspsych-tobii[parquet]"',
        )
        recording = os.path.basename(self.gaze)[: -len(".gaze")]
        self.assertEqual(
            sorted(os.listdir(self.dir)), [recording + ".events.jsonl", recording + ".gaze"]
        )


class SameSamplesTests(RecordingCase):
    """The CSV, Parquet and BIDS exports of one recording hold the same samples."""

    def test_csv_parquet_and_bids_agree(self):
        import pandas as pd

        csv_out = os.path.join(self.dir, "s.csv")
        parquet_out = os.path.join(self.dir, "s.parquet")
        dataset = os.path.join(self.dir, "bids")
        for args in (
            ("-o", csv_out),
            ("-o", parquet_out),
            (
                "--format",
                "bids",
                "--subject",
                "01",
                "--screen-resolution",
                "1920x1080",
                "-o",
                dataset,
            ),
        ):
            code, _, err = self.run_main(self.gaze, *args)
            self.assertEqual(code, 0, err)

        header, rows = self.read_csv(csv_out)
        col = {name: i for i, name in enumerate(header)}
        frame = pd.read_parquet(parquet_out)
        folder = os.path.join(dataset, "sub-01", "beh")
        bids = {}
        for recording, eye in (("eye1", "left"), ("eye2", "right")):
            name = f"sub-01_task-jspsych_recording-{recording}_physio"
            with open(os.path.join(folder, name + ".json")) as f:
                columns = json.load(f)["Columns"]
            with gzip.open(os.path.join(folder, name + ".tsv.gz"), "rt") as f:
                bids[eye] = (columns, [line.rstrip("\n").split("\t") for line in f])

        self.assertEqual(len(rows), self.count)
        self.assertEqual(len(frame), self.count)
        for eye in ("left", "right"):
            self.assertEqual(len(bids[eye][1]), self.count)

        def number(cell):
            return None if cell in ("", "n/a") else float(cell)

        for i in range(self.count):
            row = rows[i]
            sample = int(row[col["sample"]])
            self.assertEqual(int(frame["sample"][i]), sample)
            time_ms = float(row[col["time_ms"]])
            self.assertAlmostEqual(frame["time_ms"][i], time_ms, places=6)
            unix = row[col["unix_time"]]
            self.assertEqual(frame["unix_time"][i].value // 1000, int(unix.replace(".", "")))
            for eye in ("left", "right"):
                columns, lines = bids[eye]
                b = dict(zip(columns, lines[i]))
                self.assertEqual(int(b["sample"]), sample)
                self.assertEqual(float(b["timestamp"]), time_ms)
                self.assertEqual(b["unix_time"], unix)
                valid = row[col[f"{eye}_gaze_valid"]] == "1"
                for axis, bids_name in (("x", "x_coordinate"), ("y", "y_coordinate")):
                    in_csv = number(row[col[f"{eye}_gaze_{axis}"]])
                    in_parquet = frame[f"{eye}_gaze_{axis}"][i]
                    if valid:
                        self.assertAlmostEqual(number(b[bids_name]), in_csv, places=6)
                        self.assertAlmostEqual(in_parquet, in_csv, places=6)
                    else:
                        self.assertIsNone(number(b[bids_name]))
                        self.assertIsNone(in_csv)
                        self.assertTrue(np.isnan(in_parquet))
                in_csv = number(row[col[f"{eye}_pupil_mm"]])
                if in_csv is None:
                    self.assertIsNone(number(b["pupil_size"]))
                else:
                    self.assertAlmostEqual(number(b["pupil_size"]), in_csv, places=4)


class OptionTests(RecordingCase):
    count = 800

    def test_bids_options_need_bids(self):
        """A BIDS option with another format is refused, not ignored."""
        code, _, err = self.run_main(self.gaze, "--subject", "01", "-o", "x.csv")
        self.assertEqual(code, 2)
        self.assertIn("--subject is for --format bids only", err)

    def test_bids_needs_subject_and_folder(self):
        code, _, err = self.run_main(self.gaze, "--format", "bids", "-o", self.dir + "/ds")
        self.assertEqual(code, 2)
        self.assertIn("--format bids needs --subject", err)
        code, _, err = self.run_main(self.gaze, "--format", "bids", "--subject", "01")
        self.assertEqual(code, 2)
        self.assertIn("needs -o DATASET_DIR", err)

    def test_bad_labels(self):
        """Labels are checked against the BIDS schema's entity formats, one line each."""
        cases = [
            (("--subject", "sub-01"), "--subject: 'sub-01' is not a BIDS subject label"),
            (("--subject", "01", "--task", "visual search"), "--task: 'visual search'"),
            (("--subject", "01", "--run", "first"), "--run: 'first' is not a BIDS run index"),
            (("--subject", "01", "--screen-resolution", "1920"), "--screen-resolution: expected"),
        ]
        for args, message in cases:
            code, _, err = self.run_main(self.gaze, "--format", "bids", *args, "-o", self.dir)
            self.assertEqual(code, 2, args)
            self.assertIn(message, err)
            self.assertEqual(len(err.strip().splitlines()), 1)
