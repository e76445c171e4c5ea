"""Builds kubeling's test images from Debian's busybox-static, as OCI layouts.

    python deploy/images/build.py [--out DIR] [--tar] [--busybox /bin/busybox] [--no-releases]

writes, reproducibly (fixed timestamps, sorted entries):

    DIR/shell/   localhost/kubeling/shell:1  busybox applets; default command `sh`
    DIR/http/    localhost/kubeling/http:1   busybox httpd on :8080 in the
                 foreground; `/` answers the container's hostname (a CGI
                 script, so it works on a read-only root), `/healthz` 200 "ok",
                 `/version` "1"
    DIR/http2/   localhost/kubeling/http:2   the same server, `/version` "2":
                 a second release to roll out (README's tour, `make e2e`);
                 not built with --no-releases (build_all(releases=False))

With --tar each layout is also packed as DIR/<name>.tar, the form
`kubeling images import FILE` takes. Each index entry carries the image's
full name in the `io.containerd.image.name` annotation and its tag in
`org.opencontainers.image.ref.name`, as containerd's exporter writes them.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

EPOCH = 0
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
INDEX_CGI = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nhostname\n"


def _applets(busybox: str) -> list[str]:
    out = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout
    return sorted(a for a in out.split() if a and a != "busybox")


def _layer(busybox: str, extra: dict[str, tuple[int, bytes]]) -> bytes:
    """An uncompressed layer tar: /bin/busybox, an applet symlink each, /etc, /tmp, and `extra`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, EPOCH
            tf.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, EPOCH
            tf.addfile(info, io.BytesIO(data))

        dirs = {"bin", "etc", "root", "tmp", "var", "proc", "sys", "dev"}
        for path in extra:
            parent = Path(path).parent
            while str(parent) != ".":
                dirs.add(str(parent))
                parent = parent.parent
        for d in sorted(dirs):
            add_dir(d, 0o1777 if d == "tmp" else 0o755)
        add_file("bin/busybox", Path(busybox).read_bytes(), 0o755)
        for applet in _applets(busybox):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, "busybox", 0o777, EPOCH
            tf.addfile(info)
        add_file("etc/passwd", PASSWD.encode())
        add_file("etc/group", GROUP.encode())
        for path, (mode, data) in sorted(extra.items()):
            add_file(path, data, mode)
    return buf.getvalue()


def _write_blob(layout: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def build_image(layout: Path, name: str, busybox: str, config: dict,
                extra: dict[str, tuple[int, bytes]]) -> None:
    """Writes one OCI image layout at `layout` (replacing what is there)."""
    shutil.rmtree(layout, ignore_errors=True)
    layout.mkdir(parents=True)
    raw = _layer(busybox, extra)
    compressed = gzip.compress(raw, compresslevel=6, mtime=EPOCH)
    layer = _write_blob(layout, compressed)
    image_config = {
        "architecture": _goarch(),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(raw).hexdigest()}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "deploy/images/build.py"}],
    }
    cfg = _write_blob(layout, json.dumps(image_config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }
    man = _write_blob(layout, json.dumps(manifest, sort_keys=True).encode())
    tag = name.rsplit(":", 1)[1]
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", **man,
            "platform": {"architecture": _goarch(), "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": tag},
        }],
    }
    (layout / "index.json").write_text(json.dumps(index, sort_keys=True))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))


def _goarch() -> str:
    import platform
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def _tar(layout: Path, dest: Path) -> None:
    with tarfile.open(dest, "w") as tf:
        for path in sorted(layout.rglob("*")):
            info = tf.gettarinfo(str(path), str(path.relative_to(layout)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "", ""
            if path.is_file():
                with open(path, "rb") as f:
                    tf.addfile(info, f)
            else:
                tf.addfile(info)


HTTPD = "trap 'kill $pid; exit 0' TERM; httpd -f -p 8080 -h /www & pid=$!; wait $pid"


def _http(version: str) -> tuple[str, dict, dict]:
    return (f"localhost/kubeling/http:{version}",
            # httpd as PID 1 would ignore SIGTERM; the shell turns it into a clean exit.
            {"Entrypoint": ["sh", "-c", HTTPD],
             "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
             "ExposedPorts": {"8080/tcp": {}}, "WorkingDir": "/www"},
            {"www/healthz": (0o644, b"ok\n"),
             "www/version": (0o644, f"{version}\n".encode()),
             "www/cgi-bin/index.cgi": (0o755, INDEX_CGI.encode())})


IMAGES = {
    "shell": ("localhost/kubeling/shell:1",
              {"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
               "WorkingDir": "/"},
              {}),
    "http": _http("1"),
}
# Later releases of the test images, for rolling updates.
RELEASES = {
    "http2": _http("2"),
}


def build_all(out: Path, busybox: str = "/bin/busybox", tar: bool = False,
              releases: bool = False) -> dict[str, Path]:
    """Builds every test image under `out` (with `releases`, RELEASES too);
    returns name -> layout (or tar) path."""
    built = {}
    for key, (name, config, extra) in (IMAGES | RELEASES if releases else IMAGES).items():
        layout = out / key
        build_image(layout, name, busybox, config, extra)
        built[name] = layout
        if tar:
            _tar(layout, out / f"{key}.tar")
            built[name] = out / f"{key}.tar"
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="deploy/images/out", type=Path)
    parser.add_argument("--busybox", default="/bin/busybox")
    parser.add_argument("--tar", action="store_true", help="also pack each layout as a tar")
    parser.add_argument("--no-releases", action="store_true",
                        help="only the first release of each image (no localhost/kubeling/http:2)")
    args = parser.parse_args()
    for name, path in build_all(args.out, args.busybox, args.tar, releases=not args.no_releases).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
