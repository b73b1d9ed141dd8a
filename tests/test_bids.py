"""
Tests for L{jspsych_tobii.recording.bids}: the files C{--format bids} writes,
checked against the machine-readable BIDS schema of C{bidsschematools}.

Nothing here lists BIDS rules by hand: the file-name rules, the entity order,
the required sidecar fields, the required columns and the eye-tracking
checks are all read from the schema, and its selector and check expressions
are evaluated on the files written (L{evaluate}).
"""

from __future__ import annotations

import gzip
import json
import os
import re

from bidsschematools import schema as bids_schema
from bidsschematools import validator
from bidsschematools.expressions import Array, BinOp, Element, Function, Property, RightOp, parse

from .test_export_formats import RecordingCase

SCHEMA = bids_schema.load_schema()


# -- the schema's expression language, enough of it for the rules that apply here


class UnknownExpression(Exception):
    pass


def _lookup(value, name):
    if isinstance(value, dict):
        return value.get(name)
    return None


def evaluate(node, context):
    """Evaluate a parsed BIDS schema expression (see bidsschematools.expressions)."""
    if isinstance(node, (int, float)):
        return node
    if isinstance(node, str):
        if node[:1] in ("'", '"'):
            return node[1:-1]
        if node in ("true", "false"):
            return node == "true"
        if node == "null":
            return None
        return context.get(node)
    if isinstance(node, Array):
        return [evaluate(e, context) for e in node.elements]
    if isinstance(node, Property):
        return _lookup(evaluate(node.name, context), node.field)
    if isinstance(node, Element):
        value, index = evaluate(node.name, context), evaluate(node.index, context)
        try:
            return value[index]
        except (TypeError, IndexError, KeyError):
            return None
    if isinstance(node, RightOp) and node.op == "!":
        return not evaluate(node.rh, context)
    if isinstance(node, BinOp):
        if node.op == "&&":
            left = evaluate(node.lh, context)
            return evaluate(node.rh, context) if left else left
        if node.op == "||":
            left = evaluate(node.lh, context)
            return left if left else evaluate(node.rh, context)
        left, right = evaluate(node.lh, context), evaluate(node.rh, context)
        if node.op == "==":
            return left == right
        if node.op == "!=":
            return left != right
        if node.op == "in":
            return right is not None and left in right
        if left is None or right is None:
            return None
        operators = {
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
            "+": lambda a, b: a + b,
            "-": lambda a, b: a - b,
            "*": lambda a, b: a * b,
            "/": lambda a, b: a / b,
        }
        if node.op not in operators:
            raise UnknownExpression(node.op)
        return operators[node.op](left, right)
    if isinstance(node, Function):
        args = [evaluate(a, context) for a in node.args]
        if node.name == "intersects":
            if args[0] is None or args[1] is None:
                return False
            return bool(set(map(str, args[0])) & set(map(str, args[1])))
        if node.name == "match":
            return None if args[0] is None else re.search(args[1], args[0]) is not None
        if node.name == "type":
            value = args[0]
            for name, kinds in (
                ("null", type(None)),
                ("boolean", bool),
                ("number", (int, float)),
                ("string", str),
                ("array", list),
                ("object", dict),
            ):
                if isinstance(value, kinds):
                    return name
            raise UnknownExpression(f"type of {value!r}")
        if node.name == "substr":
            return None if args[0] is None else args[0][int(args[1]) : int(args[2])]
        if node.name == "exists":
            # exists(paths, "dataset"): how many of the paths (from the dataset root) exist
            if args[1] != "dataset":
                raise UnknownExpression(f"exists(..., {args[1]!r})")
            paths = args[0] if isinstance(args[0], list) else [args[0]]
            root = context["dataset_root"]
            return sum(
                1
                for p in paths
                if p is not None and os.path.exists(os.path.join(root, p.lstrip("/")))
            )
        if node.name == "length":
            return None if args[0] is None else len(args[0])
        raise UnknownExpression(node.name)
    raise UnknownExpression(repr(node))


def applies(rule, context):
    """True when every selector of a schema rule holds for C{context}."""
    return all(evaluate(parse(s), context) for s in rule.get("selectors", []))


def file_context(path, dataset):
    """Entities, suffix, extension, datatype and sidecar of a written file."""
    name = os.path.basename(path)
    stem, _, rest = name.partition(".")
    *pairs, suffix = stem.split("_")
    entities = dict(pair.split("-", 1) for pair in pairs)
    sidecar_path = os.path.join(os.path.dirname(path), stem + ".json")
    sidecar = {}
    if os.path.exists(sidecar_path):
        with open(sidecar_path) as f:
            sidecar = json.load(f)
    relative = os.path.relpath(path, dataset).replace(os.sep, "/")
    return {
        "dataset_root": dataset,
        "path": "/" + relative,
        "entities": entities,
        "suffix": suffix,
        "extension": "." + rest,
        "datatype": relative.split("/")[-2] if "/" in relative else None,
        "sidecar": sidecar,
    }


class BidsExportTests(RecordingCase):
    count = 1200

    def run_bids(self, *extra, run="2"):
        """The export into self.dataset as sub-01, ses-S1, task-search, run-C{run}."""
        return self.run_main(
            self.gaze,
            "--format",
            "bids",
            "--subject",
            "01",
            "--session",
            "S1",
            "--task",
            "search",
            "--run",
            run,
            *extra,
            "-o",
            self.dataset,
        )

    def export(self, *extra):
        self.dataset = os.path.join(self.dir, "dataset")
        code, stdout, err = self.run_bids(*extra)
        self.assertEqual(code, 0, err)
        self.assertIn("1,200 samples and 4 events", stdout)
        written = []
        for root, _, files in os.walk(self.dataset):
            written.extend(os.path.join(root, f) for f in files)
        return sorted(written), err

    def test_file_names(self):
        """Every name matches a schema file rule; entities in the schema's order."""
        written, _ = self.export("--screen-resolution", "1920x1080")
        folder = os.path.join(self.dataset, "sub-01", "ses-S1", "beh")
        m = "sub-01_ses-S1_task-search_run-2"
        expected = [os.path.join(self.dataset, "dataset_description.json")] + [
            os.path.join(folder, name)
            for name in [f"{m}_events.json", f"{m}_events.tsv"]
            + [
                f"{m}_recording-{eye}_{suffix}{ext}"
                for eye in ("eye1", "eye2")
                for suffix in ("physio", "physioevents")
                for ext in (".json", ".tsv.gz")
            ]
        ]
        self.assertEqual(written, sorted(expected))

        # the validator of bidsschematools: every path matches a rule, no mandatory file missing
        result = validator.validate_bids(self.dataset)
        self.assertEqual(result["path_tracking"], [])
        self.assertEqual([r for r in result["schema_tracking"] if r["mandatory"]], [])

        # the timeseries rule that admits the physio files: its suffixes, extensions,
        # data types and entities (required ones present, the rest allowed)
        order = list(SCHEMA.rules.entities)
        short = {SCHEMA.objects.entities[e]["name"]: e for e in order}
        physio = [p for p in written if "_physio" in p]
        for path in physio:
            context = file_context(path, self.dataset)
            rules = [
                rule
                for rule in SCHEMA.rules.files.raw.task.values()
                if context["suffix"] in rule.get("suffixes", [])
                and context["extension"] in rule.get("extensions", [])
                and context["datatype"] in rule.get("datatypes", [])
            ]
            self.assertEqual(len(rules), 1, path)
            allowed = rules[0]["entities"]
            used = [short[k] for k in context["entities"]]
            for entity, level in allowed.items():
                if level == "required":
                    self.assertIn(entity, used, path)
            self.assertEqual(set(used) - set(allowed), set(), path)
            self.assertEqual(used, sorted(used, key=order.index), path)
            for key, value in context["entities"].items():
                entity = SCHEMA.objects.entities[short[key]]
                pattern = SCHEMA.objects.formats[entity["format"]]["pattern"]
                self.assertRegex(value, f"^{pattern}$")
            # the eye-tracking section: one recording label per eye
            self.assertIn(context["entities"]["recording"], ("eye1", "eye2"))

    def test_required_sidecar_fields(self):
        """Each sidecar has every field the schema's sidecar rules require of it, valid."""
        written, _ = self.export("--screen-resolution", "1920x1080")
        data_files = [p for p in written if p.endswith((".tsv.gz", ".tsv"))]
        metadata = SCHEMA.objects.metadata
        checked = set()
        for path in data_files:
            context = file_context(path, self.dataset)
            sidecar = context["sidecar"]
            self.assertTrue(sidecar, f"{path} has no sidecar")
            for group in SCHEMA.rules.sidecars.values():
                for rule_name, rule in group.items():
                    if "fields" not in rule or not applies(rule, context):
                        continue
                    checked.add(rule_name)
                    for key, level in rule["fields"].items():
                        level = level if isinstance(level, str) else level["level"]
                        name = metadata[key]["name"]
                        if level == "required":
                            self.assertIn(name, sidecar, f"{rule_name}: {path}")
                        if name in sidecar:
                            self.assertValid(sidecar[name], metadata[key], f"{name} in {path}")
        # the rules that make these eye-tracking files: continuous data, physio events,
        # eye tracking (which applies only with PhysioType eyetrack)
        self.assertTrue({"Continuous", "PhysioEvents", "EyeTrack"} <= checked, checked)

        physio = file_context(
            [p for p in written if p.endswith("eye1_physio.tsv.gz")][0], self.dataset
        )
        self.assertEqual(physio["sidecar"]["RecordedEye"], "left")
        self.assertEqual(physio["sidecar"]["SamplingFrequency"], 600.0)
        self.assertEqual(physio["sidecar"]["ManufacturersModelName"], "Mock Tracker")
        self.assertEqual(physio["sidecar"]["DeviceSerialNumber"], "MOCK-0001")
        self.assertEqual(physio["sidecar"]["StartTime"], 0.0025)
        # the validation's accuracy (not the calibration's), per point at most 1.5x the average
        self.assertEqual(physio["sidecar"]["AverageCalibrationError"], 0.4)
        self.assertEqual(physio["sidecar"]["MaximalCalibrationError"], 0.6)
        self.assertEqual(physio["sidecar"]["CalibrationCount"], 1)
        self.assertEqual(len(physio["sidecar"]["CalibrationPosition"]), 5)
        eye2 = file_context(
            [p for p in written if p.endswith("eye2_physio.tsv.gz")][0], self.dataset
        )
        self.assertEqual(eye2["sidecar"]["RecordedEye"], "right")

        with open(os.path.join(self.dataset, "dataset_description.json")) as f:
            description = json.load(f)
        rule = SCHEMA.rules.json.dataset.dataset_description
        self.assertTrue(applies(rule, {"path": "/dataset_description.json"}))
        for key, level in rule["fields"].items():
            level = level if isinstance(level, str) else level["level"]
            if level == "required":
                self.assertIn(metadata[key]["name"], description)
        self.assertEqual(description["BIDSVersion"], SCHEMA.bids_version)

    def assertValid(self, value, definition, where):
        """The value fits the metadata definition's type, enum and bounds (or one of anyOf)."""
        options = definition.get("anyOf") or [definition]
        problems = []
        for option in options:
            problem = _type_problem(value, option)
            if problem is None:
                return
            problems.append(problem)
        self.fail(f"{where}: {value!r}: {'; '.join(problems)}")

    def test_columns(self):
        """The physio files have the schema's required columns, the initial ones first."""
        written, _ = self.export("--screen-resolution", "1920x1080")
        for path in written:
            if not path.endswith(".tsv.gz"):
                continue
            context = file_context(path, self.dataset)
            columns = context["sidecar"]["Columns"]
            with gzip.open(path, "rt") as f:
                lines = f.read().splitlines()
            rows = [line.split("\t") for line in lines]
            self.assertTrue(all(len(row) == len(columns) for row in rows), path)
            for group in SCHEMA.rules.tabular_data.values():
                for rule_name, rule in group.items():
                    if "columns" not in rule or not applies(rule, context):
                        continue
                    required = [
                        SCHEMA.objects.columns[key]["name"]
                        for key, level in rule["columns"].items()
                        if (level if isinstance(level, str) else level["level"]) == "required"
                    ]
                    for name in required:
                        self.assertIn(name, columns, f"{rule_name}: {path}")
                    initial = [
                        SCHEMA.objects.columns[k]["name"] for k in rule.get("initial_columns", [])
                    ]
                    self.assertEqual(columns[: len(initial)], initial, f"{rule_name}: {path}")
            if path.endswith("_physio.tsv.gz"):
                self.assertEqual(len(rows), self.count)
                # the header-less file's first line is data, not column names
                float(rows[0][0])

    def checks_for(self, written):
        """(check name, passed) for each schema check that applies to a written data file."""
        outcome = []
        folder_files = {os.path.basename(p): p for p in written}
        for path in written:
            if not path.endswith(".tsv.gz"):
                continue
            context = file_context(path, self.dataset)
            stem = os.path.basename(path).split(".")[0]
            base = stem.rsplit("_", 1)[0]
            matches = re.sub(r"_recording-[^_]+", "", base)
            events = folder_files.get(matches + "_events.tsv")
            physio = folder_files.get(base + "_physio.tsv.gz")
            context["associations"] = {
                "events": None if events is None else file_context(events, self.dataset),
                "physio": None if physio is None else file_context(physio, self.dataset),
            }
            with gzip.open(path, "rt") as f:
                first = f.readline().rstrip("\n").split("\t")
            context["columns"] = dict(zip(context["sidecar"]["Columns"], first))
            for group in SCHEMA.rules.checks.values():
                for name, check in group.items():
                    if applies(check, context):
                        passed = all(evaluate(parse(c), context) for c in check["checks"])
                        outcome.append((name, bool(passed)))
        return outcome

    def test_eyetracking_checks(self):
        """The schema's eye-tracking checks pass: onset source, pupil size, screen facts."""
        written, err = self.export("--screen-resolution", "1920x1080")
        self.assertEqual(err, "")
        outcome = self.checks_for(written)
        names = {name for name, _ in outcome}
        self.assertTrue(
            {"EyetrackingStimulusPresentation", "OnsetSourceConsistency", "PupilSizeDescription"}
            <= names,
            names,
        )
        self.assertEqual([o for o in outcome if not o[1]], [])

    def test_without_screen_resolution(self):
        """Without --screen-resolution the export warns, and the schema's check would fail."""
        written, err = self.export()
        self.assertIn("--screen-resolution WIDTHxHEIGHT", err)
        failed = [name for name, passed in self.checks_for(written) if not passed]
        self.assertEqual(set(failed), {"EyetrackingStimulusPresentation"})

    def test_no_overwrite(self):
        """A second export of the same subject/task/run is refused; another run is added."""
        self.export()
        code, _, err = self.run_bids()
        self.assertEqual(code, 1)
        self.assertIn("exists already", err)
        code, _, err = self.run_bids(run="3")
        self.assertEqual(code, 0, err)
        self.assertEqual(validator.validate_bids(self.dataset)["path_tracking"], [])


def _type_problem(value, definition):
    kind = definition.get("type")
    if "enum" in definition and value not in definition["enum"]:
        return f"not one of {definition['enum']}"
    checks = {
        "string": lambda v: isinstance(v, str),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
        "boolean": lambda v: isinstance(v, bool),
    }
    if kind is not None and not checks[kind](value):
        return f"not a {kind}"
    if kind == "array":
        if len(value) < definition.get("minItems", 0):
            return "too few items"
        if len(value) > definition.get("maxItems", len(value)):
            return "too many items"
        if "items" in definition:
            for item in value:
                problem = _type_problem(item, definition["items"])
                if problem:
                    return f"item {item!r}: {problem}"
    if kind in ("number", "integer") and "minimum" in definition and value < definition["minimum"]:
        return "below the minimum"
    return None
