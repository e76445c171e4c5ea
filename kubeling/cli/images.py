"""`kubeling images import FILE... [--name REF]` and `kubeling images ls [-q]`

Node-local image commands, like `k3s ctr images import` and `crictl images`:
they talk to the node's runtime service on its unix socket (not to the API
server). `import` uses kubeling's ImageImportService on that socket, which
reads the file on the node, so FILE must be a path the runtime can see (it is
made absolute here); `ls` uses the CRI ImageService.

The socket is `--runtime-endpoint`, else `$KUBELING_RUNTIME_ENDPOINT`, else
unix:///run/kubeling/runtime.sock.
"""

from __future__ import annotations

import argparse
import os

import grpc

from kubeling.cri.v1 import api_pb2, api_pb2_grpc, images_pb2, images_pb2_grpc

from .common import CliError

DEFAULT_ENDPOINT = "unix:///run/kubeling/runtime.sock"


def register(sub: argparse._SubParsersAction, parents: list | None = None) -> None:
    p = sub.add_parser("images", parents=parents or [], help="list and import images on this node",
                       description="Images in this node's runtime (talks to the runtime socket).")
    p.add_argument("--runtime-endpoint", default=None, metavar="URL",
                   help=f"runtime socket (default: $KUBELING_RUNTIME_ENDPOINT or {DEFAULT_ENDPOINT})")
    verbs = p.add_subparsers(dest="images_verb", metavar="SUBCOMMAND")
    imp = verbs.add_parser("import", help="import OCI layout or docker-archive tarballs",
                           description="Import images from OCI layout (directory or tar) or "
                                       "docker-archive files on this node.")
    imp.add_argument("files", nargs="+", metavar="FILE")
    imp.add_argument("--name", default="", metavar="REF",
                     help="tag the image with this reference (for archives that carry no name)")
    imp.set_defaults(run=run_import)
    ls = verbs.add_parser("ls", aliases=["list"], help="list images",
                          description="List the images in this node's runtime.")
    ls.add_argument("-q", "--quiet", action="store_true", help="only image ids")
    ls.set_defaults(run=run_ls)
    p.set_defaults(run=_usage(p))


def _usage(parser: argparse.ArgumentParser):
    async def run(args: argparse.Namespace) -> int:
        raise CliError(f"a subcommand is required (import or ls)\nSee '{parser.prog} --help' for usage.")
    return run


def _endpoint(args: argparse.Namespace) -> str:
    endpoint = args.runtime_endpoint or os.environ.get("KUBELING_RUNTIME_ENDPOINT") or DEFAULT_ENDPOINT
    if endpoint.startswith("/"):
        endpoint = f"unix://{endpoint}"
    if not endpoint.startswith("unix:"):
        raise CliError(f"--runtime-endpoint {endpoint!r}: only unix:// sockets are supported")
    path = endpoint.split(":", 1)[1].removeprefix("//")
    if not os.path.exists(path):
        raise CliError(f"runtime socket {path} does not exist: is the runtime service running on this node?")
    return endpoint


def _error(e: grpc.RpcError, what: str) -> CliError:
    code = e.code()
    if code == grpc.StatusCode.PERMISSION_DENIED or "Permission denied" in (e.details() or ""):
        return CliError(f"{what}: permission denied on the runtime socket (run as root)")
    if code == grpc.StatusCode.UNAVAILABLE:
        return CliError(f"{what}: the runtime service is not answering: {e.details()}")
    return CliError(f"{what}: {e.details()}")


async def run_import(args: argparse.Namespace) -> int:
    endpoint = _endpoint(args)
    failed = []
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = images_pb2_grpc.ImageImportServiceStub(channel)
        for name in args.files:
            path = os.path.abspath(name)
            if not os.path.exists(path):
                failed.append(f"{name}: no such file or directory")
                continue
            try:
                answer = await stub.ImportImage(images_pb2.ImportImageRequest(path=path, name=args.name),
                                                timeout=600)
            except grpc.RpcError as e:
                if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED):
                    raise _error(e, f"importing {name}") from None
                failed.append(f"{name}: {e.details()}")
                continue
            for image in answer.images:
                tags = ", ".join(image.repo_tags) or "<none>"
                print(f"imported {tags} ({image.id[:19]})", flush=True)
    if failed:
        raise CliError("importing failed:\n" + "\n".join(failed) if len(failed) > 1 else
                       f"importing {failed[0]}")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.3g}{unit}"
        n /= 1000
    return str(n)


async def run_ls(args: argparse.Namespace) -> int:
    endpoint = _endpoint(args)
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = api_pb2_grpc.ImageServiceStub(channel)
        try:
            answer = await stub.ListImages(api_pb2.ListImagesRequest(), timeout=30)
        except grpc.RpcError as e:
            raise _error(e, "listing images") from None
    if args.quiet:
        for image in answer.images:
            print(image.id)
        return 0
    rows = [("IMAGE", "TAG", "IMAGE ID", "SIZE")]
    for image in answer.images:
        short_id = image.id.split(":", 1)[-1][:13]
        names = image.repo_tags or [f"{d.split('@', 1)[0]}:<none>" for d in image.repo_digests] or ["<none>:<none>"]
        for name in names:
            repo, _, tag = name.rpartition(":")
            rows.append((repo, tag, short_id, _size(image.size)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return 0
