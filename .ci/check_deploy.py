"""Checks of deploy/ that no off-the-shelf tool makes here (no cluster, no
kustomize, no Docker engine): KEDA and Prometheus-operator resources against
the JSON Schemas in deploy/schemas, and cross-references between the files
and the worker's own settings. Exits non-zero on the first kind of failure."""

import json
import pathlib
import re
import subprocess
import sys

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring-servicemonitor",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring-prometheusrule",
}
failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}")


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def schema(name):
    return json.loads((DEPLOY / "schemas" / f"{name}.schema.json").read_text())


def validate(doc, where):
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in SCHEMAS:
        return False
    errors = sorted(jsonschema.Draft202012Validator(schema(SCHEMAS[key])).iter_errors(doc), key=str)
    for e in errors:
        fail(f"{where}: {doc['kind']} {'/'.join(map(str, e.absolute_path))}: {e.message}")
    if not errors:
        print(f"ok   {where}: {doc['kind']}/{doc['metadata']['name']} matches its schema")
    return True


base = DEPLOY / "k8s" / "base"
all_docs = {}
for path in sorted((DEPLOY / "k8s").rglob("*.yaml")):
    for doc in docs(path):
        all_docs.setdefault(doc.get("kind"), []).append((path.relative_to(ROOT), doc))
        validate(doc, path.relative_to(ROOT))

# The schemas must refuse what is wrong, or they check nothing.
bad = docs(base / "scaledobject.yaml")[0]
bad["spec"]["triggers"][0]["metdata"] = bad["spec"]["triggers"][0].pop("metadata")
if not list(jsonschema.Draft202012Validator(schema("keda-scaledobject")).iter_errors(bad)):
    fail("the ScaledObject schema accepts a misspelt `metdata`")

# Every kustomization names files that exist.
for kust in (DEPLOY / "k8s").rglob("kustomization.yaml"):
    k = yaml.safe_load(kust.read_text())
    for ref in k.get("resources", []) + [p["path"] for p in k.get("patches", [])]:
        if not (kust.parent / ref).exists():
            fail(f"{kust.relative_to(ROOT)} names {ref}, which does not exist")
    for gen in k.get("secretGenerator", []):
        for f in gen.get("files", []) + gen.get("envs", []):
            if not (kust.parent / f.split("=")[-1]).exists():
                fail(f"{kust.relative_to(ROOT)} secretGenerator names {f}, which does not exist")

# KEDA: the formula uses only trigger names; authenticationRefs exist.
auths = {d["metadata"]["name"] for _, d in all_docs.get("TriggerAuthentication", [])}
for where, so in all_docs.get("ScaledObject", []):
    names = {t.get("name") for t in so["spec"]["triggers"]}
    formula = so["spec"].get("advanced", {}).get("scalingModifiers", {}).get("formula", "")
    for ident in set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", formula)):
        if ident not in names:
            fail(f"{where}: formula uses `{ident}`, which is no trigger's name")
    for t in so["spec"]["triggers"]:
        ref = t.get("authenticationRef", {}).get("name")
        if ref and ref not in auths:
            fail(f"{where}: trigger {t.get('name')} uses TriggerAuthentication {ref}, which is not defined")

# Settings in the ConfigMap and the URL Secret are settings the worker knows.
help_text = subprocess.run(
    [str(ROOT / "target" / "debug" / "notify-worker"), "run", "--help"],
    capture_output=True, text=True, check=True, env={},
).stdout
config = yaml.safe_load((base / "configmap.yaml").read_text())["data"]
env_file = DEPLOY / "k8s" / "overlays" / "example" / "secrets" / "urls.env"
env_keys = [line.split("=", 1)[0] for line in env_file.read_text().splitlines() if "=" in line]
for key in list(config) + env_keys:
    # OTEL_* are OpenTelemetry's own variables, read by its SDK.
    if key not in help_text and not key.startswith("OTEL_"):
        fail(f"setting {key} is not a notify-worker setting")

# The grace period outlasts the drain.
deployment = docs(base / "deployment.yaml")[0]
grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
if grace <= int(config["NOTIFY_DRAIN_TIMEOUT_SECS"]):
    fail(f"terminationGracePeriodSeconds {grace} is not above NOTIFY_DRAIN_TIMEOUT_SECS")

# Compose: the worker's environment names real settings too.
compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
for key in compose["services"]["worker"]["environment"]:
    if key not in help_text:
        fail(f"compose.yaml: {key} is not a notify-worker setting")

if failures:
    sys.exit(f"{len(failures)} deploy check(s) failed")
print("deploy checks passed")
