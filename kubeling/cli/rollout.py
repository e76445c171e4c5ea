"""`kubeling rollout status|history|undo|restart|pause|resume deployment/NAME`,
as kubectl's rollout commands.

- `status` follows the Deployment (a watch) and prints a line whenever the
  rollout's state changes; exit 0 once complete, 1 with
  `error: deployment "web" exceeded its progress deadline` when the
  Progressing condition says ProgressDeadlineExceeded, 1 on `--timeout`.
- `history` lists revisions (the `deployment.kubernetes.io/revision`
  annotations of the Deployment's ReplicaSets) with their change cause;
  `--revision=N` shows that revision's pod template.
- `undo` rolls back by copying the template of the ReplicaSet of the chosen
  revision (default: the one before the current) into the Deployment, minus
  its pod-template-hash label, as kubectl does; the controller does the rest.
- `restart` sets `kubectl.kubernetes.io/restartedAt` on the pod template,
  so every pod is replaced by a rolling update.
- `pause` / `resume` set spec.paused.

Wiring: `register(subparsers, parents)` adds the `rollout` command; each
subcommand sets `run` (and `func`), an `async def (args) -> int`. Errors are
raised as CliError / ApiError for the caller (kubeling.cli.main) to print.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import re
import sys

from google.protobuf.message import Message

from kubeling.api.v1 import apps_pb2
from kubeling.client.api_client import ApiClient
from kubeling.client.errors import GoneError, retry_on_conflict

from .common import CliError, connect, parse_targets

POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
TIMED_OUT_REASON = "ProgressDeadlineExceeded"
# Deployment annotations a rollback keeps from the Deployment rather than the RS (kubectl's list).
_ANNOTATIONS_TO_SKIP = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration", REVISION,
    "deployment.kubernetes.io/revision-history", "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas", "deprecated.deployment.rollback.to"})


def register(subparsers: argparse._SubParsersAction, parents: list | None = None) -> None:
    """Add `rollout` and its subcommands. With `parents` (main's common
    -n/--config parser) those flags come from there; without, they are added here."""
    rollout = subparsers.add_parser("rollout", help="manage the rollout of a deployment",
                                    description="Manage the rollout of one or more deployments.")
    sub = rollout.add_subparsers(dest="rollout_command", metavar="SUBCOMMAND")
    sub.required = True

    def command(name: str, help_: str, run) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=_parents(parents), help=help_, description=help_)
        p.add_argument("targets", nargs="+", metavar="deployment/NAME",
                       help="deployment/NAME, or deployment NAME")
        p.set_defaults(run=run, func=run)
        return p

    p = command("status", "show the status of the rollout (following it until it completes)", run_status)
    p.add_argument("-w", "--watch", default="true", choices=("true", "false"),
                   help="keep watching until the rollout finishes (default true)")
    p.add_argument("--timeout", default="0",
                   help="how long to wait before giving up, e.g. 30s, 5m (default 0: forever)")
    p.add_argument("--revision", type=int, default=0,
                   help="pin to this revision; fail if the running revision differs")
    p = command("history", "view rollout history", run_history)
    p.add_argument("--revision", type=int, default=0, help="show the pod template of this revision")
    p = command("undo", "roll back to a previous revision", run_undo)
    p.add_argument("--to-revision", type=int, default=0,
                   help="the revision to roll back to (default 0: the previous one)")
    command("restart", "restart every pod (a new rollout of the same template)", run_restart)
    command("pause", "mark a deployment paused: template changes are not rolled out", run_pause)
    command("resume", "resume a paused deployment", run_resume)


def _parents(parents: list | None) -> list:
    if parents is not None:
        return list(parents)
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("-n", "--namespace", default=None, help='the namespace (default: "default")')
    own.add_argument("--config", "--kubeconfig", dest="config", default=None, metavar="PATH",
                     help="client configuration file")
    return [own]


# ---------------------------------------------------------------- helpers


def _deployments(args: argparse.Namespace, verb: str) -> list[str]:
    """The Deployment names the arguments name; CliError for other kinds."""
    names: list[str] = []
    for kind, kind_names in parse_targets(args.targets):
        if kind.kind != "Deployment":
            what = {"status": "status viewer", "history": "history viewer",
                    "undo": "rollbacker"}.get(verb, f"{verb} support")
            raise CliError(f'no {what} has been implemented for "{kind.kind}.{kind.group or "core"}"')
        if not kind_names:
            raise CliError("required resource not specified")
        names.extend(kind_names)
    return names


def _namespace(args: argparse.Namespace) -> str:
    return getattr(args, "namespace", None) or "default"


def _config(args: argparse.Namespace) -> str | None:
    return getattr(args, "config", None)


def replicas_of(obj: Message) -> int:
    return obj.spec.replicas if obj.spec.HasField("replicas") else 1


def revision_of(rs: Message) -> int:
    try:
        return int(rs.metadata.annotations.get(REVISION, "0"))
    except ValueError:
        return 0


def _without_hash(template: Message) -> Message:
    t = type(template)()
    t.CopyFrom(template)
    t.metadata.labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    return t


async def owned_replica_sets(client: ApiClient, d: apps_pb2.Deployment) -> list[apps_pb2.ReplicaSet]:
    """The ReplicaSets the Deployment controls, as kubectl finds its history."""
    listed = await client.list_all("replicasets", d.metadata.namespace)
    return [rs for rs in listed.items
            if any(ref.controller and ref.uid == d.metadata.uid for ref in rs.metadata.owner_references)]


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration for the units a user types: `0`, `90`, `30s`,
    `5m`, `1h30m`, `1.5s`, `500ms`. A bare number is seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise CliError(f'invalid duration "{text}" (use e.g. 30s, 5m, 1h)')
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


# ---------------------------------------------------------------- status


def status_message(d: apps_pb2.Deployment, revision: int = 0) -> tuple[str, bool]:
    """(the line kubectl prints, whether the rollout is done) for a
    Deployment; CliError when the progress deadline passed or the running
    revision is not `revision` (kubectl's DeploymentStatusViewer)."""
    name = d.metadata.name
    if revision > 0:
        try:
            running = int(d.metadata.annotations.get(REVISION, "0"))
        except ValueError:
            running = 0
        if running != revision:
            raise CliError(f"desired revision ({revision}) is different from the running revision ({running})")
    if d.metadata.generation <= d.status.observed_generation:
        for c in d.status.conditions:
            if c.type == "Progressing" and c.reason == TIMED_OUT_REASON:
                raise CliError(f'deployment "{name}" exceeded its progress deadline')
        wanted, st = replicas_of(d), d.status
        if st.updated_replicas < wanted:
            return (f'Waiting for deployment "{name}" rollout to finish: {st.updated_replicas} out of '
                    f"{wanted} new replicas have been updated...", False)
        if st.replicas > st.updated_replicas:
            return (f'Waiting for deployment "{name}" rollout to finish: {st.replicas - st.updated_replicas} '
                    "old replicas are pending termination...", False)
        if st.available_replicas < st.updated_replicas:
            return (f'Waiting for deployment "{name}" rollout to finish: {st.available_replicas} of '
                    f"{st.updated_replicas} updated replicas are available...", False)
        return f'deployment "{name}" successfully rolled out', True
    return "Waiting for deployment spec update to be observed...", False


async def run_status(args: argparse.Namespace) -> int:
    names = _deployments(args, "status")
    if len(names) != 1:
        raise CliError("rollout status is only supported on individual resources")
    name, namespace = names[0], _namespace(args)
    timeout = parse_duration(args.timeout)
    async with connect(_config(args)) as client:
        try:
            async with asyncio.timeout(timeout or None):
                return await _follow(client, name, namespace, args.watch == "true", args.revision)
        except TimeoutError:
            raise CliError("timed out waiting for the condition") from None


async def _follow(client: ApiClient, name: str, namespace: str, watch: bool, revision: int) -> int:
    last = ""

    def show(d: apps_pb2.Deployment) -> bool:
        nonlocal last
        message, done = status_message(d, revision)
        if message != last:
            print(message, flush=True)
            last = message
        return done

    while True:
        d = await client.get("deployments", name, namespace)
        if show(d) or not watch:
            return 0
        try:
            async with client.watch("deployments", namespace, field_selector=f"metadata.name={name}",
                                    resource_version=d.metadata.resource_version) as stream:
                async for ev in stream:
                    if ev.type == "DELETED":
                        raise CliError(f'deployment "{name}" was deleted')
                    if ev.type in ("ADDED", "MODIFIED") and show(ev.object):
                        return 0
        except GoneError:
            pass  # too far behind: read the object again and watch from there


# ---------------------------------------------------------------- history


async def run_history(args: argparse.Namespace) -> int:
    names = _deployments(args, "history")
    namespace = _namespace(args)
    async with connect(_config(args)) as client:
        for i, name in enumerate(names):
            d = await client.get("deployments", name, namespace)
            history = {revision_of(rs): rs for rs in await owned_replica_sets(client, d)
                       if revision_of(rs) > 0}
            if i:
                print()
            if args.revision > 0:
                rs = history.get(args.revision)
                if rs is None:
                    raise CliError(f"unable to find the specified revision {args.revision}")
                print(f"deployment.apps/{name} with revision #{args.revision}")
                sys.stdout.write(describe_template(rs.spec.template))
                continue
            if not history:
                print("No rollout history found.")
                continue
            print(f"deployment.apps/{name}")
            rows = [("REVISION", "CHANGE-CAUSE")] + [
                (str(rev), history[rev].metadata.annotations.get(CHANGE_CAUSE) or "<none>")
                for rev in sorted(history)]
            width = max(len(r[0]) for r in rows) + 2
            for rev, cause in rows:
                print(f"{rev.ljust(width)}{cause}")
    return 0


def describe_template(template: Message) -> str:
    """The pod template as `kubeling describe` prints it."""
    from .describe import Writer, _template  # describe's layout, shared with kubectl's output
    w = Writer()
    _template(w, 0, template)
    return w.render()


# ---------------------------------------------------------------- undo


def rollback_target(d: apps_pb2.Deployment, rss: list[apps_pb2.ReplicaSet], to_revision: int
                    ) -> apps_pb2.ReplicaSet:
    """The RS to roll back to (kubectl's rsForRevision): revision
    `to_revision`, or with 0 the highest revision below the current one."""
    if to_revision > 0:
        for rs in rss:
            if revision_of(rs) == to_revision:
                return rs
        raise CliError(f"unable to find specified revision {to_revision} in history")
    latest, previous = (-1, None), (-1, None)
    for rs in rss:
        v = revision_of(rs)
        if v > latest[0]:
            previous, latest = latest, (v, rs)
        elif v > previous[0]:
            previous = (v, rs)
    if previous[1] is None or previous[0] <= 0:
        raise CliError(f'no rollout history found for deployment "{d.metadata.name}"')
    return previous[1]


def apply_rollback(d: apps_pb2.Deployment, rs: apps_pb2.ReplicaSet) -> bool:
    """Copy the RS's template (minus the hash label) and annotations into
    `d`, as kubectl's rollback patch does. False when it already matches."""
    if _without_hash(rs.spec.template) == _without_hash(d.spec.template):
        return False
    d.spec.template.CopyFrom(_without_hash(rs.spec.template))
    annotations = {k: v for k, v in d.metadata.annotations.items() if k in _ANNOTATIONS_TO_SKIP}
    annotations.update({k: v for k, v in rs.metadata.annotations.items() if k not in _ANNOTATIONS_TO_SKIP})
    d.metadata.annotations.clear()
    d.metadata.annotations.update(annotations)
    return True


async def run_undo(args: argparse.Namespace) -> int:
    names = _deployments(args, "undo")
    namespace = _namespace(args)
    async with connect(_config(args)) as client:
        for name in names:
            outcome = ""

            async def attempt() -> None:
                nonlocal outcome
                d = await client.get("deployments", name, namespace)
                if d.spec.paused:
                    raise CliError("you cannot rollback a paused deployment; resume it first with "
                                   f"'kubeling rollout resume deployment/{name}' and try again")
                rs = rollback_target(d, await owned_replica_sets(client, d), args.to_revision)
                if not apply_rollback(d, rs):
                    outcome = (f"skipped rollback (current template already matches revision "
                               f"{revision_of(rs)})")
                    return
                await client.update(d)
                outcome = "rolled back"

            await retry_on_conflict(attempt)
            print(f"deployment.apps/{name} {outcome}", flush=True)
    return 0


# ---------------------------------------------------------------- restart, pause, resume


async def _modify(args: argparse.Namespace, verb: str, change) -> int:
    """get, `change(d)` (returns False to skip the write), update; conflicts retried."""
    names = _deployments(args, verb)
    namespace = _namespace(args)
    async with connect(_config(args)) as client:
        for name in names:
            async def attempt() -> None:
                d = await client.get("deployments", name, namespace)
                if change(d) is not False:
                    await client.update(d)
            await retry_on_conflict(attempt)
            print(f"deployment.apps/{name} {verb}", flush=True)
    return 0


async def run_restart(args: argparse.Namespace) -> int:
    def change(d: apps_pb2.Deployment) -> None:
        if d.spec.paused:
            raise CliError(f'deployments.apps "{d.metadata.name}" can\'t restart paused deployment '
                           "(run rollout resume first)")
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        d.spec.template.metadata.annotations[RESTARTED_AT] = now.isoformat().replace("+00:00", "Z")
    return await _modify(args, "restarted", change)


async def run_pause(args: argparse.Namespace) -> int:
    def change(d: apps_pb2.Deployment) -> None:
        if d.spec.paused:
            raise CliError(f'deployments.apps "{d.metadata.name}" is already paused')
        d.spec.paused = True
    return await _modify(args, "paused", change)


async def run_resume(args: argparse.Namespace) -> int:
    def change(d: apps_pb2.Deployment) -> None:
        if not d.spec.paused:
            raise CliError(f'deployments.apps "{d.metadata.name}" is not paused')
        d.spec.paused = False
    return await _modify(args, "resumed", change)


__all__ = ["register", "status_message", "rollback_target", "apply_rollback", "parse_duration"]
