"""Cluster files (clusters/): Ray cluster-launcher YAMLs and KubeRay manifests, checked before use.

`validate_cluster_file` raises `ClusterFileError` (a UsageError, exit 2) listing every problem as
``FILE:LINE: dotted.key: message``. A launcher YAML is checked against the JSON schema of the
installed Ray (``ray/autoscaler/ray-schema.json``) and the cross checks Ray makes when it prepares
a config; a KubeRay manifest against a JSON schema of the ray.io/v1 structure raymlp relies on and
the rules of KubeRay's own validation that a file can break by itself.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

from raymlp.errors import UsageError
from raymlp.textfiles import TextFileError, read_utf8

if TYPE_CHECKING:
    from raymlp.config.yamlfile import ConfigIssue, _Source

Kind = Literal["launcher", "RayCluster", "RayJob", "RayService"]
Path_ = tuple[str | int, ...]

_API_VERSION = "ray.io/v1"
_RAY_KINDS = ("RayCluster", "RayJob", "RayService")
#: ray/autoscaler/_private/providers.py::_NODE_PROVIDERS of Ray 2.60.
_PROVIDERS = (
    "aws",
    "gcp",
    "azure",
    "local",
    "kuberay",
    "vsphere",
    "aliyun",
    "readonly",
    "spark",
    "fake_multinode",
    "fake_multinode_docker",
    "external",
)
#: Provider keys Ray's bootstrap reads without a default (a provider mapping replaces defaults.yaml's whole).
_PROVIDER_NEEDS = {
    "aws": ("region",),
    "gcp": ("region", "availability_zone", "project_id"),
    "azure": ("location", "resource_group"),
}
_TOKEN_AUTH_MIN_RAY = (2, 52, 0)  # KubeRay refuses authOptions.mode token for an older rayVersion


@dataclass(frozen=True)
class ClusterFile:
    """A cluster file that passed validation."""

    path: Path
    kind: Kind
    #: cluster_name of a launcher YAML; metadata.name of the RayCluster/RayJob/RayService.
    name: str
    #: provider.type of a launcher YAML; None for a KubeRay manifest.
    provider: str | None
    #: The file's text with its `${RAYMLP_*}` references filled in from this machine's environment:
    #: what `raymlp cluster up` hands to `ray up` or `kubectl apply`.
    text: str = field(default="", compare=False, repr=False)


class ClusterFileError(UsageError):
    """Every problem found in one cluster file, in file order."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = sorted(issues, key=_line_order)
        count = f"{len(issues)} problem{'s' if len(issues) != 1 else ''}"
        super().__init__("\n".join([*map(str, self.issues), f"{count} in the cluster file"]))


def validate_cluster_file(path: str | os.PathLike[str]) -> ClusterFile:
    """Check a launcher YAML or KubeRay manifest; raise `ClusterFileError` listing every problem."""
    from raymlp.config.yamlfile import ConfigIssue

    file, label = Path(path), str(path)
    try:
        text = read_utf8(file, label, what="cluster file")
    except TextFileError as error:
        raise ClusterFileError([ConfigIssue(error.where, "", error.problem)]) from None

    text, issues = expand_settings(text, label)
    documents, parse_issues = _documents(text, label)
    issues += parse_issues
    found: ClusterFile | None = None
    if len(documents) == 1 and not _is_manifest(documents[0][0]):
        config, source = documents[0]
        _check_launcher(config, source)
        if not source.issues:
            found = ClusterFile(file, "launcher", config["cluster_name"], config["provider"]["type"], text)
    else:
        for document, source in documents:
            if not isinstance(document, dict):
                continue
            if not _is_manifest(document):
                source.add(
                    (),
                    "a file of several YAML documents holds Kubernetes manifests: each needs apiVersion "
                    "and kind (a launcher YAML is one document)",
                )
                continue
            _check_manifest(document, source, text)
            if found is None and not source.issues and document.get("kind") in _RAY_KINDS:
                found = ClusterFile(file, document["kind"], document["metadata"]["name"], None, text)
    issues += [issue for _, source in documents for issue in source.issues]
    if not issues and found is None:
        issues.append(ConfigIssue(f"{label}:1", "", "these manifests hold no RayCluster, RayJob or RayService"))
    if issues:
        raise ClusterFileError(issues)
    assert found is not None
    return found


#: `${RAYMLP_NAME}` or `${RAYMLP_NAME:-default}`: a setting of the laptop's, filled in before the file
#: reaches Ray or kubectl. Other `$NAME`/`${NAME}` are left to the shell on the nodes.
_SETTING_REFERENCE = re.compile(r"\$\{(RAYMLP_[A-Z0-9_]*)(?::-([^}]*))?\}")


def expand_settings(text: str, label: str) -> tuple[str, list[ConfigIssue]]:
    """`text` with its `${RAYMLP_*}` references replaced by this environment's values, and an issue
    (FILE:LINE) for each one that is not set and has no default."""
    from raymlp.config.yamlfile import ConfigIssue

    missing: dict[str, list[int]] = {}  # name -> the lines that use it

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if os.environ.get(name):
            return os.environ[name]
        if default is not None:
            return default
        missing.setdefault(name, []).append(text.count("\n", 0, match.start()) + 1)
        return match.group(0)

    expanded = _SETTING_REFERENCE.sub(replace, text)
    issues = [
        ConfigIssue(
            f"{label}:{lines[0]}",
            "",
            f"environment variable {name} is not set; export it before `raymlp cluster up` (or write "
            f"${{{name}:-default}})" + (f"; also used on line {', '.join(map(str, lines[1:]))}" if lines[1:] else ""),
        )
        for name, lines in missing.items()
    ]
    return expanded, issues


# --- documents with the line of every dotted path (raymlp.config.yamlfile's machinery) -------------


def _documents(text: str, label: str) -> tuple[list[tuple[Any, _Source]], list[ConfigIssue]]:
    """Each YAML document as data plus its `_Source`; problems that stop parsing come back separately."""
    import yaml

    from raymlp.config.yamlfile import ConfigIssue, _construct, _Source

    try:
        nodes = [node for node in yaml.compose_all(text, Loader=yaml.SafeLoader) if node is not None]
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = " ".join(part for part in (error.context, error.problem) if part)
        return [], [ConfigIssue(f"{label}:{mark.line + 1 if mark else 1}", "", f"invalid YAML: {problem}")]
    except yaml.YAMLError as error:
        return [], [ConfigIssue(f"{label}:1", "", f"invalid YAML: {error}")]
    if not nodes:
        return [], [
            ConfigIssue(
                f"{label}:1",
                "",
                "the file is empty; a cluster file is a Ray cluster-launcher "
                "YAML or KubeRay manifests (RayCluster, RayJob, RayService)",
            )
        ]
    documents = []
    for node in nodes:
        source = _Source(label)
        data = _construct(node, (), source)
        if not isinstance(data, dict):
            source.add((), f"a cluster file's document must be a mapping of keys, got {_shown(data)}")
        documents.append((data, source))
    return documents, []


def _line_order(issue: ConfigIssue) -> tuple[int, str]:
    line = issue.where.rpartition(":")[2]
    return (int(line) if line.isdigit() else 0, issue.key)


def _is_manifest(document: Any) -> bool:
    return isinstance(document, dict) and ("apiVersion" in document or "kind" in document)


# --- JSON schema errors -> FILE:LINE: key: message ----------------------------------------------

_MISSING_HINTS = {
    ("provider",): f" (where the machines come from: provider.type is one of {', '.join(_PROVIDERS)})",
    ("cluster_name",): " (names the cluster's machines and `ray dashboard`/`ray down`'s target)",
}
_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "boolean": "true or false",
    "null": "null",
}


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_key(key: str, allowed: Iterable[str]) -> str:
    allowed = list(allowed)
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown key; {hint}allowed keys: {', '.join(allowed)}"


def _explain(error: Any) -> list[tuple[Path_, str]]:
    """(path, message) pairs for one jsonschema error, in words that say what is allowed."""
    path: Path_ = tuple(error.absolute_path)
    kind, expected, instance, schema = error.validator, error.validator_value, error.instance, error.schema
    if kind == "required" and isinstance(instance, dict):
        return [
            ((*path, key), "required key is missing" + _MISSING_HINTS.get((*path, key), ""))
            for key in expected
            if key not in instance
        ]
    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = list(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        extra = [key for key in instance if key not in allowed and not any(re.search(p, str(key)) for p in patterns)]
        return [((*path, key), _unknown_key(str(key), allowed)) for key in extra]
    if isinstance(schema, dict) and "x-message" in schema:
        return [(path, f"{schema['x-message']}, got {_shown(instance)}")]
    if kind == "type":
        types = [expected] if isinstance(expected, str) else list(expected)
        message = f"must be {' or '.join(_TYPE_WORDS.get(name, name) for name in types)}"
    elif kind == "enum":
        message = f"must be one of {', '.join(map(str, expected))}"
    elif kind == "const":
        message = f"must be {expected}"
    elif kind == "minimum":
        message = f"must be at least {expected}"
    elif kind == "maximum":
        message = f"must be at most {expected}"
    elif kind == "exclusiveMinimum":
        message = f"must be more than {expected}"
    elif kind == "minItems":
        return [(path, f"needs at least {expected} item{'s' if expected != 1 else ''}")]
    elif kind == "minLength":
        return [(path, "must not be empty")]
    elif kind == "maxLength":
        message = f"must be at most {expected} characters"
    else:
        return [(path, error.message)]
    return [(path, f"{message}, got {_shown(instance)}")]


def _schema_problems(validator: Any, instance: Any, source: _Source, prefix: Path_ = ()) -> None:
    seen: set[tuple[Path_, str]] = set()
    for error in validator.iter_errors(instance):
        for path, message in _explain(error):
            located = (*prefix, *path)
            if (located, message) not in seen:
                seen.add((located, message))
                source.add(located, message)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# --- launcher YAMLs -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _ray_schema() -> dict[str, Any]:
    """ray/autoscaler/ray-schema.json of the installed Ray, found without importing Ray."""
    import importlib.util

    spec = importlib.util.find_spec("ray")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("Ray is not installed here, so launcher YAMLs cannot be checked (pip install raymlp)")
    schema_file = Path(next(iter(spec.submodule_search_locations))) / "autoscaler" / "ray-schema.json"
    return json.loads(schema_file.read_text())


def _check_launcher(config: Any, source: _Source) -> None:
    import jsonschema

    if not isinstance(config, dict):
        return
    provider: Any = config.get("provider")
    provider_type = provider.get("type") if isinstance(provider, dict) else None
    instance = config
    if provider_type == "local" and "min_workers" in config:
        # Ray moves an on-prem cluster's top-level min_workers into its one node type before validating.
        instance = {key: value for key, value in config.items() if key != "min_workers"}
        if not _is_int(config["min_workers"]) or config["min_workers"] < 0:
            source.add(("min_workers",), f"must be an integer of at least 0, got {_shown(config['min_workers'])}")
    schema = _ray_schema()
    _schema_problems(jsonschema.validators.validator_for(schema)(schema), instance, source)

    if isinstance(provider, dict) and isinstance(provider_type, str):
        if provider_type not in _PROVIDERS:
            source.add(
                ("provider", "type"), f"unknown provider '{provider_type}'; Ray 2.60 has: {', '.join(_PROVIDERS)}"
            )
        elif provider_type == "external" and "module" not in provider:
            source.add(
                ("provider", "module"),
                "required with provider.type external: the dotted path of your NodeProvider class",
            )
        for key in _PROVIDER_NEEDS.get(provider_type, ()):
            if provider.get(key) in (None, ""):
                source.add(("provider", key), f"required with provider.type {provider_type}")
    if provider_type == "local":
        _check_on_prem(config, provider, source)
    else:
        _check_node_types(config, source)
    docker = config.get("docker")
    if isinstance(docker, dict) and docker:
        image = docker.get("image") or (docker.get("head_image") and docker.get("worker_image"))
        if bool(docker.get("container_name")) != bool(image):
            source.add(("docker",), "give both container_name and image (or head_image and worker_image), or neither")


def _check_node_types(config: dict[str, Any], source: _Source) -> None:
    types = config.get("available_node_types")
    if not isinstance(types, dict):
        return
    names = [str(name) for name in types]
    head = config.get("head_node_type")
    if "head_node_type" not in config:
        source.add(
            ("head_node_type",), f"required with available_node_types: the head's node type, one of {', '.join(names)}"
        )
    elif isinstance(head, str) and head not in types:
        source.add(("head_node_type",), f"unknown node type '{head}'; available_node_types defines: {', '.join(names)}")
    least = 0
    for name, node_type in types.items():
        if not isinstance(node_type, dict):
            continue
        low, high = node_type.get("min_workers"), node_type.get("max_workers")
        for key, value in (("min_workers", low), ("max_workers", high)):
            if _is_int(value) and value < 0:
                source.add(("available_node_types", name, key), f"must be at least 0, got {value}")
        if _is_int(low) and _is_int(high) and low > high:
            source.add(
                ("available_node_types", name, "min_workers"),
                f"{low} is more than max_workers ({high}) of this node type",
            )
        if _is_int(low):
            least += low
    cap = config.get("max_workers")
    if _is_int(cap) and least > cap:
        source.add(("max_workers",), f"{cap} is less than the node types' min_workers together ({least})")


def _check_on_prem(config: dict[str, Any], provider: dict[str, Any], source: _Source) -> None:
    for key in ("available_node_types", "head_node_type"):
        if config.get(key):
            source.add(
                (key,),
                "not used with provider.type local: Ray makes one node type of provider.head_ip and "
                "provider.worker_ips (size it with the top-level min_workers/max_workers)",
            )
    if "coordinator_address" in provider:
        if "max_workers" not in config:
            source.add(("max_workers",), "required with provider.coordinator_address: how many machines to ask for")
        return
    for key in ("head_ip", "worker_ips"):
        if key not in provider:
            source.add(("provider", key), "required with provider.type local (or give provider.coordinator_address)")


# --- KubeRay manifests --------------------------------------------------------------------------

_INT32 = {"type": "integer", "minimum": 0, "maximum": 2147483647}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_RAY_START_PARAMS = {
    "type": "object",
    "additionalProperties": {
        "type": "string",
        "x-message": "must be a string (rayStartParams is map[string]string: quote numbers)",
    },
}
_NAME = {
    "type": "string",
    "maxLength": 63,
    "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$",
    "x-message": "must be a DNS-1035 label: at most 63 lowercase letters, digits and '-', starting with a letter",
}
_CONTAINER = {
    "type": "object",
    "required": ["name", "image"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "image": {"type": "string", "minLength": 1},
        "resources": {"type": "object"},
        "env": {"type": "array"},
        "ports": {"type": "array"},
    },
}
_POD_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {"type": "array", "minItems": 1, "items": _CONTAINER},
            },
        },
    },
}
# Objects below list the keys KubeRay v1.6 has; unknown keys are allowed (KubeRay adds fields each
# release and the API server is the authority), but one that nearly matches a known key is a typo.
_HEAD_GROUP = {
    "type": "object",
    "required": ["template"],
    "x-near-miss": True,
    "properties": {
        "rayStartParams": _RAY_START_PARAMS,
        "template": _POD_TEMPLATE,
        "headService": {"type": "object"},
        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
        "enableIngress": {"type": "boolean"},
        "resources": _STRING_MAP,
        "labels": _STRING_MAP,
    },
}
_WORKER_GROUP = {
    "type": "object",
    "required": ["groupName", "template"],
    "x-near-miss": True,
    "properties": {
        "groupName": {"type": "string", "minLength": 1},
        "replicas": _INT32,
        "minReplicas": _INT32,
        "maxReplicas": _INT32,
        "numOfHosts": {"type": "integer", "minimum": 1},
        "idleTimeoutSeconds": _INT32,
        "rayStartParams": _RAY_START_PARAMS,
        "template": _POD_TEMPLATE,
        "suspend": {"type": "boolean"},
        "scaleStrategy": {"type": "object"},
        "resources": _STRING_MAP,
        "labels": _STRING_MAP,
    },
}
_CLUSTER_SPEC = {
    "type": "object",
    "required": ["headGroupSpec"],
    "x-near-miss": True,
    "properties": {
        "rayVersion": {"type": "string"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "autoscalerOptions": {
            "type": "object",
            "x-near-miss": True,
            "properties": {
                "idleTimeoutSeconds": _INT32,
                "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
                "version": {"enum": ["v1", "v2"]},
                "resources": {"type": "object"},
                "image": {"type": "string"},
                "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                "env": {"type": "array"},
                "envFrom": {"type": "array"},
                "volumeMounts": {"type": "array"},
                "securityContext": {"type": "object"},
            },
        },
        "authOptions": {
            "type": "object",
            "x-near-miss": True,
            "properties": {
                "mode": {"enum": ["disabled", "token"]},
                "secretName": {"type": "string", "minLength": 1},
                "enableK8sTokenAuth": {"type": "boolean"},
            },
        },
        "headGroupSpec": _HEAD_GROUP,
        "workerGroupSpecs": {"type": "array", "items": _WORKER_GROUP},
        "suspend": {"type": "boolean"},
        "managedBy": {"type": "string"},
        "headServiceAnnotations": _STRING_MAP,
        "gcsFaultToleranceOptions": {"type": "object"},
        "upgradeStrategy": {"type": "object"},
    },
}
_SPECS: dict[str, dict[str, Any]] = {
    "RayCluster": _CLUSTER_SPEC,
    "RayJob": {
        "type": "object",
        "x-near-miss": True,
        "properties": {
            "entrypoint": {"type": "string", "minLength": 1},
            "runtimeEnvYAML": {"type": "string"},
            "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
            "shutdownAfterJobFinishes": {"type": "boolean"},
            "ttlSecondsAfterFinished": _INT32,
            "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
            "backoffLimit": _INT32,
            "rayClusterSpec": _CLUSTER_SPEC,
            "clusterSelector": _STRING_MAP,
            "jobId": {"type": "string"},
            "entrypointNumCpus": {"type": "number", "minimum": 0},
            "entrypointNumGpus": {"type": "number", "minimum": 0},
            "entrypointResources": {"type": "string"},
            "suspend": {"type": "boolean"},
            "submitterPodTemplate": {"type": "object"},
            "submitterConfig": {"type": "object"},
            "deletionStrategy": {"type": "object"},
            "managedBy": {"type": "string"},
            "metadata": _STRING_MAP,
        },
        "if": {"required": ["submissionMode"], "properties": {"submissionMode": {"const": "InteractiveMode"}}},
        "else": {"required": ["entrypoint"]},
    },
    "RayService": {
        "type": "object",
        "required": ["serveConfigV2", "rayClusterConfig"],
        "x-near-miss": True,
        "properties": {
            "serveConfigV2": {"type": "string", "minLength": 1},
            "rayClusterConfig": _CLUSTER_SPEC,
            "serveService": {"type": "object"},
            "upgradeStrategy": {"type": "object"},
            "excludeHeadPodFromServeSvc": {"type": "boolean"},
            "rayClusterDeletionDelaySeconds": _INT32,
        },
    },
}
_KUBERAY_SCHEMAS = {
    kind: {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": _API_VERSION},
            "kind": {"const": kind},
            "spec": spec,
            "status": {"type": "object"},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": _NAME,
                    "namespace": {"type": "string"},
                    "labels": _STRING_MAP,
                    "annotations": _STRING_MAP,
                },
            },
        },
    }
    for kind, spec in _SPECS.items()
}
_OTHER_MANIFEST = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata"],
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}},
        },
    },
}
#: What serveConfigV2 must hold for Ray 2.60's Serve (ServeDeploySchema); deployments ignore unknown keys.
_SERVE_CONFIG = {
    "type": "object",
    "required": ["applications"],
    "properties": {
        "applications": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["import_path"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "route_prefix": {"type": ["string", "null"]},
                    "import_path": {"type": "string", "minLength": 1},
                    "runtime_env": {"type": "object"},
                    "args": {"type": "object"},
                    "deployments": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "num_replicas": {"type": ["integer", "string", "null"]},
                                "max_ongoing_requests": {"type": "integer", "minimum": 1},
                                "max_queued_requests": {"type": "integer", "minimum": -1},
                            },
                        },
                    },
                },
            },
        },
        "http_options": {"type": "object"},
        "proxy_location": {"enum": ["Disabled", "HeadOnly", "EveryNode"]},
    },
}


def _near_misses(validator: Any, enabled: Any, instance: Any, schema: dict[str, Any]) -> Iterable[Any]:
    from jsonschema import ValidationError

    if not enabled or not validator.is_type(instance, "object"):
        return
    known = list(schema.get("properties", {}))
    for key in instance:
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.8) if key not in known else []
        if close:
            yield ValidationError(
                f"unknown key; did you mean '{close[0]}'? (known keys here: {', '.join(known)})", path=[key]
            )


@functools.lru_cache(maxsize=1)
def _kuberay_validator_class() -> Any:
    from jsonschema import Draft202012Validator, validators

    return validators.extend(Draft202012Validator, {"x-near-miss": _near_misses})


def _check_manifest(document: dict[str, Any], source: _Source, text: str) -> None:
    api_version, kind = document.get("apiVersion"), document.get("kind")
    is_ray = kind in _RAY_KINDS or (isinstance(api_version, str) and api_version.startswith("ray.io/"))
    if not is_ray:
        _schema_problems(_kuberay_validator_class()(_OTHER_MANIFEST), document, source)
        return
    if kind not in _RAY_KINDS:
        source.add(("kind",), f"unknown Ray resource {_shown(kind)}; allowed: {', '.join(_RAY_KINDS)}")
        return
    _schema_problems(_kuberay_validator_class()(_KUBERAY_SCHEMAS[kind]), document, source)
    spec = document.get("spec")
    if not isinstance(spec, dict):
        return
    cluster_key = {"RayCluster": None, "RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}[kind]
    cluster = spec if cluster_key is None else spec.get(cluster_key)
    if isinstance(cluster, dict):
        _check_cluster_spec(cluster, ("spec",) if cluster_key is None else ("spec", cluster_key), source)
    if kind == "RayJob":
        _check_ray_job(spec, source, text)
    if kind == "RayService" and isinstance(spec.get("serveConfigV2"), str):
        _check_serve_config(spec["serveConfigV2"], ("spec", "serveConfigV2"), source, text)


def _check_cluster_spec(cluster: dict[str, Any], at: Path_, source: _Source) -> None:
    autoscaling = cluster.get("enableInTreeAutoscaling") is True
    groups = cluster.get("workerGroupSpecs")
    seen: dict[str, int] = {}
    for index, group in enumerate(groups if isinstance(groups, list) else []):
        if not isinstance(group, dict):
            continue
        where = (*at, "workerGroupSpecs", index)
        name = group.get("groupName")
        if isinstance(name, str) and name in seen:
            source.add((*where, "groupName"), f"'{name}' is also worker group {seen[name]}'s name; names must differ")
        elif isinstance(name, str):
            seen[name] = index
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        if not autoscaling:
            for key in ("minReplicas", "maxReplicas"):
                if key not in group:
                    source.add((*where, key), "required when enableInTreeAutoscaling is not true")
        if _is_int(low) and _is_int(high) and low > high:
            source.add((*where, "minReplicas"), f"{low} is more than maxReplicas ({high})")
        replicas = group.get("replicas")
        if _is_int(replicas) and _is_int(high) and replicas > high:
            source.add((*where, "replicas"), f"{replicas} is more than maxReplicas ({high})")
    auth = cluster.get("authOptions")
    if isinstance(auth, dict) and auth.get("mode", "token") == "token":
        version = cluster.get("rayVersion")
        numbers = tuple(int(part) for part in re.findall(r"\d+", version)[:3]) if isinstance(version, str) else ()
        if not numbers:
            source.add(
                (*at, "rayVersion"),
                "required with authOptions (token authentication needs Ray 2.52.0 or "
                "later; KubeRay reads the version here), e.g. '2.60.0'",
            )
        elif numbers < _TOKEN_AUTH_MIN_RAY:
            source.add(
                (*at, "rayVersion"), f"token authentication (authOptions) needs Ray 2.52.0 or later, got {version!r}"
            )


def _check_ray_job(spec: dict[str, Any], source: _Source, text: str) -> None:
    selector = spec.get("clusterSelector")
    if "rayClusterSpec" not in spec and not selector:
        source.add(
            ("spec",),
            "needs rayClusterSpec (a cluster made for this job) or clusterSelector (labels of a "
            "running RayCluster, e.g. ray.io/cluster: NAME)",
        )
    if isinstance(selector, dict) and selector and not selector.get("ray.io/cluster"):
        source.add(("spec", "clusterSelector"), "needs ray.io/cluster: the name of the RayCluster to run on")
    ttl = spec.get("ttlSecondsAfterFinished")
    if _is_int(ttl) and ttl > 0 and spec.get("shutdownAfterJobFinishes") is not True:
        source.add(("spec", "ttlSecondsAfterFinished"), "only applies with shutdownAfterJobFinishes: true")
    if isinstance(spec.get("runtimeEnvYAML"), str):
        _embedded(
            spec["runtimeEnvYAML"],
            ("spec", "runtimeEnvYAML"),
            source,
            text,
            "a runtime_env mapping (pip, env_vars, working_dir, ...)",
        )


def _check_serve_config(value: str, at: Path_, source: _Source, text: str) -> None:
    config = _embedded(value, at, source, text, "a Serve config mapping with applications")
    if not isinstance(config, dict):
        return
    _schema_problems(_kuberay_validator_class()(_SERVE_CONFIG), config, source, at)
    applications = config.get("applications")
    for index, application in enumerate(applications if isinstance(applications, list) else []):
        deployments = application.get("deployments") if isinstance(application, dict) else None
        for number, deployment in enumerate(deployments if isinstance(deployments, list) else []):
            if isinstance(deployment, dict) and "max_concurrent_queries" in deployment:
                source.add(
                    (*at, "applications", index, "deployments", number, "max_concurrent_queries"),
                    "Ray 2.60's Serve ignores this key: it is max_ongoing_requests now",
                )


def _embedded(value: str, at: Path_, source: _Source, text: str, what: str) -> Any:
    """Parse YAML held in a string value; its lines are the file's when it is a literal block (`key: |`)."""
    import yaml

    from raymlp.config.yamlfile import ConfigIssue, _construct, _Source

    key_line = source.lines.get(at, 1)
    lines = text.splitlines()
    literal = key_line <= len(lines) and re.search(r":\s*\|[-+0-9]*\s*(#.*)?$", lines[key_line - 1]) is not None
    try:
        node = yaml.compose("\n" * (key_line if literal else key_line - 1) + value, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if literal and mark else key_line
        problem = getattr(error, "problem", None) or error
        source.issues.append(
            ConfigIssue(f"{source.label}:{line}", ".".join(map(str, at)), f"is not valid YAML: {problem}")
        )
        return None
    inner = _Source(source.label)
    data = _construct(node, at, inner) if node is not None else None
    if not literal:
        inner.lines = {path: key_line for path in inner.lines}
    source.lines.update({path: line for path, line in inner.lines.items() if path != at})
    source.issues += inner.issues
    if not isinstance(data, dict):
        source.add(at, f"must hold {what}, got {_shown(data)}")
        return None
    return data
