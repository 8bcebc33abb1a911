"""Fail unless every test a CI step selected ran and passed: reads pytest's JUnit XML
and exits 1 on no tests run, a failure, an error or a skip (an extra that does not
import makes its tests skip; in the step that exists for them that is a failure).

A module skipped while collecting (`pytest.importorskip` at its top) is reported
before markers select tests, so it may be another group's module (the Isaac Lab
tests seen from the warp step). `--own NAME` counts such a module against the step
only if NAME is in its name; without it every skipped module counts.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("xml")
    parser.add_argument("--own", help="count only skipped modules whose name holds this")
    args = parser.parse_args()
    cases = ET.parse(args.xml).getroot().findall(".//testcase")
    modules = [  # skipped while collecting
        c for c in cases if not c.get("classname") and c.find("skipped") is not None
    ]
    tests = [c for c in cases if c.get("classname")]
    failed = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    skipped = [c for c in tests if c.find("skipped") is not None]
    skipped += [c for c in modules if args.own is None or args.own in c.get("name", "")]
    ran = len(tests) - len([c for c in tests if c.find("skipped") is not None])
    print(f"{args.xml}: {ran} tests ran, {len(failed)} failed, {len(skipped)} skipped")
    for case in skipped:
        reason = case.find("skipped").get("message", "")
        print(f"  skipped: {case.get('classname')}::{case.get('name')}: {reason}")
    return 0 if ran and not skipped and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
