#!/usr/bin/env python3
"""Validates deploy/kubernetes offline: no cluster, no kubectl, no network.

1. Every manifest under base/ against the Kubernetes OpenAPI schemas bundled in the PyPI
   package kubernetes-validate (strict: unknown fields are errors), at KUBERNETES_VERSION.
   Custom resources (Strimzi's Kafka and KafkaNodePool, KEDA's ScaledObject and
   TriggerAuthentication, cert-manager's Issuer and Certificate) have no bundled schema; their required fields are checked here, from
   the operators' documentation.
2. Every kustomization (base and overlays): its resources and generator files exist, each
   patch targets a resource of the base by kind and name, and each JSON-patch path exists in
   that resource.

Usage: validate.py [deploy/kubernetes]; exits 1 with every problem listed.
"""

import pathlib
import sys

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.31.0"

# Custom resources: (apiVersion, kind) -> required dotted paths.
CUSTOM_RESOURCES = {
    ("kafka.strimzi.io/v1beta2", "Kafka"): ["spec.kafka.listeners", "spec.kafka.version"],
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): [
        "metadata.labels.strimzi.io/cluster",
        "spec.replicas",
        "spec.roles",
        "spec.storage",
    ],
    ("keda.sh/v1alpha1", "ScaledObject"): ["spec.scaleTargetRef.name", "spec.triggers"],
    ("keda.sh/v1alpha1", "TriggerAuthentication"): ["spec.secretTargetRef"],
    ("cert-manager.io/v1", "Issuer"): [],
    ("cert-manager.io/v1", "Certificate"): ["spec.secretName", "spec.issuerRef.name"],
}


def lookup(document, dotted):
    """Follows a dotted path; a key may itself hold dots (label names), tried greedily."""
    node, parts = document, dotted.split(".")
    while parts:
        if not isinstance(node, dict):
            return None
        for take in range(len(parts), 0, -1):
            key = ".".join(parts[:take])
            if key in node:
                node, parts = node[key], parts[take:]
                break
        else:
            return None
    return node


def json_pointer(document, pointer):
    node = document
    for token in pointer.strip("/").split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            if not token.isdigit() or int(token) >= len(node):
                return False, None
            node = node[int(token)]
        elif isinstance(node, dict) and token in node:
            node = node[token]
        else:
            return False, None
    return True, node


def load_documents(path):
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def validate_manifest(path, document, problems):
    key = (document.get("apiVersion"), document.get("kind"))
    where = f"{path}: {key[1]} {document.get('metadata', {}).get('name')}"
    if key in CUSTOM_RESOURCES:
        for required in CUSTOM_RESOURCES[key]:
            if lookup(document, required) in (None, [], {}):
                problems.append(f"{where}: missing {required}")
        return
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        problems.append(f"{where}: {error.message} at {'.'.join(map(str, error.path))}")
    except kubernetes_validate.SchemaNotFoundError as error:
        problems.append(f"{where}: no schema ({error})")


def resources_of(kustomization_dir, problems, seen=None):
    """Every resource document a kustomization (and the ones it includes) brings in."""
    seen = seen if seen is not None else set()
    kustomization_path = kustomization_dir / "kustomization.yaml"
    kustomization = yaml.safe_load(kustomization_path.read_text())
    documents = []
    for entry in kustomization.get("resources", []):
        target = (kustomization_dir / entry).resolve()
        if target in seen:
            continue
        seen.add(target)
        if target.is_dir() and (target / "kustomization.yaml").exists():
            documents += resources_of(target, problems, seen)
        elif target.is_file():
            documents += [(target, document) for document in load_documents(target)]
        else:
            problems.append(f"{kustomization_path}: resource {entry} does not exist")
    for generator in kustomization.get("configMapGenerator", []):
        for entry in generator.get("files", []):
            source = entry.split("=", 1)[-1]
            if not (kustomization_dir / source).is_file():
                problems.append(f"{kustomization_path}: generator file {source} does not exist")
    return documents


def check_patches(kustomization_dir, documents, problems):
    kustomization_path = kustomization_dir / "kustomization.yaml"
    kustomization = yaml.safe_load(kustomization_path.read_text())
    by_kind_name = {
        (document.get("kind"), document.get("metadata", {}).get("name")): document for _, document in documents
    }
    for patch in kustomization.get("patches", []):
        if "path" in patch:
            for document in load_documents(kustomization_dir / patch["path"]):
                key = (document.get("kind"), document.get("metadata", {}).get("name"))
                if key not in by_kind_name:
                    problems.append(f"{kustomization_path}: patch {patch['path']} targets no resource {key}")
            continue
        target = patch.get("target", {})
        key = (target.get("kind"), target.get("name"))
        resource = by_kind_name.get(key)
        if resource is None:
            problems.append(f"{kustomization_path}: patch targets no resource {key}")
            continue
        for operation in yaml.safe_load(patch["patch"]):
            if operation["op"] in ("replace", "remove", "test"):
                found, _ = json_pointer(resource, operation["path"])
                if not found:
                    problems.append(f"{kustomization_path}: {key} has no {operation['path']}")


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent)
    problems = []
    base = root / "base"
    base_documents = resources_of(base, problems)
    for path, document in base_documents:
        validate_manifest(path, document, problems)
    kustomizations = [base] + sorted(path.parent for path in (root / "overlays").glob("*/kustomization.yaml"))
    for directory in kustomizations:
        documents = resources_of(directory, problems)
        check_patches(directory, documents, problems)
    for problem in problems:
        print(f"invalid: {problem}", file=sys.stderr)
    print(
        f"kubernetes: {len(base_documents)} manifests against Kubernetes {KUBERNETES_VERSION}, "
        f"{len(kustomizations)} kustomizations: {'ok' if not problems else f'{len(problems)} problems'}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
