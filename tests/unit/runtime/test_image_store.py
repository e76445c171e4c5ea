"""The image store: layer unpacking in overlayfs's format, imports, names, removal.

Unpacking whiteouts makes device nodes and trusted.* xattrs, so those tests need root.
"""

import io
import json
import os
import stat
import tarfile

import pytest

from deploy.images.build import build_all
from node_agent.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from node_agent.runtime.images import ImageStore, unpack_layer

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts need root (mknod, trusted xattrs)")


def layer(*entries) -> tarfile.TarFile:
    """A tar from (name, kind, payload) entries: kind is file, dir, sym or link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                tf.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, payload
                tf.addfile(info)
            else:
                data = payload.encode()
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return tarfile.open(fileobj=buf)


@needs_root
def test_whiteouts_become_overlayfs_whiteouts_and_opaque_dirs(tmp_path):
    unpack_layer(layer(("etc/", "dir", None), ("etc/.wh.gone", "file", ""),
                       ("var/cache/", "dir", None), ("var/cache/.wh..wh..opq", "file", ""),
                       ("var/cache/new", "file", "n")), tmp_path)
    st = os.lstat(tmp_path / "etc" / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(tmp_path / "var" / "cache", "trusted.overlay.opaque") == b"y"
    assert (tmp_path / "var" / "cache" / "new").read_text() == "n"
    assert not (tmp_path / "etc" / ".wh.gone").exists()


def test_files_links_and_later_entries_replace_earlier_ones(tmp_path):
    unpack_layer(layer(("bin/", "dir", None), ("bin/busybox", "file", "bb"), ("bin/sh", "sym", "busybox"),
                       ("bin/hard", "link", "bin/busybox"), ("bin/sh", "file", "real-sh")), tmp_path)
    assert (tmp_path / "bin" / "hard").read_text() == "bb"
    assert not (tmp_path / "bin" / "sh").is_symlink()
    assert (tmp_path / "bin" / "sh").read_text() == "real-sh"


@pytest.mark.parametrize("entries", [
    [("../escape", "file", "x")],
    [("evil", "sym", "/tmp"), ("evil/planted", "file", "x")],
    [("a/../../escape", "file", "x")],
    [("hard", "link", "../../etc/passwd")],
], ids=["dotdot", "through-symlink", "nested-dotdot", "hardlink-out"])
def test_entries_that_leave_the_layer_are_refused(tmp_path, entries):
    dest = tmp_path / "layer"
    dest.mkdir()
    with pytest.raises(InvalidArgument):
        unpack_layer(layer(*entries), dest)
    assert not (tmp_path / "escape").exists()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("images"), tar=True)


def test_import_records_config_and_unpacks_layers_once(tmp_path, images):
    store = ImageStore(tmp_path / "store")
    (shell,) = store.import_archive(str(images["localhost/kubeling/shell:1"]))
    assert shell.repo_tags == ["localhost/kubeling/shell:1"]
    assert shell.config["Cmd"] == ["sh"]
    (layer_dir,) = store.layer_paths(shell)
    assert (layer_dir / "bin" / "busybox").exists() and (layer_dir / "bin" / "sh").is_symlink()
    (http,) = store.import_archive(str(images["localhost/kubeling/http:1"]))
    assert store.find("localhost/kubeling/http:1").id == http.id
    assert store.find(http.id).id == http.id and store.find(http.hex[:12]).id == http.id
    assert store.find("localhost/kubeling/absent:1") is None
    with pytest.raises(NotFound):
        store.get("localhost/kubeling/absent:1")
    # A second store over the same directory sees the same images.
    again = ImageStore(tmp_path / "store")
    assert {i.id for i in again.list()} == {shell.id, http.id}


def test_a_name_moves_to_the_image_imported_last(tmp_path, images):
    store = ImageStore(tmp_path / "store")
    store.import_archive(str(images["localhost/kubeling/shell:1"]), name="example.com/app:1")
    (http,) = store.import_archive(str(images["localhost/kubeling/http:1"]), name="example.com/app:1")
    assert store.find("example.com/app:1").id == http.id
    assert [i.repo_tags for i in store.list()] == [[], ["example.com/app:1"]]


def test_remove_refuses_images_in_use_and_frees_unshared_blobs(tmp_path, images):
    store = ImageStore(tmp_path / "store")
    (shell,) = store.import_archive(str(images["localhost/kubeling/shell:1"]))
    with pytest.raises(FailedPrecondition):
        store.remove(shell, in_use=lambda image_id: True)
    store.remove(shell, in_use=lambda image_id: False)
    assert store.list() == []
    assert not any(store.blobs.iterdir()) and not any(store.layers_dir.iterdir())


def test_archives_without_a_full_name_need_one(tmp_path, images):
    layout = tmp_path / "layout"
    import shutil
    shutil.copytree(str(images["localhost/kubeling/shell:1"]).removesuffix(".tar"), layout)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["annotations"] = {"org.opencontainers.image.ref.name": "1"}
    (layout / "index.json").write_text(json.dumps(index))
    store = ImageStore(tmp_path / "store")
    with pytest.raises(InvalidArgument, match="names no image"):
        store.import_archive(str(layout))
    (image,) = store.import_archive(str(layout), name="localhost/renamed:1")
    assert image.repo_tags == ["localhost/renamed:1"]


def test_corrupt_blobs_are_refused(tmp_path, images):
    layout = tmp_path / "layout"
    import shutil
    shutil.copytree(str(images["localhost/kubeling/shell:1"]).removesuffix(".tar"), layout)
    biggest = max((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:-10] + b"0123456789")
    store = ImageStore(tmp_path / "store")
    with pytest.raises(InvalidArgument, match="does not match its digest"):
        store.import_archive(str(layout))
    assert store.list() == []


@pytest.mark.parametrize("path", ["relative/path", "/definitely/not/here"])
def test_bad_import_paths(tmp_path, path):
    with pytest.raises(InvalidArgument):
        ImageStore(tmp_path / "store").import_archive(path)
