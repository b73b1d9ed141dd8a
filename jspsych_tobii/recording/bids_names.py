# -*- test-case-name: tests.test_bids -*-
"""
BIDS names for an exported recording: the schema (C{bidsschematools}, the
C{bids} extra; L{load_schema}), the entities of one recording checked
against it (L{BidsNames}), the folder and file names they give, and a last
check of every name written (L{check_names}).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Tuple

from jspsych_tobii.recording.export import ExportError

__all__ = ["BidsNames", "check_names", "load_schema", "EYES", "DATATYPE", "DEFAULT_TASK"]

#: The recording label and BIDS C{RecordedEye} of each eye's files.
EYES = (("eye1", "left"), ("eye2", "right"))
#: The data type folder: eye tracking alongside a behavioural experiment.
DATATYPE = "beh"
DEFAULT_TASK = "jspsych"


def load_schema():
    """The BIDS schema from bidsschematools, or a one-line L{ExportError} saying how to get it."""
    try:
        from bidsschematools import schema
    except ImportError:
        raise ExportError(
            '--format bids needs bidsschematools: pip install "jspsych-tobii[bids]"'
        ) from None
    return schema.load_schema()


def _entity_pattern(schema: Any, entity: str) -> str:
    format_name = schema.objects.entities[entity]["format"]
    return schema.objects.formats[format_name]["pattern"]


@dataclass(frozen=True)
class BidsNames:
    """The BIDS entities of one exported recording, and what the user told of the screen."""

    subject: str
    task: str = DEFAULT_TASK
    session: Optional[str] = None
    run: Optional[str] = None
    screen_resolution: Optional[Tuple[int, int]] = None

    @classmethod
    def checked(
        cls,
        subject: str,
        session: Optional[str] = None,
        task: Optional[str] = None,
        run: Optional[str] = None,
        screen_resolution: Optional[str] = None,
    ) -> "BidsNames":
        """
        Check each label against the schema's entity formats.

        @raise ExportError: a label BIDS does not allow, or a resolution
            that is not C{WIDTHxHEIGHT}.
        """
        schema = load_schema()
        values = {"subject": subject, "session": session, "task": task, "run": run}
        for entity, value in values.items():
            if value is None:
                continue
            pattern = _entity_pattern(schema, entity)
            if not re.fullmatch(pattern, value):
                option = "--" + entity
                raise ExportError(
                    f"{option}: {value!r} is not a BIDS {entity} "
                    f"{'index' if entity == 'run' else 'label'} (it must match {pattern}; "
                    f"give the label without the {schema.objects.entities[entity]['name']}- "
                    "prefix)"
                )
        resolution = None
        if screen_resolution is not None:
            found = re.fullmatch(r"\s*(\d{1,6})\s*[xX×]\s*(\d{1,6})\s*", screen_resolution)
            if not found or not all(int(v) > 0 for v in found.groups()):
                raise ExportError(
                    f"--screen-resolution: expected WIDTHxHEIGHT in pixels such as 1920x1080, "
                    f"got {screen_resolution!r}"
                )
            resolution = (int(found.group(1)), int(found.group(2)))
        return cls(
            subject=subject,
            session=session,
            task=task or DEFAULT_TASK,
            run=run,
            screen_resolution=resolution,
        )

    @property
    def folder(self) -> str:
        """The data folder inside the dataset: C{sub-X[/ses-Y]/beh}."""
        parts = [f"sub-{self.subject}"]
        if self.session is not None:
            parts.append(f"ses-{self.session}")
        return os.path.join(*parts, DATATYPE)

    def name(self, suffix: str, extension: str, recording: Optional[str] = None) -> str:
        """A file name, its entities in the schema's order (sub, ses, task, run, recording)."""
        parts = [f"sub-{self.subject}"]
        if self.session is not None:
            parts.append(f"ses-{self.session}")
        parts.append(f"task-{self.task}")
        if self.run is not None:
            parts.append(f"run-{self.run}")
        if recording is not None:
            parts.append(f"recording-{recording}")
        return "_".join(parts) + f"_{suffix}{extension}"


def check_names(schema: Any, relative_paths: Iterable[str]) -> None:
    """
    Every path matches one of the schema's file rules (a guard against
    writing names the installed BIDS version does not define).

    @raise ExportError: one does not.
    """
    from bidsschematools import rules

    patterns: List[Any] = []
    for group in (schema.rules.files.common, schema.rules.files.raw):
        patterns.extend(r["regex"] for r in rules.regexify_filename_rules(group, schema, level=2))
    compiled = [re.compile(p) for p in patterns]
    for path in relative_paths:
        posix = path.replace(os.sep, "/")
        if not any(c.match(posix) for c in compiled):
            raise ExportError(f"{posix}: not a file name that BIDS {schema.bids_version} defines")
