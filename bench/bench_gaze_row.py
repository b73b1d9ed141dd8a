"""
What copying one SDK gaze record costs on the SDK's thread, with the row
planned from GAZE_DTYPE's field names (tobii_sdk.gaze_row), against a
baseline measured in the same run: the same row written out by hand, key by
key, in the dtype's order.  Also the reactor's side: rows to one array.

    python bench/bench_gaze_row.py [--records 200000]
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def by_hand(d):
    """The baseline: one row in GAZE_DTYPE's order, written out key by key."""
    return (
        (d["device_time_stamp"], d["system_time_stamp"], 0, 0)
        + d["left_gaze_point_on_display_area"]
        + d["left_gaze_point_in_user_coordinate_system"]
        + d["left_gaze_origin_in_user_coordinate_system"]
        + (
            d["left_pupil_diameter"],
            d["left_gaze_point_validity"],
            d["left_gaze_origin_validity"],
            d["left_pupil_validity"],
        )
        + d["right_gaze_point_on_display_area"]
        + d["right_gaze_point_in_user_coordinate_system"]
        + d["right_gaze_origin_in_user_coordinate_system"]
        + (
            d["right_pupil_diameter"],
            d["right_gaze_point_validity"],
            d["right_gaze_origin_validity"],
            d["right_pupil_validity"],
        )
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from jspsych_tobii.trackers.tobii_sdk import gaze_row, gaze_rows_to_records
    from tests import fake_tobii_research as fake

    sdk = fake.make_sdk("2.x")
    record = sdk.add_device()._gaze(1, 1_000_000, 1e6 / 1200)
    if by_hand(record) != gaze_row(record):
        raise SystemExit("the planned row differs from the row written by hand")
    n = args.records
    hand = min(timeit.repeat(lambda: by_hand(record), number=n, repeat=3)) / n * 1e6
    planned = min(timeit.repeat(lambda: gaze_row(record), number=n, repeat=3)) / n * 1e6
    rows = [gaze_row(record)] * 100
    batch = min(timeit.repeat(lambda: gaze_rows_to_records(rows), number=n // 100, repeat=3))
    batch = batch / (n // 100) / 100 * 1e6
    print(f"{n} records of the fake SDK at 1200 Hz")
    print("| | µs per record | ratio |")
    print("|---|---|---|")
    print(f"| row by hand (baseline) | {hand:.2f} | 1.00x |")
    print(f"| row planned from GAZE_DTYPE | {planned:.2f} | {planned / hand:.2f}x |")
    print(f"| rows to records (reactor, batches of 100) | {batch:.2f} | |")
    sdk.shutdown()
    print(
        f"at 1200 Hz the planned row costs {planned * 1200 / 1e4:.3f}% of the SDK thread's "
        f"time ({(planned - hand) * 1200 / 1e4:+.3f}% against the baseline)"
    )


if __name__ == "__main__":
    main()
