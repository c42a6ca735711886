import pytest

from data_loader import storage


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_roundtrip_and_listing(kind, tmp_path, request):
    base = str(tmp_path) if kind == "local" else f"s3://{request.getfixturevalue('bucket')}/pre"
    root = storage.resolve(base)
    storage.write_bytes(root.join("a/b.bin"), b"hello")
    storage.write_text(root.join("c.txt"), "x")
    assert storage.read_bytes(root.join("a/b.bin")) == b"hello"
    assert [p for p, _ in storage.walk_files(root)] == ["a/b.bin", "c.txt"]
    assert storage.size(root.join("a/b.bin")) == 5
    with pytest.raises(storage.StorageError, match="missing.bin: not found"):
        storage.read_bytes(root.join("missing.bin"))


def test_paths_cannot_escape():
    root = storage.resolve("/tmp/x")
    for bad in ("../y", "/etc/passwd", "a/../../b"):
        with pytest.raises(storage.StorageError, match="escape"):
            root.join(bad)


def test_bad_uris_are_named():
    with pytest.raises(storage.StorageError, match="gs://b/x: unsupported scheme"):
        storage.resolve("gs://b/x")
    with pytest.raises(storage.StorageError, match="needs a bucket"):
        storage.resolve("s3:///x")
