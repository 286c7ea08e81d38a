"""`python -m cluster replay-book`: the documented procedure on files, exact strings, resyncs, bad lines."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from cluster.cli import main

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = REPO.parent / "shared" / "data" / "binance" / "rest_spot_depth_snapshot.json"
LAST_ID = json.loads(SNAPSHOT.read_text())["lastUpdateId"]


def ev(U: int, u: int, b=(), a=(), s="BTCUSDT", wrap=False) -> str:
    data = {"e": "depthUpdate", "E": 1, "s": s, "U": U, "u": u, "b": [list(x) for x in b], "a": [list(x) for x in a]}
    return json.dumps({"stream": f"{s.lower()}@depth@100ms", "data": data} if wrap else data)


def run(tmp_path: Path, lines: list[str], depth: int = 3, snapshots: list[Path] | None = None, capsys=None):
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    argv = ["replay-book", "--venue", "binance", "--events", str(events), "--depth", str(depth), "--out", str(out)]
    for s in snapshots or [SNAPSHOT]:
        argv += ["--snapshot", str(s)]
    rc = main(argv)
    return rc, [json.loads(x) for x in out.read_text().splitlines()]


def test_applies_from_the_straddling_event_and_keeps_the_venues_strings(tmp_path):
    rc, out = run(tmp_path, [
        ev(LAST_ID - 5, LAST_ID, b=[("1.0", "1.0")]),  # u <= lastUpdateId: dropped
        ev(LAST_ID - 1, LAST_ID + 2, b=[("60650.00000000", "0.50000000"), ("60648.08000000", "0.00000000")],
           a=[("60650.01000000", "1.00000000")], wrap=True),  # straddles lastUpdateId + 1
        ev(LAST_ID + 3, LAST_ID + 3, a=[("60650.00500000", "2.10")]),
    ])
    assert rc == 0
    assert [o["u"] for o in out] == [LAST_ID + 2, LAST_ID + 3]
    assert out[0] == {"u": LAST_ID + 2,
                      "bids": [["60650.00000000", "0.50000000"], ["60648.01000000", "0.06430000"],
                               ["60648.00000000", "0.09332000"]],
                      "asks": [["60650.01000000", "1.00000000"], ["60653.68000000", "0.00696000"],
                               ["60653.69000000", "0.00026000"]]}
    assert out[1]["asks"][0] == ["60650.00500000", "2.10"]  # a new best ask, its strings untouched
    assert list(out[0]) == ["u", "bids", "asks"]


def test_gap_writes_a_resync_line_and_stops_without_another_snapshot(tmp_path, capsys):
    rc, out = run(tmp_path, [
        ev(LAST_ID + 1, LAST_ID + 1, b=[("60000.00", "1")]),
        ev(LAST_ID + 5, LAST_ID + 6, b=[("60001.00", "1")]),  # ids LAST_ID+2..+4 lost
        ev(LAST_ID + 7, LAST_ID + 8, b=[("60002.00", "1")]),
    ])
    assert rc == 0
    assert out[0]["u"] == LAST_ID + 1
    assert out[1]["resync"] is True and "gap" in out[1]["reason"]
    assert len(out) == 2  # nothing applied after the resync
    assert "no further snapshot" in capsys.readouterr().err


def test_snapshot_older_than_the_first_event_forces_a_resync(tmp_path):
    rc, out = run(tmp_path, [ev(LAST_ID + 10, LAST_ID + 12)])
    assert rc == 0 and out == [{"resync": True, "reason": out[0]["reason"]}]
    assert "snapshot too old" in out[0]["reason"]


def test_a_second_snapshot_is_used_after_a_resync(tmp_path):
    snap2 = tmp_path / "snap2.json"
    snap2.write_text(json.dumps({"lastUpdateId": LAST_ID + 100, "bids": [["5.00", "1.0"]], "asks": [["6.00", "2.0"]]}))
    rc, out = run(tmp_path, [
        ev(LAST_ID + 50, LAST_ID + 60),  # gap against the first snapshot; stale for the second
        ev(LAST_ID + 101, LAST_ID + 101, b=[("5.50", "3")]),
    ], snapshots=[SNAPSHOT, snap2])
    assert rc == 0
    assert out[0]["resync"] is True
    assert out[1] == {"u": LAST_ID + 101, "bids": [["5.50", "3"], ["5.00", "1.0"]], "asks": [["6.00", "2.0"]]}


def test_malformed_lines_are_reported_with_their_number_and_skipped(tmp_path, capsys):
    rc, out = run(tmp_path, [
        "{not json",
        json.dumps({"e": "depthUpdate", "s": "BTCUSDT", "U": 1}),  # missing fields
        ev(LAST_ID + 1, LAST_ID + 1, b=[("abc", "1")]),
        ev(LAST_ID + 1, LAST_ID + 1, a=[("60700.00", "-2")]),
        ev(LAST_ID + 1, LAST_ID + 1, s="ETHUSDT"),
        "",
        ev(LAST_ID + 1, LAST_ID + 1, a=[("60700.00", "2")], s="BTCUSDT"),
    ])
    err = capsys.readouterr().err
    assert rc == 0
    for n in (1, 2, 3, 4):
        assert f"line {n}:" in err
    assert "line 5: unknown symbol" not in err  # the first good event names the symbol: line 5 is ETHUSDT
    assert len(out) == 1 and out[0]["u"] == LAST_ID + 1
    assert "line 7: unknown symbol 'BTCUSDT'" in err  # the book is ETHUSDT's after line 5 set it


def test_symbol_option_rejects_other_symbols(tmp_path, capsys):
    events = tmp_path / "e.jsonl"
    events.write_text(ev(LAST_ID + 1, LAST_ID + 1, s="ETHUSDT") + "\n" + ev(LAST_ID + 1, LAST_ID + 2) + "\n")
    out = tmp_path / "o.jsonl"
    rc = main(["replay-book", "--venue", "binance", "--snapshot", str(SNAPSHOT), "--events", str(events),
               "--depth", "1", "--out", str(out), "--symbol", "BTCUSDT"])
    assert rc == 0
    assert "line 1: unknown symbol 'ETHUSDT'" in capsys.readouterr().err
    assert [json.loads(x)["u"] for x in out.read_text().splitlines()] == [LAST_ID + 2]


def test_unreadable_files_exit_non_zero(tmp_path, capsys):
    assert main(["replay-book", "--venue", "binance", "--snapshot", str(tmp_path / "missing.json"),
                 "--events", str(SNAPSHOT), "--out", str(tmp_path / "o")]) == 2
    assert main(["replay-book", "--venue", "binance", "--snapshot", str(SNAPSHOT),
                 "--events", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["replay-book", "--venue", "binance", "--snapshot", str(bad), "--events", str(SNAPSHOT),
                 "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.count("error:") == 3


def test_matches_a_reference_model_on_a_long_random_stream(tmp_path):
    """Random updates, duplicates and stale re-sends: the output equals a plain dict book at every line."""
    rng = random.Random(5)
    snap = {"lastUpdateId": 1000, "bids": [[f"{100 - i}.{rng.randint(0, 99):02d}", "1.5"] for i in range(20)],
            "asks": [[f"{101 + i}.{rng.randint(0, 99):02d}", "2.5"] for i in range(20)]}
    snap_path = tmp_path / "snap.json"
    snap_path.write_text(json.dumps(snap))
    ref = {"b": {Decimal(p): (p, q) for p, q in snap["bids"]}, "a": {Decimal(p): (p, q) for p, q in snap["asks"]}}
    uid = 1000
    lines, expected = [], []
    for _ in range(300):
        n = rng.randint(1, 4)
        changes = {"b": [], "a": []}
        for _ in range(rng.randint(1, 6)):
            side = rng.choice("ba")
            price = f"{(rng.randint(80, 100) if side == 'b' else rng.randint(101, 121))}.{rng.randint(0, 99):02d}"
            qty = rng.choice(["0", "0.000", f"{rng.randint(1, 50)}.{rng.randint(0, 999):03d}"])
            changes[side].append((price, qty))
        line = ev(uid + 1, uid + n, b=changes["b"], a=changes["a"], wrap=rng.random() < 0.5)
        uid += n
        lines.append(line)
        if rng.random() < 0.2:
            lines.append(line)  # duplicate: dropped
        for side in "ba":
            for p, q in changes[side]:
                if Decimal(q) == 0:
                    ref[side].pop(Decimal(p), None)
                else:
                    ref[side][Decimal(p)] = (p, q)
        expected.append({"u": uid, "bids": [list(ref["b"][k]) for k in sorted(ref["b"], reverse=True)[:5]],
                         "asks": [list(ref["a"][k]) for k in sorted(ref["a"])[:5]]})
    rc, out = run(tmp_path, lines, depth=5, snapshots=[snap_path])
    assert rc == 0
    assert out == expected


def test_runs_as_a_module(tmp_path):
    events = tmp_path / "e.jsonl"
    events.write_text(ev(LAST_ID + 1, LAST_ID + 1, b=[("60651.00000000", "1.00000000")]) + "\n")
    out = tmp_path / "o.jsonl"
    proc = subprocess.run([sys.executable, "-m", "cluster", "replay-book", "--venue", "binance", "--snapshot",
                           str(SNAPSHOT), "--events", str(events), "--depth", "1", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == {"u": LAST_ID + 1, "bids": [["60651.00000000", "1.00000000"]],
                                           "asks": [["60650.01000000", "0.61982000"]]}


@pytest.mark.parametrize("depth", [0, -1])
def test_depth_must_be_positive(tmp_path, depth):
    assert main(["replay-book", "--venue", "binance", "--snapshot", str(SNAPSHOT), "--events", str(SNAPSHOT),
                 "--depth", str(depth), "--out", str(tmp_path / "o")]) == 2
