"""Upgrading a release with QuantizationJobs in flight, the CRD step Helm leaves to the user, and
`helm uninstall` with QuantizationJobs present: what helm/kubeslim/README.md says, done here.

The previous release is the chart of PREVIOUS (the last commit before the chart gained
imagePullSecrets, PDB, NetworkPolicy and the webIdentity / verification.custom fields), packaged
from `git archive`, pushed to the devenv registry and installed from there, running this
checkout's operator and job images; `helm upgrade` moves to this checkout's chart, pushed the same
way. Why not PREVIOUS's own operator image: built from its Dockerfile (offline, in seconds) it
runs, but refuses every QuantizationJob with InvalidSpec ("spec.quantization.speedAware: Extra
inputs are not permitted") because the devenv's CRD is the current one, which defaults fields that
operator's spec model does not know, and the CRD is shared by everything on the devenv, so it
cannot be taken back to PREVIOUS's. (That is also why the chart README says to upgrade the release
before the CRD.) kwok pods write the result message of the current contract.

One flow per module (the `upgraded` fixture), asserted from three sides:
  1. install PREVIOUS's packaged chart; 2 digits runs on the real node and 20 QuantizationJobs on
     kwok (pods finishing 40-97 s after they start, so during and after the rollout); then
     `helm upgrade` to this checkout's packaged chart and images while they run, 2 more applied
     during the rollout: one Job per QuantizationJob, every one final with its own result;
  2. Helm leaves crds/ alone on upgrade; `kubectl apply --server-side --force-conflicts -f crds/` makes a field
     PREVIOUS's CRD lacks (spec.storage.credentials.webIdentity) usable;
  3. `helm uninstall` with QuantizationJobs present: the CRD, the QuantizationJobs and their Jobs
     stay; a Job still running finishes under the Job controller while its QuantizationJob's
     status stands still; an operator installed again writes the result.

The real CRD (kubeslim.io) is the current one throughout, for the reason above. Part 2 ships each
chart with its own CRD renamed to a group of this run (same schema, another group, no short
names), which only this test uses.

Figures: pytest -s prints them; with KUBESLIM_UPGRADE_RESULTS=<path> they are also written there
as JSON (bench/results/upgrade.json holds a run). Run under the shared real-node lock:

    KUBESLIM_UPGRADE_RESULTS=bench/results/upgrade.json \\
      flock -s /tmp/kubeslim-node.lock .venv/bin/python -m pytest tests/e2e/test_upgrade.py -p no:cacheprovider -s
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from kubeslim_api.contract import StageResult, encode
from kubeslim_dev import demo
from tests.cluster.operator_harness import ARTIFACTS, RESULTS, crd, fake, qj_manifest  # noqa: F401
from tests.e2e.conftest import BUCKET
from tests.e2e.test_operator_ha import jobs_by_owner

REPO = Path(__file__).resolve().parents[2]
PREVIOUS = "dc32adc1f88d011ebb3b04f9be6be53a50c94bf8"
REAL_GROUP = "kubeslim.io"
FINAL = ("Succeeded", "Failed")
KWOK_QJS, REAL_QJS, DURING_ROLLOUT_QJS = 20, 2, 2

# Setup may rebuild the images (devenv/images.sh: minutes when the code changed) before the flow itself (about 3 min).
pytestmark = pytest.mark.timeout(1200)


def _cpu_model() -> str:
    """bench_pipeline's CPU line (model and int8 instruction sets), which every figure carries."""
    spec = importlib.util.spec_from_file_location("bench_pipeline", REPO / "bench" / "bench_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._cpu_model()


def run(*cmd: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


# -- the two charts and the previous operator image --------------------------------------------

def renamed_crd(crd_file: Path, group: str) -> dict:
    """The QuantizationJob CRD of crd_file with its group replaced: same schema, a name of its own."""
    doc = yaml.safe_load(crd_file.read_text())
    doc["metadata"]["name"] = f"{doc['spec']['names']['plural']}.{group}"
    doc["spec"]["group"] = group
    # Not `kubectl get qj` nor `get all`-style categories: those stay the real CRD's alone.
    doc["spec"]["names"].pop("shortNames", None)
    doc["spec"]["names"].pop("categories", None)
    return doc


def package_chart(helm: str, chart_dir: Path, version: str, crd_group: str, out: Path) -> Path:
    """`helm package` of chart_dir with its crds/ holding the CRD renamed to crd_group (see the
    module docstring), at chart version `version`."""
    crds = chart_dir / "crds"
    (crd_file,) = crds.glob("*.yaml")
    renamed = renamed_crd(crd_file, crd_group)
    shutil.rmtree(crds)
    crds.mkdir()
    (crds / f"{renamed['metadata']['name']}.yaml").write_text(yaml.safe_dump(renamed, sort_keys=False))
    out.mkdir(parents=True, exist_ok=True)
    # "Successfully packaged chart and saved it to: <path>"
    return Path(run(helm, "package", str(chart_dir), "--version", version, "-d", str(out)).stdout.strip().rsplit(" ", 1)[-1])


def images_env(devenv) -> dict[str, str]:
    """What devenv/images.sh wrote last (the node_images fixture runs it first)."""
    return dict(line.split("=", 1) for line in (devenv.dir / "images.env").read_text().splitlines() if "=" in line)


def git_archive(commit: str, dest: Path, *paths: str) -> None:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, *paths], capture_output=True, check=True).stdout
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")


@pytest.fixture(scope="module")
def charts(devenv, node_images, tmp_path_factory) -> dict:
    """Both charts packaged and pushed to the devenv registry (oci://<registry>/kubeslim-upgrade-test,
    versions of this run: each carries this run's renamed CRD), installed from there as a user
    installs a released chart."""
    tmp = tmp_path_factory.mktemp("upgrade-charts")
    run_id = uuid.uuid4().hex[:6]
    group = f"upgrade-{run_id}.kubeslim.test"
    git_archive(PREVIOUS, tmp / "previous", "helm/kubeslim")
    previous_src, current_src = tmp / "previous" / "helm" / "kubeslim", tmp / "current" / "helm" / "kubeslim"
    shutil.copytree(REPO / "helm" / "kubeslim", current_src)
    repo = f"oci://{images_env(devenv)['KUBESLIM_REGISTRY']}/kubeslim-upgrade-test"
    charts = {"group": group, "current_crds": current_src / "crds", "previous_crds": previous_src / "crds"}
    # SemVer forbids a numeric pre-release identifier with a leading zero, and a hex run id or
    # commit prefix is all digits now and then ("082723" failed a CI run): each gets a letter.
    for which, src, suffix in (("previous", previous_src, f"previous.g{PREVIOUS[:7]}.r{run_id}"), ("current", current_src, f"current.r{run_id}")):
        version = f"{yaml.safe_load((src / 'Chart.yaml').read_text())['version']}-{suffix}"
        package = package_chart(devenv.helm, src, version, group, tmp / f"pkg-{which}")
        run(devenv.helm, "push", str(package), repo, "--plain-http")
        charts[which] = ["oci://" + f"{repo[len('oci://'):]}/kubeslim", "--version", version, "--plain-http"]
        charts[f"{which}_version"] = version
    yield charts
    subprocess.run([devenv.kubectl, "--kubeconfig", str(devenv.kubeconfig), "delete", "crd", f"quantizationjobs.{group}",
                    "--ignore-not-found", "--wait=false"], capture_output=True)


# -- the flow ----------------------------------------------------------------------------------

def kwok_result_message(i: int) -> str:
    """A verify result of its own per QuantizationJob (int8 top-1 0.7001, 0.7002, ...): a result
    delivered to the wrong QuantizationJob cannot pass for the right one."""
    results = RESULTS.model_copy(update={"int8": RESULTS.int8.model_copy(update={"top1": expected_top1(i)})})
    return encode(StageResult(stage="verify", ok=True, results=results, artifacts=ARTIFACTS))


def expected_top1(i: int) -> float:
    return round(0.7 + (i + 1) / 10000, 4)


def kwok_qjs(namespace: str, prefix: str, count: int, first_seconds: int, step_seconds: int,
             first_result: int = 0) -> tuple[list[dict], dict[str, float]]:
    """`count` kwok QuantizationJobs whose pods run first_seconds, first_seconds + step_seconds, ...
    before finishing with results first_result, first_result + 1, ...; and {name: expected int8 top-1}."""
    docs, expected = [], {}
    for i in range(count):
        name = f"{prefix}{i:02d}"
        docs.append(qj_manifest(name, namespace, annotations=fake(
            exit_code=0, message=kwok_result_message(first_result + i), container="verify",
            duration=f"{first_seconds + step_seconds * i}s")))
        expected[name] = expected_top1(first_result + i)
    return docs, expected


def apply_docs(kubectl, namespace: str, docs: list[dict]) -> None:
    kubectl("-n", namespace, "apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))


def qjs(kubectl, namespace: str) -> dict[str, dict]:
    items = json.loads(kubectl("-n", namespace, "get", "qj", "-o", "json").stdout)["items"]
    return {q["metadata"]["name"]: q for q in items}


def phases(kubectl, namespace: str) -> dict[str, str]:
    return {n: (q.get("status") or {}).get("phase", "") for n, q in qjs(kubectl, namespace).items()}


def operator_pod_images(kubectl, namespace: str, release: str) -> set[str]:
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-l", f"app.kubernetes.io/instance={release}", "-o", "json").stdout)["items"]
    return {c["image"] for p in pods if not p["metadata"].get("deletionTimestamp") for c in p["spec"]["containers"]}


def s3_json(s3, uri: str) -> dict:
    bucket, key = uri[len("s3://"):].split("/", 1)
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def wrong_real_result(s3, qj: dict, output_uri: str) -> str:
    """'' when the status holds what the run's own report.json in S3 says, else what differs."""
    st = qj.get("status") or {}
    res, art = st.get("results") or {}, st.get("artifacts") or {}
    if not art.get("reportJson", "").startswith(output_uri):
        return f"report {art.get('reportJson')!r} not under {output_uri}"
    report = s3_json(s3, art["reportJson"])["results"]
    for path in (("fp32", "top1"), ("int8", "top1"), ("int8", "algo"), ("accuracyDrop",)):
        mine, theirs = res, report
        for key in path:
            mine, theirs = (mine or {}).get(key), (theirs or {}).get(key)
        if mine is None or (mine != theirs if isinstance(mine, str) else abs(mine - theirs) > 1e-6):
            return f"{'.'.join(path)}: status {mine!r}, report {theirs!r}"
    return ""


@pytest.fixture(scope="module")
def upgraded(devenv, crd, charts, node_images, real_node, seeded, s3_env, kubectl, wait_for):
    """The whole upgrade (module docstring, part 1); yields what the tests check and the figures."""
    ns = f"upgrade-{uuid.uuid4().hex[:6]}"
    release = f"up-{ns[-6:]}"
    helm = [devenv.helm, "--kubeconfig", str(devenv.kubeconfig), "-n", ns]
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": ns, "labels": {"kubeslim.io/test": "true"}}}))
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": ns},
              "stringData": {"AWS_ACCESS_KEY_ID": s3_env["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": s3_env["AWS_SECRET_ACCESS_KEY"]}}
    kubectl("apply", "-f", "-", input=json.dumps(secret))
    common = ["-f", str(REPO / "devenv" / "chart-values.yaml"), "--set", f"operator.watchNamespaces={{{ns}}}",
              "--wait", "--timeout", "180s"]
    # PREVIOUS's chart knows no image.digest (its schema refuses the key): each image as
    # tag@digest, which its repository:tag rendering turns into a reference that pins the digest.
    values = yaml.safe_load(node_images.values_file.read_text())
    previous_images = [arg for part in ("operator", "job") for arg in (
        "--set", f"{part}.image.repository={values[part]['image']['repository']}",
        "--set", f"{part}.image.tag={values[part]['image']['tag']}@{values[part]['image']['digest']}")]
    previous_operator_image = f"{values['operator']['image']['repository']}:{values['operator']['image']['tag']}@{values['operator']['image']['digest']}"
    state = {"namespace": ns, "release": release, "helm": helm, "common": common, "group": charts["group"]}
    try:
        t0 = time.monotonic()
        run(*helm, "install", release, *charts["previous"], *common, *previous_images)
        install_seconds = time.monotonic() - t0
        assert operator_pod_images(kubectl, ns, release) == {previous_operator_image}

        # 2 digits runs on the real node first, then, once one is under way, 20 on kwok whose pods
        # finish 40-97 s after they start: all of them in flight when the upgrade begins.
        real: dict[str, str] = {}
        real_docs = []
        for i in range(REAL_QJS):
            name = f"real-{i}"
            doc = demo.example_manifest(name, BUCKET, s3_env["AWS_ENDPOINT_URL"])
            doc["metadata"]["namespace"] = ns
            doc["spec"]["output"]["uri"] = real[name] = f"s3://{BUCKET}/out/{ns}/{name}/"
            doc["spec"]["quantization"]["algos"] = ["avg"]
            doc["spec"]["scheduling"] = real_node.scheduling
            real_docs.append(doc)
        applied = time.monotonic()
        apply_docs(kubectl, ns, real_docs)
        # Not both Running: the real node's 2 CPUs hold one 1-CPU run beside the operators of
        # other sessions' releases, so the second may wait for the first (Pending: in flight too).
        wait_for(lambda: any(phases(kubectl, ns).get(n) in ("Running", *FINAL) for n in real), timeout=180, what="a real run under way")
        docs, expected = kwok_qjs(ns, "kwok-", KWOK_QJS, first_seconds=40, step_seconds=3)
        apply_docs(kubectl, ns, docs)
        wait_for(lambda: len(jobs_by_owner(kubectl, ns)) == KWOK_QJS + REAL_QJS, timeout=120, what="a Job for each QuantizationJob")

        before = phases(kubectl, ns)
        in_flight = sorted(n for n, p in before.items() if p not in FINAL)
        upgrade_started = time.monotonic()
        upgrade = subprocess.Popen([*helm, "upgrade", release, *charts["current"], *common, "-f", str(node_images.values_file)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Applied while the rollout replaces the operator's pods.
        during_docs, during_expected = kwok_qjs(ns, "during-", DURING_ROLLOUT_QJS, first_seconds=5, step_seconds=5,
                                                first_result=KWOK_QJS)
        apply_docs(kubectl, ns, during_docs)
        expected.update(during_expected)
        out, err = upgrade.communicate(timeout=300)
        assert upgrade.returncode == 0, f"helm upgrade failed:\n{out}\n{err}"
        upgrade_seconds = time.monotonic() - upgrade_started
        assert operator_pod_images(kubectl, ns, release) == {node_images.operator}
        final_at_upgrade_end = sum(p in FINAL for p in phases(kubectl, ns).values())

        def all_final():
            now = phases(kubectl, ns)
            return len(now) == len(expected) + len(real) and all(p in FINAL for p in now.values())
        try:
            wait_for(all_final, timeout=300, interval=1, what="every QuantizationJob final")
        except TimeoutError:
            pass   # counted as lost below, with the figures recorded first
        all_final_seconds = time.monotonic() - upgrade_started

        items = qjs(kubectl, ns)
        owners = jobs_by_owner(kubectl, ns)
        uids = {n: q["metadata"]["uid"] for n, q in items.items()}
        duplicates = sum(len(owners.get(uid, [])) - 1 for uid in uids.values() if len(owners.get(uid, [])) > 1)
        strays = sum(len(v) for uid, v in owners.items() if uid not in uids.values())
        lost = sorted(n for n in [*expected, *real] if (items.get(n, {}).get("status") or {}).get("phase") not in FINAL
                      or not (items[n]["status"].get("results")))
        wrong = {}
        for name, top1 in expected.items():
            st = (items.get(name) or {}).get("status") or {}
            got = ((st.get("results") or {}).get("int8") or {}).get("top1")
            if name not in lost and (st.get("phase") != "Succeeded" or got != top1 or st.get("jobName") != f"{name}-g1"):
                wrong[name] = f"phase {st.get('phase')}, int8 top1 {got} (expected {top1}), job {st.get('jobName')}"
        for name, uri in real.items():
            if name not in lost:
                st = items[name]["status"]
                why = "" if st.get("phase") == "Succeeded" else f"phase {st.get('phase')} {st.get('reason')}: {st.get('message')}"
                wrong[name] = why or wrong_real_result(seeded, items[name], uri)
        wrong = {n: w for n, w in wrong.items() if w}

        figures = {
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cpu": _cpu_model(),
            "machine": {"cpus": os.cpu_count(), "note": "2 cores shared with the devenv and other engineers' test runs"},
            "from": {"commit": PREVIOUS, "chart": " ".join(charts["previous"][:3]), "operator_image": previous_operator_image,
                     "note": "the current operator image under PREVIOUS's chart (see the module docstring)"},
            "to": {"chart": " ".join(charts["current"][:3]), "operator_image": node_images.operator},
            "job_image": node_images.job,
            "replicas": 2,
            "quantization_jobs": {"kwok": KWOK_QJS, "real_node": REAL_QJS, "applied_during_rollout": DURING_ROLLOUT_QJS},
            "in_flight_at_upgrade": len(in_flight),
            "real_node_in_flight_at_upgrade": sum(n in in_flight for n in real),
            "final_when_helm_upgrade_returned": final_at_upgrade_end,
            "duplicate_jobs": duplicates,
            "jobs_without_quantizationjob": strays,
            "lost": len(lost),
            "wrong_results": len(wrong),
            "seconds": {"helm_install_previous": round(install_seconds, 1),
                        "apply_to_upgrade": round(upgrade_started - applied, 1),
                        "helm_upgrade_wait": round(upgrade_seconds, 1),
                        "upgrade_to_all_final": round(all_final_seconds, 1)},
        }
        print("\nupgrade figures:", json.dumps(figures, indent=1))
        if out_path := os.environ.get("KUBESLIM_UPGRADE_RESULTS"):
            Path(out_path).write_text(json.dumps(figures, indent=2) + "\n")
        state.update(figures=figures, lost=lost, wrong=wrong, owners=owners, uids=uids, expected=expected, real=real)
        yield state
    finally:
        subprocess.run([*helm, "uninstall", release, "--wait"], capture_output=True)
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


# -- 1. jobs in flight ---------------------------------------------------------------------------

def test_upgrade_mid_run_loses_and_duplicates_nothing(upgraded):
    fig = upgraded["figures"]
    assert fig["in_flight_at_upgrade"] >= KWOK_QJS, "the upgrade did not happen mid-run (kwok pods finished before it)"
    assert fig["real_node_in_flight_at_upgrade"] == REAL_QJS
    assert upgraded["lost"] == [], f"not final or without results after the upgrade: {upgraded['lost']}"
    assert fig["duplicate_jobs"] == 0 and fig["jobs_without_quantizationjob"] == 0, upgraded["owners"]
    assert upgraded["wrong"] == {}
    # Exactly one Job per QuantizationJob, the first generation's.
    assert sorted(upgraded["owners"]) == sorted(upgraded["uids"].values())


# -- 2. the CRD step ---------------------------------------------------------------------------

def web_identity_qj(group: str, namespace: str, name: str) -> dict:
    doc = qj_manifest(name, namespace, storage={"credentials": {"webIdentity": {"roleArn": "arn:aws:iam::123456789012:role/quantize"}}})
    doc["apiVersion"] = f"{group}/v1alpha1"
    return doc


def test_crd_field_usable_only_after_server_side_apply_of_crds(upgraded, charts, kubectl):
    group, ns = charts["group"], upgraded["namespace"]
    # PREVIOUS's CRD lacks the field; the current chart's has it (what the step is for).
    assert "credentials" not in renamed_crd(next(charts["previous_crds"].glob("*.yaml")), group)["spec"]["versions"][0] \
        ["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["storage"]["properties"]
    crd_name = f"quantizationjobs.{group}"

    def storage_props() -> dict:
        crd_now = json.loads(kubectl("get", "crd", crd_name, "-o", "json").stdout)
        return crd_now["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["storage"]["properties"]

    # helm install created PREVIOUS's CRD; helm upgrade (done) left it as it was.
    assert "credentials" not in storage_props()
    doc = web_identity_qj(group, ns, "wi-before")
    refused = kubectl("apply", "-f", "-", input=json.dumps(doc), check=False)
    assert refused.returncode != 0 and "credentials" in refused.stderr, refused.stderr
    # A client that does not validate (--validate=false) is not refused: the field is dropped.
    kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(doc))
    kept = json.loads(kubectl("-n", ns, "get", f"quantizationjobs.{group}", "wi-before", "-o", "json").stdout)["spec"]
    assert "credentials" not in kept.get("storage", {})

    # The documented step.
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(charts["current_crds"]))
    kubectl("wait", "--for=condition=Established", f"crd/{crd_name}", "--timeout=60s")
    assert "credentials" in storage_props()
    doc = web_identity_qj(group, ns, "wi-after")
    kubectl("apply", "-f", "-", input=json.dumps(doc))
    spec = json.loads(kubectl("-n", ns, "get", f"quantizationjobs.{group}", "wi-after", "-o", "json").stdout)["spec"]
    # Kept, and defaulted by the new schema (audience).
    assert spec["storage"]["credentials"] == {"webIdentity": {"roleArn": "arn:aws:iam::123456789012:role/quantize",
                                                              "audience": "sts.amazonaws.com"}}


# -- 3. helm uninstall with QuantizationJobs present --------------------------------------------

def test_uninstall_keeps_crd_quantizationjobs_and_jobs(upgraded, charts, node_images, kubectl, wait_for):
    ns, release, helm = upgraded["namespace"], upgraded["release"], upgraded["helm"]
    group = charts["group"]
    # One still running when the operator goes.
    docs, orphan_expected = kwok_qjs(ns, "orphan-", 1, first_seconds=40, step_seconds=0, first_result=KWOK_QJS + DURING_ROLLOUT_QJS)
    apply_docs(kubectl, ns, docs)
    wait_for(lambda: phases(kubectl, ns).get("orphan-00") == "Running", timeout=60, what="orphan-00 Running")
    # An object of the CRD this release's helm install created (from its crds/).
    kept = qj_manifest("kept", ns)
    kept["apiVersion"] = f"{group}/v1alpha1"
    kubectl("apply", "-f", "-", input=json.dumps(kept))
    before = qjs(kubectl, ns)
    jobs_before = {j for names in jobs_by_owner(kubectl, ns).values() for j in names}

    run(*helm, "uninstall", release, "--wait")
    assert operator_pod_images(kubectl, ns, release) == set()
    for kind in ("deployment", "serviceaccount", "role", "rolebinding", "clusterrole", "clusterrolebinding",
                 "validatingadmissionpolicy", "validatingadmissionpolicybinding"):
        assert kubectl("-n", ns, "get", kind, "-l", f"app.kubernetes.io/instance={release}", "-o", "name").stdout.strip() == "", kind
    # crds/ is never deleted: the CRD this release's helm install created is still there, with its objects.
    assert kubectl("get", "crd", f"quantizationjobs.{group}", check=False).returncode == 0
    assert kubectl("-n", ns, "get", f"quantizationjobs.{group}", "kept", check=False).returncode == 0
    after = qjs(kubectl, ns)
    assert sorted(after) == sorted(before)
    assert {n: q.get("status") for n, q in after.items() if n != "orphan-00"} == \
           {n: q.get("status") for n, q in before.items() if n != "orphan-00"}
    assert {j for names in jobs_by_owner(kubectl, ns).values() for j in names} == jobs_before

    # The running Job finishes under the Job controller; nobody writes its QuantizationJob's status.
    def complete() -> bool:
        job = json.loads(kubectl("-n", ns, "get", "job", "orphan-00-g1", "-o", "json").stdout)
        return any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"].get("conditions", []))
    wait_for(complete, timeout=90, interval=1, what="orphan-00-g1 Complete")
    time.sleep(3)
    assert phases(kubectl, ns)["orphan-00"] == "Running"

    # An operator installed again reads the finished Job: the result arrives, still one Job.
    run(*helm, "install", release, *charts["current"], *upgraded["common"], "-f", str(node_images.values_file))
    wait_for(lambda: phases(kubectl, ns)["orphan-00"] == "Succeeded", timeout=90, what="orphan-00 Succeeded after reinstall")
    st = qjs(kubectl, ns)["orphan-00"]["status"]
    assert st["results"]["int8"]["top1"] == orphan_expected["orphan-00"] and st["jobName"] == "orphan-00-g1"
    assert len(jobs_by_owner(kubectl, ns)[qjs(kubectl, ns)["orphan-00"]["metadata"]["uid"]]) == 1
