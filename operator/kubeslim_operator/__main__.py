"""`kubeslim-operator`: run the operator (kopf, no peering; with --leader-elect, one of several replicas).

    kubeslim-operator                 # every namespace (or KUBESLIM_NAMESPACES=a,b)
    kubeslim-operator -n ml -n team2  # only these namespaces
    kubeslim-operator --leader-elect  # reconcile only while holding the Lease (leader.py)
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from . import logfmt
from .config import ConfigError, OperatorConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="kubeslim-operator", description=__doc__.splitlines()[0])
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], help="serve this namespace (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="serve every namespace (the default)")
    p.add_argument("--liveness", default=None, help="liveness endpoint URL, e.g. http://0.0.0.0:8080/healthz ('' = off)")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (0 = off)")
    p.add_argument("--job-image", default=None, help="the image the Job's pods run (KUBESLIM_JOB_IMAGE)")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (KUBESLIM_LOG_LEVEL)")
    p.add_argument("--leader-elect", action="store_true", default=None,
                   help="stand by until this replica holds the Lease (KUBESLIM_LEADER_ELECTION=true)")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace, env: dict[str, str] | None = None) -> OperatorConfig:
    config = OperatorConfig.from_env(env)
    changes: dict = {}
    if args.namespace:
        changes["namespaces"] = tuple(sorted(set(args.namespace)))
    elif args.all_namespaces:
        changes["namespaces"] = ()
    if args.liveness is not None:
        changes["liveness_endpoint"] = args.liveness
    if args.metrics_port is not None:
        changes["metrics_port"] = args.metrics_port
    if args.job_image:
        changes["job_image"] = args.job_image
    if args.log_level:
        changes["log_level"] = args.log_level.upper()
    if args.leader_elect:
        if not config.leader_election_namespace:
            raise ConfigError("--leader-elect needs KUBESLIM_LEADER_ELECTION_NAMESPACE (the Lease's namespace)")
        changes["leader_election"] = True
    return config.model_copy(update=changes)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = build_config(args)
    except ConfigError as exc:
        print(f"kubeslim-operator: {exc}", file=sys.stderr)
        return 2
    logfmt.configure(config.log_level, config.log_format)
    # kopf narrates every watch event at DEBUG/INFO; keep its own chatter to warnings unless debugging.
    logging.getLogger("kopf").setLevel(logging.DEBUG if config.log_level == "DEBUG" else logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    # kopf imports the kubernetes client only to learn whether it is installed (for its default
    # login handlers); this operator logs in without it, and the import costs ~25 MB of RSS.
    if not os.environ.get("KUBESLIM_ALLOW_KUBERNETES_CLIENT"):
        sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
    from .memory import limit_arenas
    limit_arenas()

    import kopf

    from . import main as handlers  # noqa: F401  (importing it registers them with kopf)

    logging.getLogger("kubeslim_operator").info(
        "starting: image=%s namespaces=%s", config.job_image, ",".join(config.namespaces) or "<all>")
    if config.leader_election:
        return asyncio.run(_elected(config))
    kopf.run(standalone=True, clusterwide=not config.namespaces, namespaces=list(config.namespaces),
             liveness_endpoint=config.liveness_endpoint or None, memo=kopf.Memo(config=config))
    return 0


async def _elected(config: OperatorConfig) -> int:
    """kopf under the Lease: the probes and metrics are served from the start (a standby is a
    healthy replica, not a dead one); kopf runs only while this replica leads."""
    import kopf

    from . import leader, metrics
    from .kube import Kube
    from .main import login_info

    settings = kopf.OperatorSettings()
    info = login_info(settings=settings, logger=logging.getLogger("kubeslim_operator"))
    if info is None:
        print("kubeslim-operator: no in-cluster ServiceAccount and no kubeconfig to log in with", file=sys.stderr)
        return 2
    kube = Kube(info, concurrency=leader.ELECTOR_CONNECTIONS, relogin=lambda: login_info(settings=settings))
    elector = leader.LeaderElector(
        kube, config.leader_election_namespace, config.leader_election_name, leader.identity(),
        lease_duration=config.lease_duration_seconds, renew_deadline=config.renew_deadline_seconds,
        retry_period=config.retry_period_seconds)
    metrics.serve(config.metrics_port)
    probes = await leader.serve_probes(elector, config.liveness_endpoint)
    try:
        return await leader.run_elected(
            elector, lambda: kopf.operator(standalone=True, clusterwide=not config.namespaces,
                                           namespaces=list(config.namespaces), memo=kopf.Memo(config=config)),
            on_lead=lambda leading: metrics.LEADER.set(1 if leading else 0))
    finally:
        if probes is not None:
            await probes.cleanup()
        await kube.close()


if __name__ == "__main__":
    sys.exit(main())
