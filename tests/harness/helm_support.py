"""Obtain helm and render the chart, for tests/test_helm.py."""
from __future__ import annotations

import base64
import functools
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from support import require

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "dalc"
SUBCHARTS = sorted(path for path in (CHART / "charts").iterdir() if (path / "Chart.yaml").is_file())
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KIND_VALUES = CHART / "values-kind.yaml"
KUBE_VERSION = "1.33.0"
RELEASE = "dalc"
NAMESPACE = "dalc"


@functools.cache
def _locate_helm() -> tuple[str | None, str]:
    """Find helm on PATH or fetch it into .tools/; answer (path, None) or (None, why not)."""
    try:
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "fetch-helm.sh")],
            capture_output=True, text=True, timeout=300, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"scripts/fetch-helm.sh could not run: {exc}"
    path = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not path:
        return None, f"scripts/fetch-helm.sh failed ({done.returncode}): {done.stderr.strip()}"
    return path, ""


def helm_binary() -> str:
    """Return the helm binary; without one, fail under CI=true and skip elsewhere."""
    path, why = _locate_helm()
    require(path is not None, f"helm is not available: {why}")
    return path


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run helm with args from the repository root and return the finished process."""
    done = subprocess.run(
        [helm_binary(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    if check and done.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


def template_args(values_files: tuple[Path, ...] = (), settings: tuple[str, ...] = (),
                  chart: Path = CHART) -> list[str]:
    """Build the arguments of `helm template` for a chart, values files and --set pairs."""
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    for path in values_files:
        args += ["--values", str(path)]
    for setting in settings:
        args += ["--set", setting]
    return args


@functools.cache
def render(values_files: tuple[Path, ...] = (), settings: tuple[str, ...] = (),
           chart: Path = CHART) -> tuple[dict, ...]:
    """Render the chart (hooks and test pods included) and return its objects."""
    done = run_helm(*template_args(values_files, settings, chart))
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def find(objects, kind: str, name: str | None = None) -> list[dict]:
    """Return the objects of a kind, and of a name when one is given."""
    return [obj for obj in objects
            if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)]


def one(objects, kind: str, name: str) -> dict:
    """Return the single object of a kind and name, failing when there is not exactly one."""
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(obj: dict) -> dict | None:
    """Return the pod spec of a workload or pod, or None for other objects."""
    if obj["kind"] == "Pod":
        return obj["spec"]
    if obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def containers(obj: dict, init: bool = True) -> list[dict]:
    """Return the containers (and init containers) of a workload or pod."""
    spec = pod_spec(obj) or {}
    return list(spec.get("containers", [])) + (list(spec.get("initContainers", [])) if init else [])


def env_of(container: dict) -> dict[str, dict]:
    """Return a container's env entries by name."""
    return {entry["name"]: entry for entry in container.get("env", [])}


def secret_data(secret: dict) -> dict[str, str]:
    """Return a Secret's values, decoded."""
    data = {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
    data.update(secret.get("stringData", {}))
    return data


def _custom_models() -> dict[tuple[str, str], type]:
    # Pydantic models generated from the CRDs that the Prometheus Operator and KEDA publish.
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.prometheus_operator import v1 as monitoring

    return {
        ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
        ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule,
        ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
        ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
    }


def validate(obj: dict) -> str:
    """Validate an object strictly: Kubernetes' own kinds against the 1.33 schemas, operators' kinds
    against their CRDs; answer what it was checked against, raise ValueError when it is invalid."""
    model = _custom_models().get((obj["apiVersion"], obj["kind"]))
    if model is None:
        try:
            return kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise ValueError(f"{'.'.join(map(str, exc.path))}: {exc.message}") from exc
        except kubernetes_validate.SchemaNotFoundError as exc:
            raise ValueError(exc.message) from exc
    try:
        parsed = model.model_validate(obj)
    except Exception as exc:  # pydantic's ValidationError, with every wrong field
        raise ValueError(str(exc)) from exc
    # The models ignore fields they do not know: a field lost on the way back is not in the CRD.
    again = parsed.model_dump(by_alias=True, exclude_none=True, mode="json")
    if again != obj:
        raise ValueError(f"fields unknown to the {obj['kind']} CRD: {_lost(obj, again)}")
    return obj["apiVersion"]


def _lost(given, kept, where="") -> list[str]:
    """Return the paths present in `given` but not in `kept`."""
    if isinstance(given, dict) and isinstance(kept, dict):
        return [path for key, value in given.items()
                for path in ([f"{where}.{key}"] if key not in kept else _lost(value, kept[key], f"{where}.{key}"))]
    if isinstance(given, list) and isinstance(kept, list):
        pairs = enumerate(zip(given, kept, strict=False))
        return [path for index, (a, b) in pairs for path in _lost(a, b, f"{where}[{index}]")]
    return [] if given == kept else [f"{where} ({given!r} became {kept!r})"]
