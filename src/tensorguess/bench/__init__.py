"""The measuring tools: `tensorguess bench` and the HTTP load test. A command, not a part of
the product: no runtime module imports this package (tests/test_layers.py holds that)."""
