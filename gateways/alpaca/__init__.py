"""Alpaca: trading (REST v2 orders, trade_updates stream) and market data."""
