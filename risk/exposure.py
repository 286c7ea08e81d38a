"""Positions and open-order quantity per bucket and symbol, with worst-case exposure kept incrementally.

Buckets: the whole cluster (`*`), each venue (`venue:<v>`) and each strategy (`strategy:<s>`).
Per bucket and symbol an `Entry` holds the position and the open buy and sell quantity
of working orders; the worst case long is `pos + buys`, short `pos - sells`. Each bucket
keeps three sums of their notional at the latest price, updated by the difference when one
entry changes, so a gross/net exposure check is O(1) whatever the number of symbols:

    long  = sum (pos + buys) * price      net exposure if every buy fills
    short = sum (pos - sells) * price     net exposure if every sell fills
    gross = sum max(|pos + buys|, |pos - sells|) * price
"""

from __future__ import annotations

from operator import attrgetter

from cluster.messages import Side

CLUSTER = "*"
_GROSS, _LONG, _SHORT = attrgetter("gross"), attrgetter("long"), attrgetter("short")


class Entry:
    __slots__ = ("pos", "buys", "sells", "gross", "long", "short")

    def __init__(self) -> None:
        self.pos = self.buys = self.sells = 0.0
        self.gross = self.long = self.short = 0.0


class Bucket:
    __slots__ = ("entries", "gross", "long", "short")

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.gross = self.long = self.short = 0.0

    def touch(self, e: Entry, price: float) -> None:
        lg = (e.pos + e.buys) * price
        sh = (e.pos - e.sells) * price
        a = -lg if lg < 0.0 else lg
        b = -sh if sh < 0.0 else sh
        gr = a if a > b else b
        self.gross += gr - e.gross
        self.long += lg - e.long
        self.short += sh - e.short
        e.gross, e.long, e.short = gr, lg, sh

    def resum(self) -> None:
        """Re-add from the entries (clears rounding drift after a price change).

        This runs on every mark of every symbol, so without a Python frame per entry: `sum` over
        `map(attrgetter)` adds the same values in the same order as a generator would, and for the
        usual single entry `0 + value` is exactly what `sum` returns.
        """
        entries = self.entries
        if len(entries) == 1:
            for e in entries.values():
                self.gross, self.long, self.short = 0 + e.gross, 0 + e.long, 0 + e.short
            return
        values = entries.values()
        self.gross = sum(map(_GROSS, values))
        self.long = sum(map(_LONG, values))
        self.short = sum(map(_SHORT, values))


class ExposureBook:
    def __init__(self) -> None:
        self.buckets: dict[str, Bucket] = {CLUSTER: Bucket()}
        self.prices: dict[str, float] = {}
        self.by_symbol: dict[str, list[tuple[Bucket, Entry]]] = {}
        self._triples: dict[tuple[str, str, str], list[tuple[Bucket, Entry]]] = {}

    def bucket(self, key: str) -> Bucket:
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = Bucket()
        return b

    def entry(self, key: str, symbol: str) -> Entry:
        b = self.bucket(key)
        e = b.entries.get(symbol)
        if e is None:
            e = b.entries[symbol] = Entry()
            self.by_symbol.setdefault(symbol, []).append((b, e))
        return e

    def peek(self, key: str, symbol: str) -> Entry | None:
        b = self.buckets.get(key)
        return None if b is None else b.entries.get(symbol)

    def _entries(self, strategy: str, venue: str, symbol: str) -> list[tuple[Bucket, Entry]]:
        """The (bucket, entry) pairs one (strategy, venue, symbol) moves: cluster, venue, strategy (cached)."""
        key = (strategy, venue, symbol)
        out = self._triples.get(key)
        if out is None:
            out = self._triples[key] = [(self.bucket(k), self.entry(k, symbol))
                                        for k in (CLUSTER, f"venue:{venue}", f"strategy:{strategy}")]
        return out

    # add_position and add_open run on every fill and order; `Bucket.touch` is written out in them.
    def add_position(self, strategy: str, venue: str, symbol: str, signed_qty: float) -> None:
        price = self.prices.get(symbol, 0.0)
        pairs = self._triples.get((strategy, venue, symbol)) or self._entries(strategy, venue, symbol)
        for b, e in pairs:
            e.pos = pos = e.pos + signed_qty
            lg = (pos + e.buys) * price
            sh = (pos - e.sells) * price
            x = -lg if lg < 0.0 else lg
            y = -sh if sh < 0.0 else sh
            gr = x if x > y else y
            b.gross += gr - e.gross
            b.long += lg - e.long
            b.short += sh - e.short
            e.gross, e.long, e.short = gr, lg, sh

    def add_open(self, strategy: str, venue: str, symbol: str, side: Side, qty: float) -> None:
        """Add (or with a negative qty, remove) open quantity of working orders."""
        price = self.prices.get(symbol, 0.0)
        buy = side is Side.BUY
        pairs = self._triples.get((strategy, venue, symbol)) or self._entries(strategy, venue, symbol)
        for b, e in pairs:
            if buy:
                v = e.buys + qty
                e.buys = buys = v if v > 0.0 else 0.0
                sells = e.sells
            else:
                v = e.sells + qty
                e.sells = sells = v if v > 0.0 else 0.0
                buys = e.buys
            pos = e.pos
            lg = (pos + buys) * price
            sh = (pos - sells) * price
            x = -lg if lg < 0.0 else lg
            y = -sh if sh < 0.0 else sh
            gr = x if x > y else y
            b.gross += gr - e.gross
            b.long += lg - e.long
            b.short += sh - e.short
            e.gross, e.long, e.short = gr, lg, sh

    def set_price(self, symbol: str, price: float) -> None:
        """Revalue the symbol's entries at `price` and re-add each bucket holding one.

        A bucket has at most one entry per symbol, so each bucket here is re-added once, and
        re-adding overwrites the bucket's sums: only the entries' own values need updating first.
        """
        prices = self.prices
        if prices.get(symbol) == price:
            return
        prices[symbol] = price
        for b, e in self.by_symbol.get(symbol, ()):
            pos = e.pos
            lg = (pos + e.buys) * price
            sh = (pos - e.sells) * price
            a = -lg if lg < 0.0 else lg
            c = -sh if sh < 0.0 else sh
            e.gross = a if a > c else c
            e.long = lg
            e.short = sh
            b.resum()

    def clear(self) -> None:
        prices = self.prices
        self.__init__()  # type: ignore[misc]
        self.prices = prices
