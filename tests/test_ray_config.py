"""ray_config.yaml must be a launcher file Ray accepts."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ray
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_ray_config_validates_against_rays_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO / "ray_config.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]
    shard_nodes = [n for n in config["available_node_types"].values() if "shard" in n.get("resources", {})]
    assert shard_nodes, "worker nodes must declare the 'shard' resource the placement plan reads"
