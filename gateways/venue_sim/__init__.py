"""A local venue simulator that speaks Binance's and Alpaca's wire protocols on localhost.

`exchange.SimExchange` holds the seeded markets and the fault plan; each protocol
module registers its REST and WebSocket routes on one aiohttp application
(`server.create_app`). Run it as a process: `python -m gateways.venue_sim`.
"""
