"""What `cluster run` prints once started: no secret in it."""

from __future__ import annotations

from cluster.config import parse_config
from tests.test_venue_rates import config


def test_start_prints_redis_without_its_password(capsys, tmp_path):
    from types import SimpleNamespace

    from cluster.cli import _print_started
    from cluster.redis_server import redacted

    assert redacted("redis://:83a8ff@192.0.2.2:45949/0") == "redis://:***@192.0.2.2:45949/0"
    assert redacted("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    cfg = parse_config({**config({}), "cluster": {"name": "pw", "data_dir": str(tmp_path)}})
    run = SimpleNamespace(cfg=cfg, redis_url="redis://:s3cret@10.0.0.1:7000/0", run_dir="runs/x", api_thread=None,
                          all_actors=lambda: [], order_destinations=lambda: {})
    _print_started(run)
    out = capsys.readouterr().out
    assert "s3cret" not in out
    assert f"redis: redis://:***@10.0.0.1:7000/0  (data in runs/x; with its password in {tmp_path}/pw.current.json)" in out
