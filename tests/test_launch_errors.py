"""What a user sees when a cluster cannot start: one line naming the venue or actor and the cause."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from cluster.config import parse_config
from cluster.launch import ClusterRun, LaunchError, actor_failure
from gateways.secrets import SecretsError


def real_venue_config(tmp_path: Path, **venue: str) -> dict:
    return {
        "cluster": {"name": "nokeys", "data_dir": str(tmp_path / "runs")},
        "redis": {"url": "redis://127.0.0.1:1"},  # never reached: the keys are read first
        "api": {"enabled": False},
        "venues": {"alpaca": {"type": "alpaca", **venue}},
        "market": {"source": "venue"},
        "symbols": [{"symbol": "AAPL", "venue": "alpaca", "price": 200.0, "tick_size": 0.01, "lot_size": 1.0}],
        "strategies": [],
    }


def test_missing_keys_or_secrets_file_stop_the_start_with_one_line(tmp_path, monkeypatch):
    for var in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(LaunchError) as err:
        ClusterRun(parse_config(real_venue_config(tmp_path))).start()
    assert str(err.value).startswith("venues.alpaca: alpaca API keys missing: set APCA_API_KEY_ID and "
                                     "APCA_API_SECRET_KEY")
    missing = tmp_path / "nope.yaml"
    with pytest.raises(LaunchError) as err:
        ClusterRun(parse_config(real_venue_config(tmp_path, secrets_file=str(missing)))).start()
    assert str(err.value) == f"venues.alpaca: cannot read secrets file {missing}: No such file or directory"
    assert not ray.is_initialized() or ray.get_runtime_context().namespace != "rsc-nokeys"  # nothing was started


@ray.remote(num_cpus=0)
class NeedsKeys:
    def __init__(self) -> None:
        raise SecretsError("cannot read secrets file /x/alpaca.yaml: No such file or directory")

    def node_id(self) -> str:
        return ""


def test_an_actor_that_dies_in_its_constructor_is_named_with_its_error(ray_session):
    actor = NeedsKeys.options(name="gateway:lateness").remote()
    with pytest.raises(Exception) as err:
        ray.get(actor.node_id.remote(), timeout=60)
    assert len(str(err.value).splitlines()) > 3  # Ray's own message: the remote traceback
    assert actor_failure(err.value) == ("gateway:lateness: SecretsError: cannot read secrets file /x/alpaca.yaml: "
                                        "No such file or directory")
    assert actor_failure(RuntimeError("no route\nmore")) == "RuntimeError: no route"


def test_a_simulator_that_stops_at_start_says_why(tmp_path):
    from cluster.config import load_config
    from gateways.venue_sim.process import SimulatorProcess, SimulatorStartError

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "paper.yaml")
    sim = SimulatorProcess(cfg, tmp_path, extra_args=["--replay-symbol", "NOPE=BTCUSDT"])
    with pytest.raises(SimulatorStartError) as err:
        sim.start()
    assert str(err.value).startswith("the venue simulator stopped at start: ")
    assert "--replay-symbol need --replay" in str(err.value) and str(sim.log_path) in str(err.value)
