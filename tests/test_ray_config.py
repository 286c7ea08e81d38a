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


def test_every_node_starts_ray_with_token_auth_and_the_projects_venv():
    """`ray job submit` runs `python` from the environment of `ray start`, and the token must match everywhere."""
    config = yaml.safe_load((REPO / "ray_config.yaml").read_text())
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in config[key] if "ray start" in c)
        assert "RAY_AUTH_MODE=token" in start and "venv/bin:$PATH" in start, (key, start)
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


def test_the_kuberay_example_matches_the_launcher_file():
    """cluster/kubernetes/raycluster.yaml: the same shape as ray_config.yaml, on this project's Ray version."""
    doc = yaml.safe_load((REPO / "cluster" / "kubernetes" / "raycluster.yaml").read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster")
    spec = doc["spec"]
    assert spec["rayVersion"] == ray.__version__
    dockerfile = (REPO / "cluster" / "kubernetes" / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-" in dockerfile
    head = spec["headGroupSpec"]
    assert "resources" not in head["rayStartParams"], "no symbols on the head"
    groups = spec["workerGroupSpecs"]
    shards = [json.loads(json.loads(g["rayStartParams"]["resources"])) for g in groups]
    assert all(s.get("shard", 0) > 0 for s in shards), shards
    containers = [head["template"]["spec"]["containers"][0]] + [g["template"]["spec"]["containers"][0] for g in groups]
    assert len({c["image"] for c in containers}) == 1, "every pod runs the same image"
    for c in containers:
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "auth_token"
