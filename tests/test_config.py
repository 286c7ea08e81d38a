from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cluster.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]


def base() -> dict:
    return yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())


def test_shipped_paper_config_is_valid_and_big_enough():
    cfg = load_config(REPO / "configs" / "paper.yaml")
    assert len(cfg.symbols) >= 4
    assert len(cfg.strategies) >= 2
    assert cfg.redis.url == ""
    assert cfg.ray.address == ""


def error_for(data: dict) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    return exc.value


def test_unknown_key_is_named():
    data = base()
    data["market"]["sead"] = 1
    err = error_for(data)
    assert err.key == "market"
    assert "sead" in err.problem


def test_an_unknown_key_gets_the_closest_known_one_and_the_list():
    data = base()
    data["feeds"]["mark_intervl_ms"] = 5
    err = error_for(data)
    assert err.key == "feeds"
    assert err.problem.startswith("unknown key 'mark_intervl_ms' (did you mean 'mark_interval_ms'?); known: ")
    assert "book_depth" in err.problem
    data = base()
    data["symbols"][1]["tick_sise"] = 0.1  # in a list entry
    assert (error_for(data).key, "did you mean 'tick_size'" in error_for(data).problem) == ("symbols[1]", True)
    data = base()
    data["risk"]["strategies"]["mm"]["max_order_per_min"] = 5  # in a mapping's entry, an optional section
    err = error_for(data)
    assert err.key == "risk.strategies.mm" and "did you mean 'max_orders_per_min'" in err.problem
    data = base()
    data["rsk"] = {}
    assert error_for(data).key == "(top level)" and "did you mean 'risk'" in error_for(data).problem
    data = base()
    data["venues"]["paper"]["nonsense_xyz"] = 1  # nothing close: the list alone
    assert error_for(data).problem.startswith("unknown key 'nonsense_xyz'; known: type, ")


def test_a_bad_choice_lists_the_choices_and_stale_after_must_be_positive():
    data = base()
    data["venues"]["paper"]["type"] = "binanse"
    err = error_for(data)
    assert (err.key, err.problem) == ("venues.paper.type", "Invalid enum value 'binanse'; one of: paper, binance, alpaca")
    data = base()
    data["feeds"]["transport"] = "shm"
    assert error_for(data).problem.endswith("one of: object_store, inline, compiled")
    for bad in (0, -1):
        data = base()
        data["market"]["stale_after_s"] = bad  # every book would be stale at once, and nothing would trade
        assert error_for(data).key == "market.stale_after_s"


def test_a_bad_value_in_a_mapping_names_its_entry():
    data = base()
    data["venues"]["second"] = {"type": "paper"}
    data["venues"]["paper"]["latency_ms"] = "abc"
    err = error_for(data)
    assert (err.key, err.problem) == ("venues.paper.latency_ms", "Expected `float`, got `str`")
    data = base()
    data["risk"]["symbols"]["ETHUSDT"] = {"max_position_qty": 2.0}
    data["risk"]["symbols"]["BTCUSDT"]["max_position_qty"] = "lots"
    assert error_for(data).key == "risk.symbols.BTCUSDT.max_position_qty"


def test_wrong_type_names_the_path():
    data = base()
    data["market"]["seed"] = "seven"
    err = error_for(data)
    assert err.key == "market.seed"
    assert "int" in err.problem


def test_strategy_with_unknown_symbol():
    data = base()
    data["strategies"][0]["symbols"] = ["BTCUSDT", "DOGEUSDT"]
    err = error_for(data)
    assert err.key == "strategies[0].symbols"
    assert "DOGEUSDT" in err.problem


def test_unknown_strategy_type():
    data = base()
    data["strategies"][1]["type"] = "magic"
    err = error_for(data)
    assert err.key == "strategies[1].type"
    assert "market_maker" in err.problem


def test_bad_strategy_param_names_params():
    data = base()
    data["strategies"][0]["params"] = {"no_such_param": 1}
    err = error_for(data)
    assert err.key == "strategies[0].params"
    assert "no_such_param" in err.problem


def test_symbol_on_unknown_venue():
    data = base()
    data["symbols"][2]["venue"] = "ftx"
    err = error_for(data)
    assert err.key == "symbols[2].venue"


def test_duplicate_symbol_and_strategy_name():
    data = base()
    data["symbols"].append(dict(data["symbols"][0]))
    assert "twice" in error_for(data).problem
    data = base()
    data["strategies"][1]["name"] = data["strategies"][0]["name"]
    assert error_for(data).key == "strategies[1].name"


def test_negative_limit_and_bad_urls():
    data = base()
    data["risk"]["defaults"]["max_order_notional"] = -5
    assert error_for(data).key == "risk.defaults.max_order_notional"
    data = base()
    data["redis"]["url"] = "http://localhost"
    assert error_for(data).key == "redis.url"
    data = base()
    data["ray"]["address"] = "somewhere"
    assert error_for(data).key == "ray.address"


def test_risk_scope_for_unknown_symbol():
    data = base()
    data["risk"]["symbols"] = {"XRPUSDT": {"max_position_qty": 1}}
    assert error_for(data).key == "risk.symbols.XRPUSDT"


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster: [unclosed\nredis: {}\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    # One line: where, then what (PyYAML's own text is several lines with the source quoted).
    assert str(err.value) == (f"config error at {bad}: not valid YAML: line 2, column 6: expected ',' or ']', but got "
                              "':' (while parsing a flow sequence)")
    bad.write_text("- just a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_shipped_cluster_config_is_valid():
    cfg = load_config(REPO / "configs" / "cluster.yaml")
    assert cfg.ray.address == "auto"
    assert len(cfg.symbols) == 16 and cfg.feeds.symbols_per_actor == 4
