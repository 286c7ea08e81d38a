"""ExposureBook's incremental sums: the same numbers, bit for bit, as the plain per-entry algorithm.

The reference below touches one entry at a time and, after a price change, re-adds every bucket
holding the symbol with a generator `sum`: what the book did before its hot paths were written out.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.messages import Side
from risk.exposure import CLUSTER, Bucket, Entry, ExposureBook


class Reference:
    def __init__(self) -> None:
        self.buckets: dict[str, dict[str, Entry]] = {}
        self.sums: dict[str, list[float]] = {}
        self.prices: dict[str, float] = {}

    def _pairs(self, strategy: str, venue: str, symbol: str) -> list[tuple[str, Entry]]:
        out = []
        for key in (CLUSTER, f"venue:{venue}", f"strategy:{strategy}"):
            entries = self.buckets.setdefault(key, {})
            self.sums.setdefault(key, [0.0, 0.0, 0.0])
            out.append((key, entries.setdefault(symbol, Entry())))
        return out

    def _touch(self, key: str, e: Entry, price: float) -> None:
        lg, sh = (e.pos + e.buys) * price, (e.pos - e.sells) * price
        gr = max(abs(lg), abs(sh))
        s = self.sums[key]
        s[0] += gr - e.gross
        s[1] += lg - e.long
        s[2] += sh - e.short
        e.gross, e.long, e.short = gr, lg, sh

    def add_position(self, strategy: str, venue: str, symbol: str, qty: float) -> None:
        for key, e in self._pairs(strategy, venue, symbol):
            e.pos += qty
            self._touch(key, e, self.prices.get(symbol, 0.0))

    def add_open(self, strategy: str, venue: str, symbol: str, side: Side, qty: float) -> None:
        for key, e in self._pairs(strategy, venue, symbol):
            if side is Side.BUY:
                e.buys = max(e.buys + qty, 0.0)
            else:
                e.sells = max(e.sells + qty, 0.0)
            self._touch(key, e, self.prices.get(symbol, 0.0))

    def set_price(self, symbol: str, price: float) -> None:
        if self.prices.get(symbol) == price:
            return
        self.prices[symbol] = price
        for key, entries in self.buckets.items():
            if symbol in entries:
                self._touch(key, entries[symbol], price)
                self.sums[key] = [sum(e.gross for e in entries.values()), sum(e.long for e in entries.values()),
                                  sum(e.short for e in entries.values())]


def assert_same(book: ExposureBook, ref: Reference) -> None:
    assert set(book.buckets) == set(ref.buckets) | {CLUSTER}
    for key, entries in ref.buckets.items():
        b: Bucket = book.buckets[key]
        assert [b.gross, b.long, b.short] == ref.sums[key], key
        assert list(b.entries) == list(entries)
        for sym, e in entries.items():
            got = b.entries[sym]
            assert (got.pos, got.buys, got.sells, got.gross, got.long, got.short) == (
                e.pos, e.buys, e.sells, e.gross, e.long, e.short), (key, sym)


qty = st.floats(-50, 50, allow_nan=False).map(lambda x: round(x, 3))
op = st.one_of(
    st.tuples(st.just("pos"), st.sampled_from(["a", "b"]), st.sampled_from(["v1", "v2"]),
              st.sampled_from(["X", "Y", "Z"]), qty),
    st.tuples(st.just("open"), st.sampled_from(["a", "b"]), st.sampled_from(["v1", "v2"]),
              st.sampled_from(["X", "Y", "Z"]), st.sampled_from([Side.BUY, Side.SELL]), qty),
    st.tuples(st.just("price"), st.sampled_from(["X", "Y", "Z"]), st.floats(0.5, 500).map(lambda x: round(x, 2))),
)


@settings(max_examples=300)
@given(st.lists(op, max_size=60))
def test_exposure_sums_match_the_plain_algorithm_exactly(ops):
    book, ref = ExposureBook(), Reference()
    for o in ops:
        if o[0] == "pos":
            book.add_position(*o[1:])
            ref.add_position(*o[1:])
        elif o[0] == "open":
            book.add_open(*o[1:])
            ref.add_open(*o[1:])
        else:
            book.set_price(*o[1:])
            ref.set_price(*o[1:])
        assert_same(book, ref)


def test_resum_of_one_entry_is_what_sum_gives():
    b = Bucket()
    e = b.entries["X"] = Entry()
    for v in (-0.0, 0.0, 1.5, -2.25, 1e300):
        e.gross, e.long, e.short = v, v, v
        b.resum()
        assert (b.gross, b.long, b.short) == (sum([v]),) * 3 and str(b.gross) == str(sum([v]))
