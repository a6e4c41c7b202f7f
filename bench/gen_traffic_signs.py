"""Deterministic generator of traffic-signs CSV files for RainStorm's tests and benchmarks.

Usage: python bench/gen_traffic_signs.py N OUT.csv [--seed S]     (default seed 42)

The file looks like the City of Champaign traffic-signs dataset: a header line, then N
records, one per physical line, '\\n' line endings, written by csv.writer. Supplement,
Notes and Sign_Text sometimes hold commas and doubled quotes, so those fields are quoted
and a naive line.split(',') misplaces the columns after them.

Determinism: one random.Random(seed) stream is consumed record by record, so the same N
and seed give identical bytes, and the first K records of a larger file equal the
K-record file.
"""
import argparse
import csv
import os
import random
from bisect import bisect
from itertools import accumulate

HEADER = ("X,Y,OBJECTID,Sign_Type,Size_,Supplement,Sign_Post,Year_Insta,Category,Notes,"
          "MUTCD,Ownership,FACILITYID,Schools,Location_Adjusted,Replacement_Zone,"
          "Sign_Text,Set_ID,FieldVerifiedDate,GlobalID")

# (weight, Sign_Type, Category, MUTCD, sizes, Sign_Text choices)
SIGN_TYPES = [
    (11.0, "Stop", "Regulatory", "R1-1", ("30x30", "36x36"), ("STOP",)),
    (1.5, "Stop Ahead", "Warning", "W3-1", ("36x36",), ("",)),
    (3.0, "Yield", "Regulatory", "R1-2", ("36x36x36",), ("YIELD",)),
    (6.0, "Speed Limit", "Regulatory", "R2-1", ("24x30",),
     ("SPEED LIMIT 25", "SPEED LIMIT 30", "SPEED LIMIT 35", "SPEED LIMIT 40")),
    (4.0, "One Way", "Regulatory", "R6-1", ("36x12",), ("ONE WAY",)),
    (2.0, "Do Not Enter", "Regulatory", "R5-1", ("30x30",), ("DO NOT ENTER",)),
    (1.0, "No Left Turn", "Regulatory", "R3-2", ("24x24",), ("",)),
    (1.0, "No Turn On Red", "Regulatory", "R10-11", ("24x30",), ("NO TURN ON RED",)),
    (3.0, "Pedestrian Crossing", "Warning", "W11-2", ("30x30",), ("",)),
    (2.0, "Curve", "Warning", "W1-2", ("30x30",), ("",)),
    (3.0, "No Outlet", "Warning", "W14-2", ("30x30",), ("NO OUTLET",)),
    (1.0, "Dead End", "Warning", "W14-1", ("30x30",), ("DEAD END",)),
    (1.0, "Signal Ahead", "Warning", "W3-3", ("36x36",), ("",)),
    (21.0, "Street Name", "Guide", "D3-1", ("6x30", "9x36", "9x42"), ()),
    (2.0, "Bike Route", "Guide", "D11-1", ("24x18",), ("BIKE ROUTE",)),
    (9.0, "No Parking", "Parking", "R8-3", ("12x18",),
     ("NO PARKING ANY TIME", "NO PARKING, 2AM-6AM", "NO PARKING THIS SIDE OF STREET")),
    (5.0, "Parking Time Limit", "Parking", "R7-108", ("12x18",),
     ("2 HOUR PARKING, 8AM-5PM", "1 HOUR PARKING")),
    (2.0, "Accessible Parking", "Parking", "R7-8", ("12x18",),
     ("RESERVED PARKING, PERMIT REQUIRED",)),
    (1.0, "Loading Zone", "Parking", "R7-6", ("12x18",), ("LOADING ZONE, 15 MIN",)),
    (2.0, "School Crossing", "School", "S1-1", ("36x36",), ("",)),
    (1.0, "School Speed Limit", "School", "S5-1", ("24x48",),
     ("SCHOOL SPEED LIMIT 20, WHEN CHILDREN ARE PRESENT",)),
    (1.0, "Road Work Ahead", "Construction", "W20-1", ("36x36", "48x48"), ("ROAD WORK AHEAD",)),
    (1.5, "Bus Stop", "Custom", "", ("12x18",), ("MTD BUS STOP", "BUS STOP, NO PARKING")),
    (4.0, "Streetlight Banner", "Custom", "", ("",), ("",)),
    (2.0, "Custom", "Custom", "", ("18x24", "24x30"),
     ("PRIVATE DRIVE", 'NO "THRU" TRAFFIC', "PARK, RIDE", "HIDDEN DRIVE",
      "FIRE LANE, NO PARKING")),
]

SIGN_POSTS = [(43, "Punched Telespar"), (14, "Unpunched Telespar"), (10, "Streetlight"),
              (9, "Wood"), (8, "Signal Pole"), (7, "Utility Pole"), (4, "U-Channel"),
              (1, "Punched Telespar (Breakaway)"), (4, "")]

OWNERS = [(86, "City of Champaign"), (6, "University of Illinois"), (4, "IDOT"),
          (2, "Champaign County"), (2, "Private")]

SUPPLEMENTS = ("ALL WAY", "4-WAY", "ARROW LEFT", "ARROW RIGHT", "ENDS", "EXCEPT BIKES",
               "MON-FRI, 7AM-6PM", "EXCEPT BUSES, BIKES", "TOW ZONE, NO PARKING",
               'SAYS "AHEAD"')

NOTES = ("Replaced 2016", "Faded, needs replacement", "Knocked down, reinstalled", "Leaning",
         "Graffiti removed", "Near Stop bar, moved 2 ft", "Bus Stop adjacent",
         'Reads "SLOW", nonstandard', 'Sticker "STOP WAR" removed',
         "Moved to Punched Telespar", "Obstructed by tree, trimmed", "Missing bolt",
         "Temporary", "Per work order 1187, verified")

STREETS = ("MAIN", "UNIVERSITY", "SPRINGFIELD", "GREEN", "JOHN", "KIRBY", "PROSPECT",
           "MATTIS", "NEIL", "STATE", "RANDOLPH", "MARKET", "BRADLEY", "BLOOMINGTON",
           "WINDSOR", "CHURCH", "HILL", "WHITE", "CLARK", "DANIEL", "FIRST", "FOURTH")
STREET_SUFFIXES = ("ST", "AVE", "DR", "RD", "CT", "BLVD")

SCHOOLS = ("Central High School", "Centennial High School", "Dr. Howard Elementary",
           "Jefferson Middle School", "Carrie Busey Elementary", "Westview Elementary")

CENTER_X, SPAN_X = -88.2434, 0.09      # longitude of downtown Champaign, width of the box
CENTER_Y, SPAN_Y = 40.1106, 0.07       # latitude, height of the box


class _Weighted:
    """Picks items with given weights from a uniform draw in [0, 1)."""

    def __init__(self, pairs):
        pairs = list(pairs)
        self.items = [item for _, item in pairs]
        self.bounds = list(accumulate(w for w, _ in pairs))
        self.total = self.bounds[-1]

    def pick(self, u: float):
        return self.items[bisect(self.bounds, u * self.total)]


_TYPES = _Weighted((t[0], t[1:]) for t in SIGN_TYPES)
_POSTS = _Weighted(SIGN_POSTS)
_OWNERS = _Weighted(OWNERS)


def _one_of(items, u: float):
    return items[int(u * len(items))]


def _maybe(items, u: float, share: float, v: float) -> str:
    """One of items if u < share, else the empty string (v picks the item)."""
    return _one_of(items, v) if u < share else ""


def _sign_text(texts, rand) -> str:
    if texts:
        return _one_of(texts, rand())
    return f"{_one_of(STREETS, rand())} {_one_of(STREET_SUFFIXES, rand())}"


def _coordinates(rand):
    x, y = CENTER_X + (rand() - 0.5) * SPAN_X, CENTER_Y + (rand() - 0.5) * SPAN_Y
    if rand() < 0.005:
        return "", ""
    return f"{x:.8f}", f"{y:.8f}"


def _verified_date(rand) -> str:
    year, month, day = 2016 + int(rand() * 8), 1 + int(rand() * 12), 1 + int(rand() * 28)
    return f"{year}/{month:02d}/{day:02d} 00:00:00+00" if rand() < 0.6 else ""


def _global_id(bits: int) -> str:
    h = f"{bits:032X}"
    return f"{{{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}}}"


def _record(r: random.Random, oid: int) -> list:
    """One record; consumes a fixed-pattern slice of the stream so prefixes are stable."""
    rand = r.random
    sign_type, category, mutcd, sizes, texts = _TYPES.pick(rand())
    x, y = _coordinates(rand)
    year = 1985 + int(rand() * 39)
    school = category == "School" or rand() < 0.03
    return [
        x, y, oid, sign_type, _one_of(sizes, rand()),
        _maybe(SUPPLEMENTS, rand(), 0.25, rand()),
        _POSTS.pick(rand()),
        year if rand() < 0.8 else "",
        category,
        _maybe(NOTES, rand(), 0.3, rand()),
        mutcd,
        _OWNERS.pick(rand()),
        f"SGN{oid:07d}" if rand() < 0.97 else "",
        _one_of(SCHOOLS, rand()) if school else "",
        _one_of(("Yes", "No", ""), rand()),
        1 + int(rand() * 8) if rand() < 0.9 else "",
        _sign_text(texts, rand),
        1 + int(rand() * 40000) if rand() < 0.7 else "",
        _verified_date(rand),
        _global_id(r.getrandbits(128)),
    ]


def iter_records(n: int, seed: int = 42):
    """The n records (lists of 20 fields), without the header."""
    r = random.Random(seed)
    return (_record(r, oid) for oid in range(1, n + 1))


class _Echo:
    """A 'file' whose write returns its argument: csv.writer.writerow then returns the line."""

    @staticmethod
    def write(text: str) -> str:
        return text


def iter_lines(n: int, seed: int = 42):
    """The header, then the n records, each as one line of text without its '\\n'."""
    yield HEADER
    writer = csv.writer(_Echo(), lineterminator="")
    for record in iter_records(n, seed):
        yield writer.writerow(record)


def write_csv(n: int, path: str | os.PathLike, seed: int = 42) -> None:
    """Write the header and n records to path."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write(HEADER + "\n")
        csv.writer(f, lineterminator="\n").writerows(iter_records(n, seed))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Write a deterministic traffic-signs CSV.")
    ap.add_argument("n", type=int, help="number of records (the header is extra)")
    ap.add_argument("out", help="output CSV path")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    write_csv(args.n, args.out, args.seed)


if __name__ == "__main__":
    main()
