"""The local image store: blobs by digest, layers unpacked once, image records.

Layout under `<root>` (the runtime's `<state-dir>/images`):

    blobs/sha256/<hex>      every manifest, config and layer blob, verified
    layers/<diff-id hex>/   each layer unpacked once, in overlayfs's format
                            (whiteouts as 0:0 character devices, opaque
                            directories marked with trusted.overlay.opaque)
    records/<id hex>.json   one record per image: names, manifest, config

An image's id is its config digest. Images arrive by `pull` (skopeo copies
from a registry into a `dir:` tree, which keeps the registry's manifest and
digests) or by `import_archive` (an OCI layout directory or tarball, or a
docker-archive tarball, which skopeo turns into a `dir:` tree).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from node_agent.runtime import reference
from node_agent.runtime.errors import (FailedPrecondition, Internal, InvalidArgument, NotFound,
                                       Unavailable)
from node_agent.runtime.state_files import read_json, write_json

SKOPEO = "skopeo"
_MANIFEST_LISTS = ("application/vnd.oci.image.index.v1+json",
                   "application/vnd.docker.distribution.manifest.list.v2+json")
_NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64"}


def host_arch() -> str:
    machine = platform.machine()
    return _GOARCH.get(machine, machine)


@dataclass
class Image:
    """One stored image, as its record on disk says."""

    id: str
    repo_tags: list[str]
    repo_digests: list[str]
    manifest_digest: str
    layers: list[str]  # diff ids, bottom first
    layer_blobs: list[str]  # compressed digests, same order
    size: int
    config: dict = field(default_factory=dict)  # the OCI image config's "config" object
    created: int = 0

    @property
    def hex(self) -> str:
        return self.id.split(":", 1)[1]

    def to_json(self) -> dict:
        return self.__dict__.copy()

    @classmethod
    def from_json(cls, data: dict) -> "Image":
        return cls(**data)


class ImageStore:
    """Thread-safe store of images; every method may block on disk or skopeo."""

    def __init__(self, root: Path, insecure_registries: tuple[str, ...] = ()):
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.layers_dir = root / "layers"
        self.records = root / "records"
        self.tmp = root / "tmp"
        for d in (self.blobs, self.layers_dir, self.records, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self.insecure_registries = set(insecure_registries)
        self._lock = threading.RLock()
        self._images: dict[str, Image] = {}
        for path in self.records.glob("*.json"):
            data = read_json(path)
            if data:
                image = Image.from_json(data)
                self._images[image.id] = image
        # Leftovers of an interrupted pull or unpack are safe to drop.
        for leftover in self.tmp.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in self.layers_dir.glob(".unpack-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    # ---- queries -------------------------------------------------------------------

    def list(self) -> list[Image]:
        with self._lock:
            return sorted(self._images.values(), key=lambda i: i.created)

    def find(self, text: str) -> Image | None:
        """The image named by a reference, an id, or an id prefix of 12+ hex digits; None if absent.

        Raises InvalidArgument for a malformed reference."""
        with self._lock:
            m = reference.IMAGE_ID.match(text)
            if m:
                return self._images.get(f"sha256:{m.group('hex')}")
            if len(text) >= 12 and all(c in "0123456789abcdef" for c in text):
                hits = [i for i in self._images.values() if i.hex.startswith(text)]
                if len(hits) == 1:
                    return hits[0]
            ref = reference.parse(text)
            for image in self._images.values():
                if ref.digest:
                    if f"{ref.repository}@{ref.digest}" in image.repo_digests:
                        return image
                elif ref.tagged in image.repo_tags:
                    return image
            return None

    def get(self, text: str) -> Image:
        image = self.find(text)
        if image is None:
            raise NotFound(f"image {text!r} not found on this node")
        return image

    def layer_paths(self, image: Image) -> list[Path]:
        """Unpacked layer directories, bottom first."""
        return [self.layers_dir / d.split(":", 1)[1] for d in image.layers]

    def usage(self) -> tuple[int, int]:
        """(bytes, inodes) used by blobs and unpacked layers."""
        total = inodes = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in filenames + dirnames:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                inodes += 1
                total += st.st_blocks * 512
        return total, inodes

    # ---- pull and import ---------------------------------------------------------------

    def pull(self, text: str, username: str = "", password: str = "", auth: str = "",
             registry_token: str = "", timeout: float = 600) -> Image:
        """Fetches `text` from its registry with skopeo and stores it; returns the image."""
        ref = reference.parse(text)
        args = [SKOPEO, "--insecure-policy", "copy", "--quiet"]
        if ref.domain in self.insecure_registries or reference.is_insecure_host(ref.domain):
            args.append("--src-tls-verify=false")
        if auth and not username:
            try:
                username, _, password = base64.b64decode(auth).decode().partition(":")
            except ValueError as e:
                raise InvalidArgument(f"auth.auth: not base64 of user:password: {e}") from None
        if username:
            args += ["--src-creds", f"{username}:{password}"]
        elif registry_token:
            args += ["--src-registry-token", registry_token]
        work = Path(tempfile.mkdtemp(prefix="pull-", dir=self.tmp))
        try:
            args += [f"docker://{ref}", f"dir:{work}"]
            try:
                proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                                      stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise Unavailable(f"pulling {ref}: timed out after {timeout:.0f}s") from None
            if proc.returncode != 0:
                raise _pull_error(str(ref), proc.stderr)
            manifest = (work / "manifest.json").read_bytes()
            names = [ref.tagged] if ref.tagged else []
            return self._ingest(manifest, lambda d: work / d.split(":", 1)[1], names, ref.repository)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def import_archive(self, path: str, name: str = "") -> list[Image]:
        """Imports every image of an OCI layout (directory or tar) or docker-archive tarball."""
        if not path or not os.path.isabs(path):
            raise InvalidArgument(f"path {path!r}: an absolute path on the node is required")
        src = Path(path)
        if not src.exists():
            raise InvalidArgument(f"path {path!r}: no such file or directory")
        override = reference.parse(name) if name else None
        if override and not override.tagged:
            raise InvalidArgument(f"name {name!r}: a tag is required to import under a name")
        work = Path(tempfile.mkdtemp(prefix="import-", dir=self.tmp))
        try:
            if src.is_dir():
                layout = src
            else:
                try:
                    with tarfile.open(src) as tf:
                        names = set(tf.getnames())
                        names = {n.lstrip("./") for n in names}
                        if "oci-layout" in names and "index.json" in names:
                            _safe_extract(tf, work / "layout")
                            layout = work / "layout"
                        elif "manifest.json" in names:
                            return self._import_docker_archive(tf, src, work, override)
                        else:
                            raise InvalidArgument(
                                f"path {path!r}: neither an OCI layout (oci-layout, index.json) "
                                "nor a docker-archive (manifest.json)")
                except tarfile.TarError:
                    raise InvalidArgument(f"path {path!r}: not a tar archive (nor an OCI layout "
                                          "directory)") from None
            return self._import_oci_layout(layout, override, path)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _import_oci_layout(self, layout: Path, override, path: str) -> list[Image]:
        index = read_json(layout / "index.json")
        if not isinstance(index, dict) or not index.get("manifests"):
            raise InvalidArgument(f"path {path!r}: OCI layout without manifests in index.json")

        def blob(digest: str) -> Path:
            algo, _, hexd = digest.partition(":")
            return layout / "blobs" / algo / hexd

        imported = []
        for desc in index["manifests"]:
            annotations = desc.get("annotations") or {}
            names = []
            if override:
                names = [override.tagged]
            else:
                for key in _NAME_ANNOTATIONS:
                    value = annotations.get(key, "")
                    if "/" in value or value.startswith("localhost"):
                        names = [reference.parse(value).tagged]
                        break
                if not names:
                    raise InvalidArgument(
                        f"path {path!r}: the archive names no image (only "
                        f"{annotations.get('org.opencontainers.image.ref.name', 'nothing')!r}); "
                        "give a name to import it under")
            manifest = _read_blob(blob(desc["digest"]), desc["digest"])
            doc = json.loads(manifest)
            if doc.get("mediaType") in _MANIFEST_LISTS or "manifests" in doc:
                chosen = _choose_platform(doc, path)
                manifest = _read_blob(blob(chosen["digest"]), chosen["digest"])
            repo = reference.parse(names[0]).repository
            imported.append(self._ingest(manifest, blob, names, repo))
        return imported

    def _import_docker_archive(self, tf: tarfile.TarFile, src: Path, work: Path,
                               override) -> list[Image]:
        member = tf.extractfile("manifest.json") or tf.extractfile("./manifest.json")
        entries = json.load(member)
        imported = []
        for i, entry in enumerate(entries):
            tags = [reference.parse(t).tagged for t in entry.get("RepoTags") or []]
            if override:
                tags = [override.tagged]
            if not tags:
                raise InvalidArgument(f"path {str(src)!r}: image {i} has no RepoTags; give a name")
            out = work / f"img{i}"
            proc = subprocess.run(
                [SKOPEO, "--insecure-policy", "copy", "--quiet", f"docker-archive:{src}:@{i}",
                 f"dir:{out}"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                raise InvalidArgument(f"path {str(src)!r}: {proc.stderr.strip()}")
            manifest = (out / "manifest.json").read_bytes()
            repo = reference.parse(tags[0]).repository
            imported.append(self._ingest(manifest, lambda d, o=out: o / d.split(":", 1)[1],
                                         tags, repo))
        return imported

    def _ingest(self, manifest: bytes, blob: Callable[[str], Path], names: list[str],
                repository: str) -> Image:
        """Stores a manifest's blobs, unpacks its layers and records the image under `names`."""
        doc = json.loads(manifest)
        if doc.get("schemaVersion") != 2 or "config" not in doc:
            raise InvalidArgument(f"{repository}: unsupported manifest (schema 2 image manifests only)")
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        config_digest = doc["config"]["digest"]
        config_bytes = _read_blob(blob(config_digest), config_digest)
        config = json.loads(config_bytes)
        if config.get("os", "linux") != "linux":
            raise InvalidArgument(f"{repository}: image is for {config.get('os')}, not linux")
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        layers = doc.get("layers") or []
        if len(diff_ids) != len(layers):
            raise InvalidArgument(f"{repository}: config lists {len(diff_ids)} layers, manifest {len(layers)}")
        for desc in layers:
            if "zstd" in desc.get("mediaType", ""):
                raise InvalidArgument(f"{repository}: zstd layers are not supported")
        with self._lock:
            self._store_blob(manifest_digest, data=manifest)
            self._store_blob(config_digest, data=config_bytes)
            for desc in layers:
                self._store_blob(desc["digest"], src=blob(desc["digest"]))
            for desc, diff_id in zip(layers, diff_ids):
                self._unpack(desc["digest"], diff_id)
            image_id = config_digest
            existing = self._images.get(image_id)
            repo_digest = f"{repository}@{manifest_digest}"
            image = existing or Image(
                id=image_id, repo_tags=[], repo_digests=[], manifest_digest=manifest_digest,
                layers=list(diff_ids), layer_blobs=[d["digest"] for d in layers],
                size=sum(int(d.get("size", 0)) for d in layers) + len(config_bytes),
                config=config.get("config") or {}, created=time.time_ns())
            # A name moves to the newest image that claims it, as a tag does in a registry.
            for other in list(self._images.values()):
                if other.id != image_id and set(names) & set(other.repo_tags):
                    other.repo_tags = [t for t in other.repo_tags if t not in names]
                    self._save(other)
            for name in names:
                if name not in image.repo_tags:
                    image.repo_tags.append(name)
            if repo_digest not in image.repo_digests:
                image.repo_digests.append(repo_digest)
            self._images[image_id] = image
            self._save(image)
            return image

    def _save(self, image: Image) -> None:
        write_json(self.records / f"{image.hex}.json", image.to_json(), durable=True)

    def _store_blob(self, digest: str, data: bytes | None = None, src: Path | None = None) -> None:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or len(hexd) != 64:
            raise InvalidArgument(f"unsupported digest {digest!r}")
        dest = self.blobs / hexd
        if dest.exists():
            return
        tmp = dest.with_name(f".{hexd}.tmp")
        h = hashlib.sha256()
        if data is not None:
            h.update(data)
            tmp.write_bytes(data)
        else:
            try:
                with open(src, "rb") as fin, open(tmp, "wb") as fout:
                    for chunk in iter(lambda: fin.read(1 << 20), b""):
                        h.update(chunk)
                        fout.write(chunk)
            except FileNotFoundError:
                raise InvalidArgument(f"blob {digest} missing from the image source") from None
        if h.hexdigest() != hexd:
            tmp.unlink(missing_ok=True)
            raise InvalidArgument(f"blob {digest}: content does not match its digest")
        os.replace(tmp, dest)

    def _unpack(self, blob_digest: str, diff_id: str) -> None:
        dest = self.layers_dir / diff_id.split(":", 1)[1]
        if dest.exists():
            return
        work = Path(tempfile.mkdtemp(prefix=".unpack-", dir=self.layers_dir))
        try:
            h = hashlib.sha256()
            with open(self.blobs / blob_digest.split(":", 1)[1], "rb") as raw:
                with tarfile.open(fileobj=raw, mode="r:*") as tf:
                    unpack_layer(tf, work)
            # The diff id is the digest of the uncompressed tar: check it.
            with open(self.blobs / blob_digest.split(":", 1)[1], "rb") as raw:
                head = raw.read(2)
                raw.seek(0)
                stream = gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    h.update(chunk)
            if f"sha256:{h.hexdigest()}" != diff_id:
                raise InvalidArgument(f"layer {blob_digest}: uncompressed digest does not match diff id {diff_id}")
            os.rename(work, dest)
        except (tarfile.TarError, OSError, EOFError) as e:
            shutil.rmtree(work, ignore_errors=True)
            raise InvalidArgument(f"layer {blob_digest}: cannot unpack: {e}") from None
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    # ---- removal ---------------------------------------------------------------------

    def remove(self, image: Image, in_use: Callable[[str], bool]) -> None:
        """Removes `image` and the blobs and layers no other image uses.

        `in_use(image_id)` is asked under the store lock; FailedPrecondition when it says yes."""
        with self._lock:
            if image.id not in self._images:
                return
            if in_use(image.id):
                raise FailedPrecondition(f"image {image.id} is in use by a container")
            del self._images[image.id]
            (self.records / f"{image.hex}.json").unlink(missing_ok=True)
            keep_blobs = set()
            keep_layers = set()
            for other in self._images.values():
                keep_blobs.update([other.manifest_digest, other.id, *other.layer_blobs])
                keep_layers.update(other.layers)
            for digest in [image.manifest_digest, image.id, *image.layer_blobs]:
                if digest not in keep_blobs:
                    (self.blobs / digest.split(":", 1)[1]).unlink(missing_ok=True)
            for diff_id in image.layers:
                if diff_id not in keep_layers:
                    shutil.rmtree(self.layers_dir / diff_id.split(":", 1)[1], ignore_errors=True)


def _pull_error(ref: str, stderr: str) -> Exception:
    text = " ".join(stderr.strip().split())
    low = text.lower()
    if "manifest unknown" in low or "not found" in low or "name unknown" in low:
        return NotFound(f"image {ref!r} not found in its registry: {text}")
    if "unauthorized" in low or "authentication required" in low or "denied" in low:
        return FailedPrecondition(f"pulling {ref}: access denied: {text}")
    if ("no such host" in low or "connection refused" in low or "dial tcp" in low
            or "timeout" in low or "i/o timeout" in low or "server gave http response" in low):
        return Unavailable(f"pulling {ref}: registry unreachable: {text}")
    return Internal(f"pulling {ref}: {text}")


def _read_blob(path: Path, digest: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(f"blob {digest} missing from the image source") from None
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise InvalidArgument(f"blob {digest}: content does not match its digest")
    return data


def _choose_platform(index: dict, path: str) -> dict:
    arch = host_arch()
    for desc in index.get("manifests", []):
        plat = desc.get("platform") or {}
        if plat.get("os", "linux") == "linux" and plat.get("architecture", arch) == arch:
            return desc
    raise InvalidArgument(f"{path}: no image for linux/{arch} in the manifest list")


def _within(root: Path, path: str) -> bool:
    real = os.path.realpath(path)
    return real == str(root) or real.startswith(str(root) + os.sep)


def _safe_extract(tf: tarfile.TarFile, dest: Path) -> None:
    """Extracts a plain archive (an OCI layout), refusing paths that leave `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for member in tf.getmembers():
        if member.issym() or member.islnk() or member.isdev():
            raise InvalidArgument(f"archive entry {member.name!r}: links and devices are not allowed here")
        target = dest / member.name.lstrip("/")
        if not _within(dest.resolve(), str(target.parent)) or ".." in Path(member.name).parts:
            raise InvalidArgument(f"archive entry {member.name!r} leaves the archive")
        tf.extract(member, dest, set_attrs=False, filter="fully_trusted")


def unpack_layer(tf: tarfile.TarFile, dest: Path) -> None:
    """Unpacks one layer tar into `dest` in overlayfs's lower-layer format.

    OCI whiteouts become what overlayfs understands: `.wh.<name>` a 0:0
    character device `<name>`, `.wh..wh..opq` the trusted.overlay.opaque
    xattr on its directory. No entry may write outside `dest`, even through a
    symlink the same layer made."""
    root = dest.resolve()
    safe_parents: set[Path] = set()  # checked since the last symlink was made
    for member in tf:
        parts = [p for p in member.name.split("/") if p not in ("", ".")]
        if not parts:
            continue
        if ".." in parts:
            raise InvalidArgument(f"layer entry {member.name!r} leaves the layer")
        rel = "/".join(parts)
        parent = root.joinpath(*parts[:-1])
        if parent not in safe_parents:
            if not _within(root, str(parent)):
                raise InvalidArgument(f"layer entry {member.name!r} goes through a symlink out of the layer")
            safe_parents.add(parent)
        if member.issym():
            safe_parents.clear()
        base = parts[-1]
        if base == ".wh..wh..opq":
            parent.mkdir(parents=True, exist_ok=True)
            os.setxattr(parent, "trusted.overlay.opaque", b"y")
            continue
        if base.startswith(".wh."):
            parent.mkdir(parents=True, exist_ok=True)
            target = parent / base[4:]
            _remove_path(target)
            os.mknod(target, 0o600 | 0o020000, os.makedev(0, 0))
            continue
        target = parent / base
        if member.islnk():
            link_parts = [p for p in member.linkname.split("/") if p not in ("", ".")]
            if ".." in link_parts or not _within(root, str(root.joinpath(*link_parts))):
                raise InvalidArgument(f"layer entry {member.name!r}: hard link leaves the layer")
            member.linkname = "/".join(link_parts)
        if os.path.lexists(target) and not (member.isdir() and target.is_dir() and not target.is_symlink()):
            _remove_path(target)
        member.name = rel
        tf.extract(member, root, set_attrs=True, numeric_owner=True, filter="fully_trusted")


def _remove_path(path: Path) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
